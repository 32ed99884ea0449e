"""Credentials never reach what we log: ``redact_uri`` itself, and a real training whose MLflow URI carries a password
(params, tags, trainer.json — logged as an artifact — and log lines)."""

from __future__ import annotations

import json
import logging
import signal
import socket
from pathlib import Path

import pytest

from data.redact import redact_config, redact_text, redact_uri


@pytest.mark.parametrize("uri,shown", [
    ("http://user:s3cret@mlflow:5000", "http://***@mlflow:5000"),
    ("https://token@mlflow.example.com/api", "https://***@mlflow.example.com/api"),
    ("postgresql+psycopg2://mlflow:s3cret@db:5432/mlflow", "postgresql+psycopg2://***@db:5432/mlflow"),
    ("postgresql://db/mlflow?user=m&password=s3cret&sslmode=require",
     "postgresql://db/mlflow?user=m&password=***&sslmode=require"),
    ("https://h/x?access_token=s3cret&page=2", "https://h/x?access_token=***&page=2"),
    ("https://acct.blob.core.windows.net/c?sv=2024&sig=s3cret", "https://acct.blob.core.windows.net/c?sv=2024&sig=***"),
    ("host=db password=s3cret user=m", "host=db password=*** user=m"),
    ("sqlite:////srv/rdtf/mlflow.db", "sqlite:////srv/rdtf/mlflow.db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("s3://bucket/mlflow", "s3://bucket/mlflow"),
    ("/local/path/mlruns", "/local/path/mlruns"),
    ("databricks", "databricks"),
])
def test_redact_uri_strips_userinfo_and_secret_parameters(uri, shown):
    assert redact_uri(uri) == shown
    assert "s3cret" not in redact_uri(uri)
    assert redact_uri(redact_uri(uri)) == shown  # idempotent


def test_redact_helpers_edge_cases():
    assert redact_uri(None) is None and redact_uri("") == ""
    assert redact_uri("http://u:s3cret@[::1") .count("s3cret") == 0  # malformed: fallback patterns
    assert "s3cret" not in redact_text("API request to http://u:s3cret@h:5000/api/2.0 failed (token=s3cret)")
    cfg = {"mlflow_uri": "http://u:s3cret@h", "mlflow_artifact_location": "s3://k:s3cret@b/a",
           "autoencoder": "/models/vae?token=keep", "nested": {"tracking_uri": "http://u:s3cret@h"}}
    out = redact_config(cfg)
    assert "s3cret" not in json.dumps(out) and out["autoencoder"] == "/models/vae?token=keep"  # paths stay exact
    assert cfg["mlflow_uri"] == "http://u:s3cret@h"  # a copy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_training_with_a_password_in_the_mlflow_uri_logs_it_nowhere(tmp_path, tiny_shards, caplog):
    """Offline tracking server (closed port): everything the trainer would send sits in its buffer, readable."""
    import torch

    from training.trainer import TrainConfig, Trainer

    out = tmp_path / "run"
    uri = f"http://rdtf:s3cret@127.0.0.1:{_free_port()}/?token=s3cret"
    cfg = TrainConfig(index_paths=[str(tiny_shards)], out_dir=str(out), preset="micro_pixel", steps=1, batch_size=2, lr=1e-3, ckpt_every=1,
                      warmup_steps=1, log_every=1, mlflow_uri=uri, mlflow_artifact_location="s3://k:s3cret@bucket/a")
    caplog.set_level(logging.INFO)
    old, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(cfg).run()
    finally:
        signal.signal(signal.SIGTERM, old)
        torch.set_num_threads(threads)
    buffer = (out / "mlflow_buffer.jsonl").read_text()
    params = next(json.loads(line)["params"] for line in buffer.splitlines() if json.loads(line)["kind"] == "params")
    shown = params["train.mlflow_uri"]
    assert shown.startswith("http://***@127.0.0.1:") and shown.endswith("/?token=***")
    assert params["train.mlflow_artifact_location"] == "s3://***@bucket/a"
    assert "s3cret" not in buffer
    ckpt = out / "checkpoints" / (out / "checkpoints" / "latest").read_text()
    assert "s3cret" not in (ckpt / "trainer.json").read_text()  # logged as the checkpoint/trainer.json artifact
    assert all("s3cret" not in p.read_text(errors="ignore") for p in Path(out / "mlflow_buffer_files").rglob("*")
               if p.is_file())
    assert caplog.records and all("s3cret" not in r.getMessage() for r in caplog.records)
