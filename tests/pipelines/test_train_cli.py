"""`rdtf train` / `rdtf evaluate` end to end (real torchrun, real evaluation, the project's MLflow store)."""

from __future__ import annotations

import json
import subprocess
import sys

import mlflow
import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.slow


def _rdtf(*argv: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipelines.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=900, env=env)


def test_train_then_evaluate_with_typed_options(tiny_shards, tmp_path):
    lake = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    res = _rdtf("train", "--lake", str(lake), "--run-name", "cli", "--preset", "micro_pixel", "--steps", "2",
                "--batch-size", "2", "--ckpt-every", "2", "--lr", "1e-3", "--curriculum", '{"mode": "linear"}',
                "--no-dual-mask")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "[train] step 2/2 (100%)" in res.stderr  # live progress on the console
    cfg = json.loads((lake / "training" / "cli" / "train.json").read_text())
    assert cfg["steps"] == 2 and cfg["dual_mask"] is False and cfg["curriculum"] == {"mode": "linear"}
    assert cfg["index_paths"] == [str(tiny_shards)] and cfg["mlflow_uri"].startswith("sqlite:///")
    summary = json.loads((lake / "training" / "cli" / "summary.json").read_text())
    assert summary["step"] == 2

    res = _rdtf("evaluate", "--lake", str(lake), "--run-name", "cli", "--n-videos", "2", "--steps", "1",
                "--tasks", "i2v", "--device", "cpu", "--vqa-clips", "1", "--vqa-clip-len", "8")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "eval/i2v/fvd" in res.stdout and "logged to MLflow run" in res.stdout
    run = mlflow.MlflowClient(tracking_uri=cfg["mlflow_uri"]).get_run(summary["mlflow_run_id"])
    assert "eval/i2v/clip_matched" in run.data.metrics


def test_train_refuses_bad_options_before_torchrun(tmp_path):
    res = _rdtf("train", "--lake", str(tmp_path), "--index-paths", str(tmp_path / "i.json"), "--precision", "fp8")
    assert res.returncode == 2 and "precision must be one of" in res.stderr
    res = _rdtf("train", "--lake", str(tmp_path))
    assert res.returncode == 2 and "no published shards" in res.stderr
    res = _rdtf("evaluate", "--lake", str(tmp_path), "--run-name", "none", "--vqa-clip-len", "12")
    assert res.returncode == 2 and "clip_len must be a positive multiple of 8" in res.stderr
