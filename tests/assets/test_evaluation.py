"""Evaluation assets materialize through Dagster; metrics land in the training's MLflow run and the comparison."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest
from dagster import DagsterInstance, materialize

from assets.evaluation import EVALUATION_ASSETS, SAMPLES_ASSET
from assets.resources import ClipResource, EvalModelsResource, LakeResource, MlflowResource
from evaluation.samples import DEFAULT_TASKS, EvalTask, ground_truth_clip, load_eval_samples

pytestmark = pytest.mark.slow  # end to end (subprocesses, servers): skipped by the fast loop


def _fake_training(lake_root, uri: str, name: str, seed: int) -> str:
    """A random tiny checkpoint in the trainer's layout, with an MLflow run as the trainer would leave it."""
    from tests.helpers import tiny_checkpoint

    run_dir = lake_root / "training" / name
    ckpt = tiny_checkpoint(run_dir, seed=seed)
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("eval-test")
    with mlflow.start_run(run_name=name) as run:
        mlflow.set_tags({"weights": "random", "preset": "tiny_pixel", "curriculum": "adaptive"})
    (run_dir / "summary.json").write_text(json.dumps({"step": 0, "checkpoint": str(ckpt), "weights": "random",
                                                      "mlflow_run_id": run.info.run_id}))
    return run.info.run_id


def _materialize(instance, lake_root, tmp_path, uri, name, tasks=None):
    tasks = {} if tasks is None else {"tasks": list(tasks)}
    return materialize(
        EVALUATION_ASSETS,
        instance=instance,
        resources={"storage": LakeResource(drops_root=str(tmp_path), lake_root=str(lake_root)),
                   "mlflow": MlflowResource(tracking_uri=uri, experiment="eval-test"),
                   "clip": ClipResource(device="cpu"), "evaluators": EvalModelsResource(device="cpu")},
        run_config={"ops": {SAMPLES_ASSET: {"config": {"run_name": name, "n_videos": 3, "steps": 2, "batch_size": 2,
                                                        **tasks}},
                            "vqa": {"config": {"num_clips": 1, "clip_len": 8}}, "fvd": {"config": {"batch_size": 3}}}},
    )


