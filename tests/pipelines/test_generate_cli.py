"""`rdtf generate` on a corrupt checkpoint: every case exits 2 with ONE stderr line naming the file and the problem
(`rdtf generate: error: <message>`, as documented in pipelines/generate_cli.py) — never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.checkpoint_damage import truncate, wrong_shape
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def good_run(tmp_path_factory) -> Path:
    """A training-run folder with one random-init tiny checkpoint (the trainer's layout)."""
    from tests.helpers import tiny_checkpoint

    run = tmp_path_factory.mktemp("gen") / "run"
    tiny_checkpoint(run)
    return run


def _step(run: Path) -> Path:
    return run / "checkpoints" / "step-000000"


def _widened(config: Path) -> dict:
    cfg = json.loads(config.read_text())
    return cfg | {"block_out_channels": [c * 2 for c in cfg["block_out_channels"]]}


CASES = {  # name -> (change to a good checkpoint, words the message must contain)
    "truncated_ema": (lambda r: truncate(_step(r) / "ema.safetensors"), "ema.safetensors is truncated"),
    "garbage_model_weights": (lambda r: (_step(r) / "model" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 64),
                              "diffusion_pytorch_model.safetensors is truncated or not a safetensors file"),
    "truncated_text_proj": (lambda r: truncate(_step(r) / "text_proj.safetensors"), "text_proj.safetensors is truncated"),
    "missing_ema": (lambda r: (_step(r) / "ema.safetensors").unlink(), "missing ema.safetensors"),
    "missing_text_proj": (lambda r: (_step(r) / "text_proj.safetensors").unlink(), "missing text_proj.safetensors"),
    "missing_model_weights": (lambda r: (_step(r) / "model" / "diffusion_pytorch_model.safetensors").unlink(),
                              "missing model/diffusion_pytorch_model.safetensors"),
    "missing_model_config": (lambda r: (_step(r) / "model" / "config.json").unlink(), "not an RDTF checkpoint"),
    "bad_model_config": (lambda r: (_step(r) / "model" / "config.json").write_text("{not json"),
                         "model/config.json is not valid JSON"),
    "weights_do_not_fit_model_config": (  # a wider model's config next to these weights: size mismatch
        lambda r: (_step(r) / "model" / "config.json").write_text(json.dumps(_widened(_step(r) / "model" / "config.json"))),
        "size mismatch"),
    "model_config_bad_value": (
        lambda r: (_step(r) / "model" / "config.json").write_text(json.dumps(
            json.loads((_step(r) / "model" / "config.json").read_text()) | {"temporal_layer": "lstm"})),
        "model/ cannot be loaded"),
    "bad_trainer_json": (lambda r: (_step(r) / "trainer.json").write_text("{"), "trainer.json is not valid JSON"),
    "trainer_json_not_an_object": (lambda r: (_step(r) / "trainer.json").write_text("[1, 2]"),
                                   "trainer.json must hold a JSON object"),
    "bad_train_config": (lambda r: (_step(r) / "trainer.json").write_text(json.dumps({"train_config": {"autoencoder": 7}})),
                         "autoencoder"),
    "ema_wrong_shapes": (lambda r: wrong_shape(_step(r) / "ema.safetensors"), "ema.safetensors does not fit the model"),
    "text_proj_wrong_shapes": (lambda r: wrong_shape(_step(r) / "text_proj.safetensors"),
                               "text_proj.safetensors does not fit the model"),
    "latest_names_a_missing_folder": (lambda r: (r / "checkpoints" / "latest").write_text("step-000009"),
                                      "step-000009"),
}


def _one_error_line(err: str, *words: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rdtf generate: error: ") and "Traceback" not in err, err
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_generate_on_a_corrupt_checkpoint_exits_2_with_one_line(case, good_run, tmp_path, capsys):
    from pipelines.cli import main

    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    change, words = CASES[case]
    change(run)
    capsys.readouterr()
    rc = main(["generate", "--checkpoint", str(run), "--prompt", "a cat", "--steps", "1", "--quiet",
               "--out", str(tmp_path / "x.gif")])
    err = capsys.readouterr().err
    assert rc == 2, err
    _one_error_line(err, words)
    assert not (tmp_path / "x.gif").exists()


def test_generate_on_a_directory_that_is_not_a_checkpoint(tmp_path, capsys):
    from pipelines.cli import main

    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hi")
    assert main(["generate", "--checkpoint", str(tmp_path / "stuff"), "--out", str(tmp_path / "x.gif")]) == 2
    _one_error_line(capsys.readouterr().err, "not an RDTF checkpoint", "stuff")


def test_generate_on_a_checkpoint_path_that_is_a_file(good_run, tmp_path, capsys):
    from pipelines.cli import main

    rc = main(["generate", "--checkpoint", str(_step(good_run) / "ema.safetensors"), "--out", str(tmp_path / "x.gif")])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, "is a file, not a checkpoint folder", "ema.safetensors")


def test_truncated_ema_through_the_real_command_line(good_run, tmp_path):
    """The reported defect, end to end: `python -m pipelines.cli generate` printed a SafetensorError traceback (exit 1)."""
    run = tmp_path / "run"
    shutil.copytree(good_run, run)
    truncate(_step(run) / "ema.safetensors")
    p = subprocess.run([sys.executable, "-m", "pipelines.cli", "generate", "--checkpoint", str(run), "--prompt", "x",
                        "--out", str(tmp_path / "x.gif"), "--quiet"], cwd=ROOT, capture_output=True, text=True,
                       env=os.environ | {"PYTHONPATH": str(ROOT)}, timeout=300)
    assert p.returncode == 2, p.stderr[-2000:]
    line = _one_error_line(p.stderr, "ema.safetensors is truncated")
    assert str(_step(run)) in line


@pytest.mark.parametrize("url,words", [
    ("s3://rdtf-test/no-such-run", ("no checkpoint at", "no-such-run")),
    ("ftp://host/run", ("unsupported protocol 'ftp'", "allowed")),
])
def test_generate_on_a_missing_or_unsupported_checkpoint_url_exits_2(s3_server, url, words, tmp_path, capsys):
    from pipelines.cli import main

    assert main(["generate", "--checkpoint", url, "--out", str(tmp_path / "x.gif")]) == 2
    _one_error_line(capsys.readouterr().err, *words)


def test_generate_from_an_s3_run_equals_the_local_run(s3_server, good_run, tmp_path, monkeypatch):
    """An object-store run folder is downloaded once (RDTF_SCRATCH) and gives the same sticker as the local one."""
    import uuid

    from pipelines.cli import main

    monkeypatch.setenv("RDTF_SCRATCH", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    url = s3_server.url(f"gen-{uuid.uuid4().hex[:6]}", "training", "run")
    from data.storage import lake_path

    remote = lake_path(url)
    remote.fs.put(str(good_run) + "/", remote.path + "/", recursive=True)
    args = ["--prompt", "a cat", "--steps", "1", "--seed", "3", "--quiet"]
    assert main(["generate", "--checkpoint", str(good_run), *args, "--out", str(tmp_path / "local.gif")]) == 0
    assert main(["generate", "--checkpoint", url, *args, "--out", str(tmp_path / "s3.gif")]) == 0
    assert (tmp_path / "s3.gif").read_bytes() == (tmp_path / "local.gif").read_bytes()
    assert list((tmp_path / "scratch" / "rdtf-checkpoints").iterdir())  # the cached copy


@pytest.mark.parametrize("uri,words", [
    ("models:/rdtf-dfgn", "must be models:/<name>@<alias>"),
    ("runs:/abc/model", "must be models:/<name>@<alias>"),
    ("models:/../x@champion", "must be models:/<name>@<alias>"),
    ("models:/rdtf-dfgn@champion", "not found in the registry"),
    ("models:/rdtf-dfgn/7", "not found in the registry"),
])
def test_generate_from_a_bad_or_missing_registered_model_exits_2(uri, words, tmp_path, capsys):
    import mlflow

    from pipelines.cli import main

    mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}").search_experiments()  # an empty store
    capsys.readouterr()
    rc = main(["generate", "--model", uri, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--out", str(tmp_path / "x.gif")])
    assert rc == 2
    _one_error_line(capsys.readouterr().err, words)


def test_generate_from_a_missing_tracking_store_exits_2_and_creates_nothing(tmp_path, capsys):
    from pipelines.cli import main

    rc = main(["generate", "--model", "models:/rdtf-dfgn@champion", "--tracking-uri",
               f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path / "x.gif")])
    assert rc == 2 and not (tmp_path / "none.db").exists()
    _one_error_line(capsys.readouterr().err, "no MLflow store at")


def test_generate_takes_exactly_one_model_source(good_run, tmp_path, capsys):
    from pipelines.cli import main

    for argv in ([], ["--checkpoint", str(good_run), "--model", "models:/rdtf-dfgn@champion"]):
        with pytest.raises(SystemExit) as err:
            main(["generate", *argv, "--out", str(tmp_path / "x.gif")])
        assert err.value.code == 2
    assert "--checkpoint" in capsys.readouterr().err
