"""trained_model materializes through Dagster: torchrun via Pipes, metadata from rank 0, an MLflow run."""

from __future__ import annotations

import mlflow
from dagster import DagsterInstance, PipesSubprocessClient, materialize

from assets.resources import LakeResource, MlflowResource
from assets.training import TRAIN_ASSET, trained_model


def test_trained_model_asset(tmp_path, tiny_shards):
    lake_root = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = materialize(
        [trained_model],
        instance=DagsterInstance.ephemeral(),
        resources={"storage": LakeResource(drops_root=str(tmp_path), lake_root=str(lake_root)),
                   "mlflow": MlflowResource(tracking_uri=uri, experiment="dagster-train"),
                   "pipes_subprocess_client": PipesSubprocessClient()},
        run_config={"ops": {TRAIN_ASSET: {"config": {"steps": 3, "ckpt_every": 3, "batch_size": 2,
                                                     "run_name": "t1", "curriculum_mode": "linear"}}}},
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node(TRAIN_ASSET)
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["step"] == 3 and md["weights"] == "random" and md["checkpoint"].endswith("step-000003")
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(md["mlflow_run_id"])
    assert run.data.params["train.steps"] == "3" and run.data.tags["curriculum"] == "linear"


def test_sample_gallery_asset(tmp_path, tiny_shards):
    from assets.gallery import GALLERY_ASSET, sample_gallery
    from model.sampling import tiny_checkpoint_for_tests

    lake_root = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    tiny_checkpoint_for_tests(lake_root / "training" / "gal")
    result = materialize(
        [sample_gallery],
        instance=DagsterInstance.ephemeral(),
        resources={"storage": LakeResource(drops_root=str(tmp_path), lake_root=str(lake_root)),
                   "mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")},
        run_config={"ops": {GALLERY_ASSET: {"config": {"run_name": "gal", "n_stickers": 1, "steps": 2}}}},
    )
    assert result.success
    md = {k: v.value for k, v in result.asset_materializations_for_node(GALLERY_ASSET)[0].metadata.items()}
    assert md["n_gifs"] == 4 and "data:image/png;base64," in md["preview"]
    gifs = sorted((lake_root / "gallery" / "gal").glob("*.gif"))
    assert len(gifs) == 4
    from model.media import decode_sticker

    assert all(len(decode_sticker(g.read_bytes(), size=32).durations_ms) >= 2 for g in gifs)
