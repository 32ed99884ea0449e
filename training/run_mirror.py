"""A training run whose ``out_dir`` is on an object store: node-local working copy, pushed checkpoint by checkpoint.

Why a working copy and not fsspec all the way down: a checkpoint is written by ``safetensors.save_file`` and
``torch.save`` and verified/loaded with mmap (``training.checkpointing``), the MLflow buffer is an append-only
journal, and the whole kill-safety design of checkpoints rests on renaming folders -- none of which an object
store offers. So a rank works in ``$RDTF_SCRATCH/rdtf-runs/<hash of the URL>`` (a node-local disk: an
``emptyDir`` in the pod) exactly as on a local lake, and :class:`RunMirror` keeps the object store the system of
record:

* **pull** (every node, before resume): downloads every ``checkpoints/step-*`` folder and the run's small
  files (MLflow state/buffer, summary) that the working copy lacks. Several ranks of one node share the copy,
  so the pull runs under a ``flock`` there: the first rank downloads, the others find it done.
* **push_checkpoint** (rank 0, after each local save): uploads the new step folder file by file (each one PUT,
  ``trainer.json`` last, so a folder without it is incomplete and resume skips it), then PUTs
  ``checkpoints/latest`` -- the remote "latest" moves only after its folder is complete, as locally -- then
  deletes remote steps that local rotation removed, and uploads the run's small files.
* A kill anywhere leaves the remote ``latest`` naming a complete checkpoint; a pod restarted on another node
  pulls it and resumes bit-identically (the state is the same files).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
from pathlib import Path

from data.storage import (
    LakePath,
    fetch,
    is_remote,
    lake_path,
    put_file,
    remove_tree,
    scratch_dir,
    upload_tree,
)
from model.checkpoints import LATEST, STEP_RE, TRAINER

log = logging.getLogger("rdtf.run_mirror")

CHECKPOINTS = "checkpoints"


def _local_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())


class RunMirror:
    """Object-store run folder ``remote`` mirrored in node-local ``local`` (see module doc)."""

    def __init__(self, remote: LakePath, local: Path):
        if not is_remote(remote):
            raise ValueError(f"RunMirror is for object-store run folders, got the local path {remote}")
        self.remote, self.local = remote, local

    @classmethod
    def for_out_dir(cls, out_dir: str) -> RunMirror | None:
        """The mirror of ``out_dir`` when it is an object-store URL, else None (train in place)."""
        remote = lake_path(out_dir)
        if not is_remote(remote):
            return None
        digest = hashlib.sha256(str(remote).encode()).hexdigest()[:16]
        return cls(remote, scratch_dir() / "rdtf-runs" / f"{remote.name}-{digest}")

    def remote_of(self, local: str | os.PathLike) -> str:
        """The object-store URL of a path inside the working copy."""
        rel = Path(local).resolve().relative_to(self.local.resolve())
        return str(self.remote.joinpath(*rel.parts))

    # ---------------------------------------------------------------------------------------- pull

    def pull(self) -> list[str]:
        """Download what the working copy lacks (checkpoints, run files); returns the downloaded relative names."""
        self.local.mkdir(parents=True, exist_ok=True)
        with open(self.local / ".pull.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # other local ranks wait, then find everything present
            return self._pull_locked()

    def _pull_locked(self) -> list[str]:
        fs, base = self.remote.fs, self.remote.path.rstrip("/")
        try:
            found = fs.find(base, detail=True)
        except FileNotFoundError:
            return []
        got = []
        for key, info in sorted(found.items()):
            rel = key[len(base):].lstrip("/")
            parts = rel.split("/")
            if parts[0] == CHECKPOINTS and len(parts) > 2 and not STEP_RE.match(parts[1]):
                continue  # not ours (temp names never reach the store; be strict anyway)
            dest = self.local.joinpath(*parts)
            if dest.is_file() and dest.stat().st_size == info.get("size"):
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.pull-{os.getpid()}")
            fs.get_file(key, os.fspath(tmp))
            os.replace(tmp, dest)  # a killed pull leaves no half file under the real name
            got.append(rel)
        if got:
            log.info("pulled %d file(s) of %s into %s", len(got), self.remote, self.local)
        return got

    # ---------------------------------------------------------------------------------------- push

    def push_checkpoint(self, step_dir: Path) -> str:
        """Upload a published local checkpoint, then move the remote ``latest``; returns its URL."""
        dest = self.remote / CHECKPOINTS / step_dir.name
        upload_tree(step_dir, dest, last=(TRAINER,))  # trainer.json last: it marks the folder complete
        (self.remote / CHECKPOINTS / LATEST).write_text(step_dir.name)  # one PUT: the commit point
        self._drop_rotated()
        self.push_run_files()
        return str(dest)

    def _drop_rotated(self) -> None:
        """Delete remote checkpoints that local rotation removed (never the one ``latest`` names)."""
        local_steps = {p.name for p in (self.local / CHECKPOINTS).glob("step-*")}
        latest = (self.remote / CHECKPOINTS / LATEST).read_text().strip()
        root = self.remote / CHECKPOINTS
        for p in root.iterdir() if root.exists() else ():
            if STEP_RE.match(p.name) and p.name not in local_steps and p.name != latest:
                remove_tree(p)

    def push_run_files(self) -> None:
        """Upload the run's files outside ``checkpoints/`` (summary, MLflow state and buffer, plots)."""
        for f in _local_files(self.local):
            rel = f.relative_to(self.local)
            if rel.parts[0] == CHECKPOINTS or f.name.startswith("."):
                continue
            with contextlib.suppress(FileNotFoundError):  # the tracker may rotate its buffer meanwhile
                put_file(f, self.remote.joinpath(*rel.parts))


def latest_checkpoint(out_dir: str | LakePath) -> LakePath | None:
    """The complete checkpoint ``out_dir/checkpoints/latest`` names (local or on the object store), or None."""
    marker = lake_path(out_dir) / CHECKPOINTS / LATEST
    try:
        name = marker.read_text().strip()
    except (FileNotFoundError, OSError):
        return None
    path = marker.parent / name
    return path if STEP_RE.match(name) and (path / TRAINER).exists() else None


def local_checkpoint(path: str | LakePath) -> Path:
    """A local folder holding checkpoint ``path``: itself when local, else a cached download (by URL)."""
    src = lake_path(path)
    if not is_remote(src):
        return src
    digest = hashlib.sha256(str(src).encode()).hexdigest()[:16]
    dest = scratch_dir() / "rdtf-checkpoints" / f"{src.name}-{digest}"
    if (dest / TRAINER).is_file():
        return dest  # complete: a download appears under dest only by the rename below
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")  # complete only once renamed to dest
    remove_tree(tmp)
    fetch(src, tmp)
    remove_tree(dest)
    os.replace(tmp, dest)
    return dest
