"""Checkpoints of a training run: publication, validation for resume, choosing what to resume, temp clean-up.

The folder layout and the readers are ``model.checkpoints``.

Why this module: a checkpoint is written for minutes at the paper preset (GBs), so kills, full disks and
power cuts happen *during* a save, and a run must survive them:

* **Publication is atomic.** Files go to ``.step-NNNNNN.tmp-<6 hex>`` and the folder is renamed into place;
  re-saving a step first renames the old folder to ``.step-NNNNNN.trash-<6 hex>``; ``latest`` is replaced
  through ``.latest.tmp-<12 hex>`` (``data.atomic``). A kill -9 leaves at most such dot-folders/files, never a half ``step-*``.
* **Leftovers are removed at trainer start** (:func:`clean_stale_temps`, rank 0, before anything else): only
  names matching exactly the patterns above, only in this run's checkpoints folder (plus the trainer's own
  ``.summary.json.tmp-*`` in ``out_dir``). Without it every killed save kept GBs forever.
* **Resume takes the newest checkpoint that is valid** (:func:`verify_training_checkpoint` — cheap but real:
  every file present, safetensors headers parse and cover the file, tensor names/shapes equal the live model's,
  trainer.json parses with its keys, optimizer.pt loads with ``torch.load(weights_only=True, mmap=True)``), in
  the order of :func:`resume_candidates`; rank 0 chooses and broadcasts, so all ranks load the same one, and a
  load that still fails moves every rank to the next candidate (:func:`resume`). Skipped checkpoints are
  logged and printed with the reason. A checkpoint of a *different model config* is not skipped but refused
  (:class:`IncompatibleCheckpointError`): falling back would silently restart the run.
* **Sampling** (``model.pipeline.RDTFPipeline``) raises :class:`CheckpointError` (a ``ValueError`` naming the
  file and the problem) for every corrupt case, so ``rdtf generate`` can report it in one line (exit 2).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from data.atomic import atomic_write
from model.checkpoints import (
    EMA,
    LATEST,
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    OPTIMIZER,
    STEP_RE,
    TEXT,
    TRAINER,
    CheckpointError,
    check_compatible,
    check_files,
    compare_shapes,
    header_shapes,
    one_line,
    read_json,
    step_of,
)

log = logging.getLogger("rdtf.checkpoints")

TRAINING_FILES = (MODEL_CONFIG, MODEL_WEIGHTS, EMA, TEXT, OPTIMIZER, TRAINER)  # what a resumable checkpoint holds
TRAINER_KEYS = ("step", "curriculum", "model_config")  # what Trainer.load reads from trainer.json

_TEMP_DIR_RE = re.compile(r"^\.step-\d{6,}\.(tmp|trash)-[0-9a-f]{6}$")  # Trainer.save / publish
_TEMP_MARKER_RE = re.compile(r"^\.latest\.tmp(-[0-9a-f]{6}|-[0-9a-f]{12})?$")  # write_latest (6 hex, none: older)
_TEMP_SUMMARY_RE = re.compile(r"^\.summary\.json\.tmp-([0-9a-f]{6}|[0-9a-f]{12})$")  # training.trainer._atomic_json in out_dir


def _hex6() -> str:
    return uuid.uuid4().hex[:6]


def temp_dir_for(root: Path, name: str) -> Path:
    """Where ``Trainer.save`` writes checkpoint ``name`` before :func:`publish`."""
    return root / f".{name}.tmp-{_hex6()}"


def publish(tmp: Path, final: Path) -> None:
    """Rename the finished ``tmp`` folder to ``final``; an existing ``final`` (same step saved again, or a
    corrupt one being replaced) is renamed aside first and deleted after, so no instant lacks both."""
    trash = None
    if final.exists():
        trash = final.with_name(f".{final.name}.trash-{_hex6()}")
        os.rename(final, trash)
    os.rename(tmp, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def write_latest(root: Path, name: str) -> None:
    """Point ``latest`` at ``name`` atomically (unique temp name: no two writers share it)."""
    atomic_write(root / LATEST, name)


def rotate(root: Path, keep: int, current: Path) -> None:
    """Keep the ``keep`` newest complete checkpoints up to ``current``; newer ones (a run resumed from an older
    checkpoint) stay until the run re-saves their step."""
    upto = step_of(current)
    done = sorted((p for p in root.glob("step-*") if step_of(p) is not None and step_of(p) <= upto
                   and (p / TRAINER).exists()), key=step_of)
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def clean_stale_temps(out_dir: str | Path) -> list[Path]:
    """Delete what killed saves left in this run (exact temp-name patterns only); returns what was removed."""
    out = Path(out_dir)
    removed: list[Path] = []
    root = out / "checkpoints"
    entries = list(root.iterdir()) if root.is_dir() else []
    for p in entries:
        if p.is_dir() and not p.is_symlink() and _TEMP_DIR_RE.match(p.name):
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
        elif (p.is_file() or p.is_symlink()) and _TEMP_MARKER_RE.match(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    for p in (out.iterdir() if out.is_dir() else []):
        if (p.is_file() or p.is_symlink()) and _TEMP_SUMMARY_RE.match(p.name):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def verify_training_checkpoint(ckpt: str | Path, *, model_config: dict | None = None,
                               model_shapes: Mapping[str, tuple] | None = None,
                               text_shapes: Mapping[str, tuple] | None = None) -> dict:
    """Raise CheckpointError unless ``ckpt`` can be resumed from; returns its trainer.json.

    ``model_config`` (the live ``asdict(DFGNConfig)``, JSON round-tripped): a different saved config raises
    :class:`IncompatibleCheckpointError`. ``model_shapes`` / ``text_shapes``: the live U-Net / text projection
    state-dict shapes (without them, the model weights and the EMA must at least agree with each other).
    """
    ckpt = Path(ckpt)
    check_files(ckpt, TRAINING_FILES)
    meta = read_json(ckpt, TRAINER, TRAINER_KEYS)
    if isinstance(meta["step"], bool) or not isinstance(meta["step"], int) or meta["step"] < 0:
        raise CheckpointError(ckpt, f"{TRAINER}: step must be an int >= 0, got {meta['step']!r}")
    if not isinstance(meta["model_config"], dict) or not isinstance(meta["curriculum"], dict):
        raise CheckpointError(ckpt, f"{TRAINER}: model_config and curriculum must be JSON objects")
    read_json(ckpt, MODEL_CONFIG)
    if model_config is not None:
        check_compatible(meta["model_config"], model_config)
    weights = header_shapes(ckpt, MODEL_WEIGHTS)
    compare_shapes(ckpt, MODEL_WEIGHTS, weights, model_shapes if model_shapes is not None else weights)
    compare_shapes(ckpt, EMA, header_shapes(ckpt, EMA), model_shapes if model_shapes is not None else weights)
    text = header_shapes(ckpt, TEXT)
    if text_shapes is not None:
        compare_shapes(ckpt, TEXT, text, text_shapes)
    _check_optimizer(ckpt)
    return meta


def _check_optimizer(ckpt: Path) -> None:
    import torch

    try:  # mmap: the zip directory and pickle are read, the tensors stay on disk
        state = torch.load(ckpt / OPTIMIZER, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError/UnpicklingError/EOFError/... for bad files
        raise CheckpointError(ckpt, f"{OPTIMIZER} does not load ({one_line(exc)})") from None
    if not isinstance(state, dict) or "state" not in state or "param_groups" not in state:
        raise CheckpointError(ckpt, f"{OPTIMIZER} is not an optimizer state dict (no 'state'/'param_groups')")


# ------------------------------------------------------------------------------------------ resume


def resume_candidates(out_dir: str | Path) -> list[Path]:
    """What ``--resume latest`` tries, in order: the checkpoint ``latest`` names, then every other ``step-*``
    folder, newest first (deterministic: the same list on every rank and every restart)."""
    root = Path(out_dir) / "checkpoints"
    first: list[Path] = []
    try:
        name = (root / LATEST).read_text().strip()
        if STEP_RE.match(name):
            first = [root / name]
    except (OSError, UnicodeDecodeError):
        pass
    rest = sorted((p for p in (root.glob("step-*") if root.is_dir() else []) if step_of(p) is not None and p not in first),
                  key=step_of, reverse=True)
    return first + rest


def resume(spec: str, out_dir: str | Path, *, verify: Callable[[Path], object], read: Callable[[Path], object],
           apply: Callable[[object], None], rank: int = 0, world: int = 1) -> Path | None:
    """Load the checkpoint ``spec`` names ('latest' or a folder) on every rank; returns it, or None ('latest'
    and nothing valid: start from scratch).

    Rank 0 walks the candidates, skipping (and reporting) each that ``verify`` rejects, and broadcasts its
    choice; every rank then ``read``s the files (no state touched yet) and ``apply``s them. A failure anywhere
    moves all ranks to the next candidate; a failed ``apply`` may have touched the live state, so if none is
    left after one the run stops instead of training on a mix. An explicit folder is never replaced by another.
    """
    explicit = spec != "latest"
    cands = [Path(spec)] if explicit else resume_candidates(out_dir)
    nxt, dirty, skipped = 0, False, []
    while True:
        choice: tuple[str, str | None] = ("none", None)
        if rank == 0:
            while nxt < len(cands):
                cand, nxt = cands[nxt], nxt + 1
                try:
                    verify(cand)
                    # relative to out_dir unless explicit: on an object-store run every node has its own working
                    # copy (training.run_mirror), so rank 0's absolute path need not exist on the other nodes
                    choice = ("path", str(cand) if explicit else os.path.relpath(cand, out_dir))
                    break
                except CheckpointError as exc:
                    _report_skip(cand, exc.problem, skipped)
                    if explicit:
                        choice = ("error", str(exc))
                except Exception as exc:  # noqa: BLE001 - e.g. incompatible: every rank must raise, not hang
                    choice = ("error", f"{type(exc).__name__}: {exc}" if not isinstance(exc, ValueError) else str(exc))
                    break
        kind, value = _broadcast(choice, rank, world)
        if kind == "error":
            raise ValueError(value)
        if kind == "none":
            if dirty:
                raise RuntimeError(f"no loadable checkpoint left in {Path(out_dir) / 'checkpoints'} after a partial "
                                   f"load; skipped: {skipped}. Move the broken checkpoints away and resume again")
            return None
        path, stage = Path(value) if explicit else Path(out_dir) / value, "read"
        try:
            loaded = read(path)
            stage = "apply"
            apply(loaded)
            error = None
        except Exception as exc:  # noqa: BLE001 - any load failure: fall back like an invalid checkpoint
            error, dirty = f"{stage} failed: {one_line(exc)}", dirty or stage == "apply"
        errors = _gather_errors(error, rank, world)
        if not errors:
            return path
        if rank == 0:
            _report_skip(path, "; ".join(errors), skipped)
        if explicit:
            raise CheckpointError(path, "; ".join(errors))


def _report_skip(path: Path, why: str, skipped: list) -> None:
    skipped.append((path.name, why))
    msg = f"resume: skipping checkpoint {path}: {why}"
    log.warning(msg)
    print(msg, flush=True)  # also on stdout: Dagster shows the Pipes process output


def _broadcast(obj, rank: int, world: int):
    if world <= 1:
        return obj
    import torch.distributed as dist

    box = [obj if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather_errors(error: str | None, rank: int, world: int) -> list[str]:
    if world <= 1:
        return [error] if error else []
    import torch.distributed as dist

    out: list = [None] * world
    dist.all_gather_object(out, error)
    return [f"rank {r}: {e}" for r, e in enumerate(out) if e]
