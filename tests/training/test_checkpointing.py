"""Checkpoint robustness (training.checkpointing): temp folders of killed saves are removed at the next start, and
``--resume latest`` falls back to the newest *valid* checkpoint — on every rank the same — saying what it skipped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.checkpoint_damage import truncate, wrong_shape
from tests.helpers import ROOT, write_train_config
from training import checkpointing as ck

ENV = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _config(tmp: Path, index: Path, out: Path, **kw) -> Path:
    return write_train_config(tmp, index, out.name, out_dir=out, **({"steps": 4, "ckpt_every": 2, "keep_ckpts": 3,
                                                                    "warmup_steps": 1} | kw))


def _main(args: list[str]) -> int:
    """training.trainer.main in this process (one torch import for all tests); restores the SIGTERM handler."""
    from training.trainer import main

    old, threads = signal.getsignal(signal.SIGTERM), torch.get_num_threads()
    torch.set_num_threads(1)  # like OMP_NUM_THREADS=1 of the subprocess tests: tiny models, shared CI cores
    try:
        return main(args)
    finally:
        signal.signal(signal.SIGTERM, old)
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_shards) -> Path:
    """A run folder with complete checkpoints step-000002 and step-000004 (latest)."""
    tmp = tmp_path_factory.mktemp("ckpts")
    out = tmp / "run"
    assert _main(["--config", str(_config(tmp, tiny_shards, out))]) == 0
    assert (out / "checkpoints" / "latest").read_text() == "step-000004"
    return out


# ------------------------------------------------------------------------------- temp folders of killed saves

_KILL_IN_SECOND_SAVE = """
import os, signal, sys, torch
real, calls = torch.save, []
def save(obj, f, *a, **k):
    calls.append(f)
    real(obj, f, *a, **k)
    if len(calls) == 2:  # the 2nd checkpoint: optimizer.pt written, trainer.json and the rename not yet
        os.kill(os.getpid(), signal.SIGKILL)
