"""Ways to damage a checkpoint file, shared by the resume tests and the ``rdtf generate`` error tests."""

from __future__ import annotations

from pathlib import Path


def truncate(path: Path) -> None:
    """Cut a file in half (a kill or a full disk during a write)."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def wrong_shape(path: Path) -> None:
    """Re-save a safetensors file with its first tensor replaced by one of a different shape."""
    from safetensors.torch import load_file, save_file

    sd = load_file(path)
    k = sorted(sd)[0]
    sd[k] = sd[k].flatten()[:1].clone()
    save_file(sd, path)
