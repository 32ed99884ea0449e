"""The README's main job with the lake and the drops on the loopback S3 server: ``python -m pipelines.demo --s3``.

A smaller drop and a short training than the README's run (same DAG, every asset and check): ingest, CLIP
embeddings, clusters, shards, torchrun training with checkpoints on S3, gallery, evaluation and comparison.
Everything the run writes must be on the object store -- nothing under the local default lake.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_demo_runs_end_to_end_on_s3(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RDTF_", "DAGSTER_", "MLFLOW_"))}
    env |= {"RDTF_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT), "RDTF_SCRATCH": str(tmp_path / "scratch")}
    (tmp_path / "scratch").mkdir()
    p = subprocess.run([sys.executable, "-m", "pipelines.demo", "--s3", "--n", "40", "--train-steps", "4",
                        "--eval-videos", "2", "--sample-steps", "2", "--gallery-stickers", "1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = p.stdout
    assert p.returncode == 0, (out + p.stderr)[-6000:]
    assert "[s3] loopback S3 API server http://127.0.0.1:" in out
    for line in ("ingested stickers", "CLIP embeddings", "frame clusters", "WebDataset shards", "sample gallery"):
        (hit,) = [ln for ln in out.splitlines() if ln.strip().startswith(line)]
        assert "-> s3://rdtf/lake/" in hit, hit
    assert re.search(r"checkpoint s3://rdtf/lake/training/demo-s0/checkpoints/step-000004", out), out[-3000:]
    assert re.search(r"comparison\s+: 1 run\(s\) -> s3://rdtf/lake/evaluation/comparison/", out), out[-3000:]
    checks = re.findall(r"check (\S+): (passed|FAILED)", out)
    assert checks and all(ok == "passed" for _, ok in checks), checks
    assert not (tmp_path / "home" / "lake").exists()  # nothing fell back to the local default lake