torch.save = save
from training.trainer import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_9_inside_save_leaves_temp_folder_that_the_next_start_removes(tmp_path, tiny_shards):
    out = tmp_path / "killed"
    cfg = _config(tmp_path, tiny_shards, out, steps=6)
    p = subprocess.run([sys.executable, "-c", _KILL_IN_SECOND_SAVE, "--config", str(cfg)], env=ENV, cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    root = out / "checkpoints"
    leaked = sorted(p.name for p in root.glob(".step-*.tmp-*"))
    assert len(leaked) == 1 and leaked[0].startswith(".step-000004.tmp-"), sorted(os.listdir(root))
    # more leftovers of this code's temp-name patterns, and look-alikes that must survive
    (root / ".latest.tmp").write_text("step-000004")
    (root / ".latest.tmp-abc123").write_text("step-000004")
    (root / ".step-000002.trash-0a1b2c").mkdir()
    (out / ".summary.json.tmp-00ff00").write_text("{}")
    keep = [root / ".step-000004.tmp-NOTHEX", root / "my.tmp-abcdef", out / "notes.tmp"]
    keep[0].mkdir()
    keep[1].mkdir()
    keep[2].write_text("mine")
    assert _main(["--config", str(cfg), "--resume", "latest"]) == 0
    left = sorted(p.name for p in [*root.iterdir(), *out.iterdir()] if p.name.startswith(".") and "tmp" in p.name
                  or "trash" in p.name)
    assert left == [".step-000004.tmp-NOTHEX"], left
    assert all(p.exists() for p in keep)
    assert json.loads((out / "summary.json").read_text())["step"] == 6
    assert (root / "latest").read_text() == "step-000006"


def test_clean_stale_temps_only_touches_this_runs_exact_patterns(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    for base in (run, other):
        (base / "checkpoints" / ".step-000010.tmp-abcdef" / "model").mkdir(parents=True)
    (run / "checkpoints" / "step-000008").mkdir()
    removed = ck.clean_stale_temps(run)
    assert [p.name for p in removed] == [".step-000010.tmp-abcdef"]
    assert (other / "checkpoints" / ".step-000010.tmp-abcdef").exists() and (run / "checkpoints" / "step-000008").exists()
    assert ck.clean_stale_temps(tmp_path / "missing") == []


def test_publish_replaces_an_existing_step_without_leaving_trash(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step-000002").mkdir(parents=True)
    (root / "step-000002" / "old").write_text("old")
    tmp = ck.temp_dir_for(root, "step-000002")
    tmp.mkdir()
    (tmp / "new").write_text("new")
    ck.publish(tmp, root / "step-000002")
    ck.write_latest(root, "step-000002")
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000002"]
    assert (root / "step-000002" / "new").exists() and not (root / "step-000002" / "old").exists()


# ------------------------------------------------------------------------------- resume falls back


_BAD_OPTIMIZER = {"state": {"no.such.param": {"step": torch.tensor(1.0)}}, "param_groups": [{"lr": 1.0, "params": ["no.such.param"]}]}

CORRUPTIONS = {  # newest checkpoint damage -> words of the skip reason
    "truncated_ema": (lambda c: truncate(c / "ema.safetensors"), "ema.safetensors is truncated"),
    "truncated_model_weights": (lambda c: truncate(c / "model" / "diffusion_pytorch_model.safetensors"),
                                "diffusion_pytorch_model.safetensors is truncated"),
    "missing_optimizer": (lambda c: (c / "optimizer.pt").unlink(), "missing optimizer.pt"),
    "truncated_optimizer": (lambda c: truncate(c / "optimizer.pt"), "optimizer.pt does not load"),
    "bad_trainer_json": (lambda c: (c / "trainer.json").write_text('{"step": 4,'), "trainer.json is not valid JSON"),
    "trainer_json_without_keys": (lambda c: (c / "trainer.json").write_text('{"step": 4}'), "trainer.json lacks"),
    "wrong_shapes": (lambda c: wrong_shape(c / "model" / "diffusion_pytorch_model.safetensors"),
                     "does not fit the model"),
    "optimizer_for_other_params": (lambda c: torch.save(_BAD_OPTIMIZER, c / "optimizer.pt"), "apply failed"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_resume_latest_falls_back_from_a_corrupt_newest_checkpoint(case, trained, tmp_path, tiny_shards, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    damage, words = CORRUPTIONS[case]
    damage(out / "checkpoints" / "step-000004")
    capsys.readouterr()
    assert _main(["--config", str(_config(tmp_path, tiny_shards, out, steps=6)), "--resume", "latest"]) == 0
    printed = capsys.readouterr().out
    skips = [line for line in printed.splitlines() if line.startswith("resume: skipping checkpoint")]
    assert len(skips) == 1 and "step-000004" in skips[0] and words in skips[0], printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 6
    meta = json.loads((out / "checkpoints" / "step-000004" / "trainer.json").read_text())
    assert meta["step"] == 4 and meta["history"][0]["step"] == 1  # re-done from step-000002, now complete again
    ck.verify_training_checkpoint(out / "checkpoints" / "step-000004")


def test_latest_marker_naming_a_missing_folder_falls_back(trained, tmp_path, tiny_shards, capsys):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    (out / "checkpoints" / "latest").write_text("step-000099")
    assert [p.name for p in ck.resume_candidates(out)] == ["step-000099", "step-000004", "step-000002"]
    assert _main(["--config", str(_config(tmp_path, tiny_shards, out)), "--resume", "latest"]) == 0
    printed = capsys.readouterr().out
    assert "skipping checkpoint" in printed and "step-000099: does not exist" in printed
    assert json.loads((out / "summary.json").read_text())["step"] == 4  # resumed at step 4: nothing left to do


def test_no_valid_checkpoint_starts_from_scratch_and_explicit_corrupt_one_is_refused(trained, tmp_path, tiny_shards):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    for c in (out / "checkpoints").glob("step-*"):
        truncate(c / "ema.safetensors")
    with pytest.raises(ValueError, match="step-000002: ema.safetensors is truncated"):  # no fallback for a named one
        _main(["--config", str(_config(tmp_path, tiny_shards, out)), "--resume", str(out / "checkpoints" / "step-000002")])
    assert _main(["--config", str(_config(tmp_path, tiny_shards, out, steps=2)), "--resume", "latest"]) == 0
    assert json.loads((out / "summary.json").read_text())["step"] == 2


def test_incompatible_checkpoint_is_refused_not_skipped(trained, tmp_path, tiny_shards):
    out = tmp_path / "run"
    shutil.copytree(trained, out)
    with pytest.raises(ValueError, match="incompatible"):
        _main(["--config", str(_config(tmp_path, tiny_shards, out, temporal_layer="none")), "--resume", "latest"])


@pytest.mark.slow
def test_two_ranks_resume_the_same_fallback_checkpoint(trained, tmp_path, tiny_shards):
    """Only rank 0 validates; it broadcasts the choice, so rank 1 does not load the corrupt newest one."""
    from training.launch import LOCAL_TORCHRUN_ENV, local_torchrun_command

    out = tmp_path / "run"
    shutil.copytree(trained, out)
    truncate(out / "checkpoints" / "step-000004" / "ema.safetensors")
    cfg = _config(tmp_path, tiny_shards, out, steps=6)
    p = subprocess.run(local_torchrun_command(2, ["-m", "training", "--config", str(cfg), "--resume", "latest"]),
                       env=ENV | LOCAL_TORCHRUN_ENV, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert p.returncode == 0, p.stderr[-4000:]
    skips = [line for line in p.stdout.splitlines() if "resume: skipping checkpoint" in line]
    assert len(skips) == 1 and "ema.safetensors is truncated" in skips[0], p.stdout[-2000:]  # printed by rank 0 only
    assert json.loads((out / "summary.json").read_text())["step"] == 6
