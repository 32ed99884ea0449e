"""Helpers shared by the test packages (plain functions; fixtures live in ``conftest.py``)."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# A micro training run: 0.33 M parameters, pixel space, a few steps (see training.config.TrainConfig).
TRAIN_DEFAULTS = {"preset": "micro_pixel", "steps": 6, "batch_size": 2, "lr": 1e-3, "ckpt_every": 3, "warmup_steps": 2,
                  "seed": 0, "log_every": 1}


def write_train_config(tmp: Path, index: Path, name: str, *, out_dir: Path | None = None, **kw) -> Path:
    """Write ``tmp/<name>.json`` for ``python -m training --config``: the micro defaults, ``kw`` on top."""
    cfg = {"index_paths": [str(index)], "out_dir": str(out_dir or tmp / name)} | TRAIN_DEFAULTS | kw
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    return path


def tiny_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """A random-init ``tiny_pixel`` checkpoint in the trainer's layout."""
    import torch
    from safetensors.torch import save_file

    from model.pipeline import text_config_for_model
    from model.text_encoder import TextEncoder
    from model.unet import DFGN, tiny

    torch.manual_seed(seed)
    model = DFGN.from_dataclass(tiny(pixel_space=True))
    text = TextEncoder(text_config_for_model(model, {"seed": seed}))
    ckpt = Path(out_dir) / "checkpoints" / "step-000000"
    model.save_pretrained(ckpt / "model")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ckpt / "ema.safetensors")
    save_file({k: v.contiguous() for k, v in text.state_dict().items()}, ckpt / "text_proj.safetensors")
    (ckpt / "trainer.json").write_text(json.dumps({"step": 0, "train_config": {"preset": "tiny_pixel", "autoencoder": "pixel",
                                                                                "seed": seed}, "typical_duration_ms": 100}))
    (ckpt.parent / "latest").write_text(ckpt.name)
    return ckpt



def write_kubeconfig(path: Path) -> Path:
    """A kubeconfig pointing at a cluster that does not exist (builds clients; nothing is ever called)."""
    import yaml

    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "t", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "contexts": [{"name": "t", "context": {"cluster": "t", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "x"}}]}))
    return path