def test_evaluation_assets_log_to_mlflow_and_compare(tmp_path, tiny_shards):
    lake_root = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    instance = DagsterInstance.ephemeral()
    run_ids = {name: _fake_training(lake_root, uri, name, seed) for seed, name in enumerate(("ev-a", "ev-b"))}
    # ev-a: the default tasks; ev-b: I&T->V only (the comparison joins runs over the tasks they share) — saves time
    tasks = {"ev-a": {EvalTask(t) for t in DEFAULT_TASKS}, "ev-b": {EvalTask.I2V}}
    for name in run_ids:
        assert _materialize(instance, lake_root, tmp_path, uri, name,
                            None if name == "ev-a" else [t.value for t in tasks[name]]).success

    samples = load_eval_samples(lake_root / "evaluation" / "ev-a" / "samples")
    default = tasks["ev-a"]  # the image-only task is opt-in
    assert samples.real.shape == (3, 8, 32, 32, 3) and set(samples.fakes) == default
    for task in default:  # known frames are pasted back exactly
        pos = samples.known_positions(task)
        np.testing.assert_array_equal(samples.fakes[task][:, pos], samples.real[:, pos])

    client = mlflow.MlflowClient(tracking_uri=uri)
    for name, run_id in run_ids.items():
        run = client.get_run(run_id)
        m, tags = run.data.metrics, run.data.tags
        for task in tasks[name]:
            assert np.isfinite(m[f"eval/{task.value}/fvd"]) and m[f"eval/{task.value}/fvd"] >= 0
            assert 0 <= m[f"eval/{task.value}/vqa"] <= 1
            assert -1 <= m[f"eval/{task.value}/clip_matched"] <= 1
        for task in {"interpolation", "prediction"} & {t.value for t in tasks[name]}:
            assert m[f"eval/{task}/psnr"] > 0 and -1 <= m[f"eval/{task}/ssim"] <= 1
        assert "eval/prediction/fvd" not in m or name == "ev-a"
        assert "eval/t2v/psnr" not in m  # no ground truth for generation
        assert tags["fvd_weights"] == "random" and tags["vqa_weights"] == "random"
        assert any(k.endswith("weights") and v == "random" for k, v in tags.items() if k.startswith("clip"))
        assert tags["fvd_upsample"] == "repeat"
        arts = {a.path for a in client.list_artifacts(run_id, "evaluation")}
        assert {"evaluation/fvd.json", "evaluation/vqa.json"} <= arts

    md = {k: v.value for k, v in instance.get_latest_materialization_event(
        __import__("dagster").AssetKey("model_comparison")).asset_materialization.metadata.items()}
    assert md["n_runs"] == 2 and "ev-a†" in md["table"] and "ev-b†" in md["table"]
    report = (lake_root / "evaluation" / "comparison" / "comparison.md").read_text()
    assert "FVD ↓" in report and "Task interpolation" in report and "PSNR ↑" in report
    comp = client.search_runs([client.get_experiment_by_name("eval-test").experiment_id],
                              filter_string="tags.`rdtf.kind` = 'comparison'")
    assert len(comp) == 1
    assert {a.path for a in client.list_artifacts(comp[0].info.run_id, "comparison")} >= {
        "comparison/comparison.csv", "comparison/comparison.md", "comparison/comparison.png"}

    fvd_md = instance.get_latest_materialization_event(__import__("dagster").AssetKey("fvd")).asset_materialization
    warnings = fvd_md.metadata["warnings"].value
    assert any("fewer samples than features" in w for w in warnings)  # 3 videos << 400 features: warned, no crash


def test_evaluation_samples_are_idempotent(tmp_path, tiny_shards):
    lake_root = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    _fake_training(lake_root, uri, "ev-idem", 0)
    from assets.evaluation import evaluation_samples

    def run():
        return materialize([evaluation_samples], instance=DagsterInstance.ephemeral(),
                           resources={"storage": LakeResource(drops_root=str(tmp_path), lake_root=str(lake_root)),
                                      "evaluators": EvalModelsResource(device="cpu"),
                                      "mlflow": MlflowResource(tracking_uri=uri, experiment="eval-test")},
                           run_config={"ops": {SAMPLES_ASSET: {"config": {"run_name": "ev-idem", "n_videos": 2,
                                                                          "steps": 1, "tasks": ["i2v"]}}}})

    assert run().success
    f = lake_root / "evaluation" / "ev-idem" / "samples" / "i2v.npy"
    first = f.read_bytes(), f.stat().st_mtime_ns
    assert run().success
    assert (f.read_bytes(), f.stat().st_mtime_ns) == first  # same checkpoint + options: not regenerated


def test_ground_truth_clip_stretches_short_stickers():
    frames = np.arange(5)[:, None, None, None].repeat(2, 1).repeat(2, 2).repeat(3, 3).astype(np.uint8)
    clip, stretched = ground_truth_clip(frames, {"3": [0, 2, 4], "8": [0, 1, 2, 3, 4]}, 8)
    assert stretched and clip[:, 0, 0, 0].tolist() == [0, 0, 1, 1, 2, 3, 3, 4]
    clip, stretched = ground_truth_clip(np.zeros((10, 2, 2, 3), np.uint8), {"8": list(range(8))}, 8)
    assert not stretched and len(clip) == 8
    with pytest.raises(ValueError, match="no representatives"):
        ground_truth_clip(frames, {"9": [0]}, 8)


def test_unknown_task_is_rejected():
    from evaluation.samples import EvalSamplesConfig

    with pytest.raises(ValueError, match="allowed"):
        EvalSamplesConfig(tasks=("t2v", "video_editing"))
