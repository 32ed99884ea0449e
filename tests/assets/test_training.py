"""trained_model materializes through Dagster: torchrun via Pipes, metadata from rank 0, an MLflow run."""

from __future__ import annotations

import mlflow
import pytest
from dagster import DagsterInstance, PipesSubprocessClient, materialize

from assets.resources import LakeResource, MlflowResource
from assets.training import TRAIN_ASSET, trained_model
from data.lake import Lake

pytestmark = pytest.mark.slow  # end to end (subprocesses, servers): skipped by the fast loop


def test_trained_model_asset(tmp_path, tiny_shards, monkeypatch):
    monkeypatch.setenv("RDTF_PROGRESS_INTERVAL_S", "0")  # a line per step
    monkeypatch.delenv("RDTF_MLFLOW_UI", raising=False)  # the default UI address
    lake_root = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [trained_model],
        instance=instance,
        resources={"storage": LakeResource(drops_root=str(tmp_path), lake_root=str(lake_root)),
                   "mlflow": MlflowResource(tracking_uri=uri, experiment="dagster-train"),
                   "pipes_subprocess_client": PipesSubprocessClient()},
        run_config={"ops": {TRAIN_ASSET: {"config": {"steps": 3, "ckpt_every": 3, "batch_size": 2, "preset": "micro_pixel",
                                                     "run_name": "t1", "curriculum_mode": "linear"}}}},
    )
    assert result.success
    (mat,) = result.asset_materializations_for_node(TRAIN_ASSET)
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["step"] == 3 and md["weights"] == "random" and md["checkpoint"].endswith("step-000003")
    # the chart inline on the asset page: a table cell pointing at the MLflow artifact (short enough to render)
    assert "![loss and task probabilities](http://127.0.0.1:5000/get-artifact?path=training_curves.png&run_uuid=" \
        f"{md['mlflow_run_id']})" in md["training_curves"] and len(md["training_curves"]) < 1000
    # progress reached the run's event log while training ran (Pipes opened at the start), before the materialization
    logs = instance.all_logs(result.run_id)
    lines = [(e.timestamp, e.user_message) for e in logs if e.user_message and
             e.user_message.startswith(("preparing", "training steps", "step ", "checkpoint step-"))]
    texts = [t for _, t in lines]
    assert texts[0].startswith("preparing micro_pixel training") and any(t.startswith("step 3/3 (100%)") for t in texts)
    assert [t.split(" |")[0] for t in texts if t.startswith("step ")] == ["step 1/3 (33%)", "step 2/3 (67%)",
                                                                        "step 3/3 (100%)"]
    mat_ts = next(e.timestamp for e in logs if e.dagster_event and e.dagster_event.event_type_value == "ASSET_MATERIALIZATION")
    assert lines[0][0] < mat_ts - 1.0, (lines[0][0], mat_ts)  # streamed live: the first line long before the end
    run = mlflow.MlflowClient(tracking_uri=uri).get_run(md["mlflow_run_id"])
    assert run.data.params["train.steps"] == "3" and run.data.tags["curriculum"] == "linear"


def test_sample_gallery_asset(tmp_path, tiny_shards):
    from assets.gallery import GALLERY_ASSET, sample_gallery
    from tests.helpers import tiny_checkpoint

    lake_root = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    tiny_checkpoint(lake_root / "training" / "gal")
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
    from data.media import decode_sticker

    assert all(len(decode_sticker(g.read_bytes(), size=32).durations_ms) >= 2 for g in gifs)


def _materialize_bad_training(tmp_path, lake_root, train_config: dict):
    """trained_model on the persistent test instance (the repo's dagster.yaml: run retries on step failure)."""
    import time

    instance = DagsterInstance.get()
    assert instance.run_retries_enabled and instance.run_retries_retry_on_asset_or_op_failure
    t0 = time.perf_counter()
    result = materialize(
        [trained_model], instance=instance, raise_on_error=False,
        resources={"storage": LakeResource(drops_root=str(tmp_path), lake_root=str(lake_root)),
                   "mlflow": MlflowResource(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}", experiment="bad-config"),
                   "pipes_subprocess_client": PipesSubprocessClient()},
        run_config={"ops": {TRAIN_ASSET: {"config": train_config}}},
    )
    elapsed = time.perf_counter() - t0
    kinds = [e.event_type_value for e in result.all_events]
    return result, instance.get_run_by_id(result.run_id), kinds, elapsed


@pytest.mark.parametrize("train_config,words", [
    ({"steps": -1, "run_name": "neg"}, "TrainConfig.steps must be an int >= 1, got -1"),
    ({"preset": "huge", "run_name": "huge"}, "TrainConfig.preset must be one of ['paper', 'paper_3dconv', 'tiny'"),
    ({"ckpt_every": 0, "run_name": "ck0"}, "TrainConfig.ckpt_every must be an int >= 1, got 0"),
    ({"run_name": "../../escape"}, "invalid run name '../../escape': must match"),
    ({"compile": "fast", "run_name": "cmp"}, "TrainConfig.compile must be one of ['none', 'regional', 'full']"),
    ({"fsdp_param_dtype": "fp16", "run_name": "fp16"}, "TrainConfig.fsdp_param_dtype must be one of ['fp32', 'bf16']"),
])
def test_bad_training_config_fails_fast_once_without_step_or_run_retries(tmp_path, tiny_shards, train_config, words,
                                                                         monkeypatch):
    """A deterministic config error: one attempt, the message in the failure, no retry (step or run), no torchrun."""

    lake_root = next(p for p in tiny_shards.parents if (p / "shards").is_dir())
    monkeypatch.setattr(Lake, "shard_indexes", lambda self: [str(tiny_shards)])  # the shard layout is not under test
    result, run, kinds, elapsed = _materialize_bad_training(tmp_path, lake_root, train_config)
    assert not result.success
    assert kinds.count("STEP_START") == 1 and kinds.count("STEP_FAILURE") == 1
    assert "STEP_UP_FOR_RETRY" not in kinds and "STEP_RESTARTED" not in kinds  # the RetryPolicy did not fire
    (failure,) = result.get_step_failure_events()
    err = failure.step_failure_data.error
    assert words in (failure.step_failure_data.user_failure_data.description or "") or words in err.message
    assert "External execution process failed" not in err.message  # refused before torchrun was launched
    assert run.tags.get("dagster/will_retry") == "false"  # the daemon's run-retry decision (dagster.yaml: on)
    assert run.tags.get("dagster/retry_on_asset_or_op_failure") == "false"
    assert not (lake_root / "training" / train_config["run_name"] / "train.json").exists()
    assert elapsed < 30, elapsed
