"""The diffusers package: export -> from_pretrained gives the checkpoint's stickers; hostile packages are refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from model.checkpoints import CheckpointError
from model.pipeline import RDTFPipeline, export_checkpoint
from tests.helpers import tiny_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("pkg")
    tiny_checkpoint(root / "run", seed=1)
    return root / "run", export_checkpoint(root / "run", root / "package")


def test_package_equals_checkpoint_and_holds_only_relative_paths(exported):
    run, pkg = exported
    index = json.loads((pkg / "model_index.json").read_text())
    assert index["_class_name"] == "RDTFPipeline" and index["scheduler"] == ["diffusers", "DDIMScheduler"]
    assert index["vae"] == [None, None] and index["weights"] == "random"  # pixel space; random towers are tagged
    assert sorted(p.name for p in pkg.iterdir()) == ["model_index.json", "scheduler", "text_encoder", "tokenizer", "unet"]
    assert not list(pkg.rglob("*.bin")) and not list(pkg.rglob("*.pt")) and list(pkg.rglob("*.safetensors"))
    assert not any(str(run.parent) in p.read_text() for p in pkg.rglob("*.json"))  # portable: no absolute paths
    a = RDTFPipeline.from_pretrained(run)("a red ball", num_inference_steps=2, seed=5, progress=False)
    moved = pkg.parent / "moved"
    shutil.copytree(pkg, moved)
    b = RDTFPipeline.from_pretrained(moved)("a red ball", num_inference_steps=2, seed=5, progress=False)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.durations_ms == b.durations_ms


def test_reexport_replaces_the_package_atomically(exported):
    run, pkg = exported
    export_checkpoint(run, pkg)
    assert (pkg / "model_index.json").is_file()
    assert not [p for p in pkg.parent.iterdir() if p.name.startswith(".package.")]  # no temp folder left


@pytest.mark.parametrize("edit,match", [
    (lambda ix: ix.update(unet=["os", "system"]), "component 'unet'"),
    (lambda ix: ix.update(_class_name="StableDiffusionPipeline"), "_class_name"),
    (lambda ix: ix.update(safety_checker=["transformers", "CLIPModel"]), "unknown components"),
])
def test_hostile_model_index_is_refused_before_any_import(exported, tmp_path, edit, match):
    _, pkg = exported
    bad = tmp_path / "bad"
    shutil.copytree(pkg, bad)
    ix = json.loads((bad / "model_index.json").read_text())
    edit(ix)
    (bad / "model_index.json").write_text(json.dumps(ix))
    with pytest.raises(CheckpointError, match=match):
        RDTFPipeline.from_pretrained(bad)


def test_truncated_package_weights_give_a_checkpoint_error(exported, tmp_path):
    _, pkg = exported
    bad = tmp_path / "trunc"
    shutil.copytree(pkg, bad)
    w = bad / "unet" / "diffusion_pytorch_model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot be loaded as an RDTF model package"):
        RDTFPipeline.from_pretrained(bad)


def test_loading_is_quiet_no_third_party_advice_or_duplicate_warnings(exported, caplog):
    """No diffusers 'pip install accelerate' advice, no open_clip INFO chatter or its untrue 'initialized randomly'
    (the package's weights are loaded right after); our own weights=random warning stays."""
    import logging

    run, pkg = exported
    with caplog.at_level(logging.INFO):
        RDTFPipeline.from_pretrained(run)
        RDTFPipeline.from_pretrained(pkg)
    text = caplog.text
    assert "accelerate" not in text and "No pretrained weights loaded" not in text
    assert not [r for r in caplog.records if "open_clip" in r.pathname and r.levelno < logging.WARNING]
    assert "RANDOM weights (weights=random)" in text


def test_sampling_speed_levers_keep_the_sticker(exported):
    """bf16 U-Net + VAE weights and NHWC activations (RDTFPipeline.optimize): the same sticker up to rounding."""
    import torch

    from model.performance import PerfConfig

    _, pkg = exported
    kw = {"num_inference_steps": 3, "seed": 0, "progress": False}
    ref = RDTFPipeline.from_pretrained(pkg)("a cat", **kw).frames.astype(int)
    cl = RDTFPipeline.from_pretrained(pkg).optimize(PerfConfig(memory_format="channels_last"))("a cat", **kw).frames
    assert np.abs(cl - ref).max() <= 1  # fp32 in another layout: uint8 rounding at most
    pipe = RDTFPipeline.from_pretrained(pkg).optimize(dtype="bf16")
    assert next(pipe.unet.parameters()).dtype == torch.bfloat16
    bf = pipe("a cat", **kw).frames
    assert bf.shape == ref.shape and np.abs(bf - ref).mean() < 8  # bf16 noise estimates, fp32 DDIM updates
    with pytest.raises(ValueError, match=r"dtype must be one of \['bf16', 'fp32'\]"):
        pipe.optimize(dtype="fp16")
