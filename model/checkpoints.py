"""On-disk layout of an RDTF checkpoint and its safe readers (sampling and training's resume both read it).

Layout of ``out_dir/checkpoints/``::

    step-NNNNNN/   model/config.json, model/diffusion_pytorch_model.safetensors (diffusers layout),
                   ema.safetensors, text_proj.safetensors, optimizer.pt, trainer.json
    latest         the name of the last published checkpoint

Every reader raises :class:`CheckpointError` (a ``ValueError`` naming the folder, the file and the problem) for
every corrupt case, so ``rdtf generate`` can report it in one line (exit 2). Weights are read with safetensors
only. Writing, rotation and resume live in ``training.checkpointing``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

MODEL_CONFIG = "model/config.json"
MODEL_WEIGHTS = "model/diffusion_pytorch_model.safetensors"
EMA = "ema.safetensors"
TEXT = "text_proj.safetensors"
OPTIMIZER = "optimizer.pt"
TRAINER = "trainer.json"
LATEST = "latest"
STEP_RE = re.compile(r"^step-(\d{6,})$")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names the folder, the file and the problem."""

    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"checkpoint {path}: {problem}")
        self.path, self.problem = Path(path), problem


class IncompatibleCheckpointError(ValueError):
    """A complete checkpoint of a different model config: refused, never skipped."""


def step_of(path: str | Path) -> int | None:
    m = STEP_RE.match(Path(path).name)
    return int(m.group(1)) if m else None



def check_files(ckpt: Path, files: tuple[str, ...]) -> None:
    if not ckpt.exists():
        raise CheckpointError(ckpt, "does not exist")
    if not ckpt.is_dir():
        raise CheckpointError(ckpt, "is a file, not a checkpoint folder")
    missing = [f for f in files if not (ckpt / f).is_file()]
    if missing:
        raise CheckpointError(ckpt, f"missing {', '.join(missing)} (incomplete or not an RDTF checkpoint)")


def read_json(ckpt: Path, rel: str, keys: tuple[str, ...] = ()) -> dict:
    """``ckpt/rel`` parsed as a JSON object holding ``keys``."""
    try:
        data = json.loads((ckpt / rel).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(ckpt, f"{rel} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(ckpt, f"{rel} must hold a JSON object, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise CheckpointError(ckpt, f"{rel} lacks {missing}")
    return data


def header_shapes(ckpt: Path, rel: str) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header; the header must parse and cover the whole file (a
    truncated file fails here without reading the tensors)."""
    from safetensors import safe_open

    try:
        with safe_open(str(ckpt / rel), framework="pt") as fh:
            return {k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()}
    except Exception as exc:  # noqa: BLE001 - SafetensorError is no subclass of a standard error; OSError too
        raise CheckpointError(ckpt, f"{rel} is truncated or not a safetensors file ({one_line(exc)})") from None


def compare_shapes(ckpt: Path, rel: str, got: Mapping[str, tuple], expected: Mapping[str, tuple]) -> None:
    """Same tensor names and shapes as ``expected`` (the live model's), or a CheckpointError saying what differs."""
    missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
    wrong = [(k, got[k], tuple(expected[k])) for k in sorted(set(got) & set(expected)) if tuple(got[k]) != tuple(expected[k])]
    if missing or extra or wrong:
        parts = []
        if wrong:
            k, g, e = wrong[0]
            parts.append(f"{len(wrong)} tensor(s) of the wrong shape, e.g. {k!r} {list(g)} where the model has {list(e)}")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[0]!r}")
        if extra:
            parts.append(f"{len(extra)} unexpected, e.g. {extra[0]!r}")
        raise CheckpointError(ckpt, f"{rel} does not fit the model: {'; '.join(parts)}")


# model-config fields added after checkpoints were first written, with the value an older checkpoint implies
ADDED_MODEL_FIELDS = {"sti_attention_layers": 1}


def check_compatible(saved: dict, current: dict) -> None:
    """Refuse a checkpoint whose model config differs, naming the fields.

    A field added since the checkpoint was written (``ADDED_MODEL_FIELDS``) is compared at the value the older
    code always used, so such checkpoints keep resuming (and are refused if the new field was changed)."""
    saved = {**{k: v for k, v in ADDED_MODEL_FIELDS.items() if k in current}, **saved}
    diff = {k: (saved.get(k), current.get(k)) for k in set(saved) | set(current) if saved.get(k) != current.get(k)}
    if diff:
        raise IncompatibleCheckpointError(
            f"checkpoint is incompatible with this config; differing model fields (saved, current): {diff}")


@contextmanager
def converting_errors(ckpt: str | Path, what: str) -> Iterator[None]:
    """Any error inside becomes ``CheckpointError(ckpt, f"{what} (<one-line cause>)")``: loaders (diffusers,
    safetensors, torch) raise every kind of exception for a bad file, and the caller wants one clear line."""
    try:
        yield
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - see docstring
        raise CheckpointError(ckpt, f"{what} ({type(exc).__name__}: {one_line(exc)})") from exc


def one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:300] + ("…" if len(text) > 300 else "")
