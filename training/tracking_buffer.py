"""The durable buffer of MLflow calls that could not be sent (see ``training.tracking`` for when and why).

``mlflow_buffer.jsonl``: one JSON entry per line, fsync'd on append, rewritten atomically after a partial flush
and deleted once empty; a line torn by a kill is dropped when the buffer is opened. Buffered artifacts are copied
to ``mlflow_buffer_files/`` (checkpoint folders rotate away before the server may return). Entries the server
refused for good go to ``mlflow_rejected.jsonl`` with the error instead of blocking the buffer forever.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path

from data.atomic import atomic_write, fsync_dir

log = logging.getLogger("rdtf.tracking")

STATE_NAME = "mlflow_state.json"
BUFFER_NAME = "mlflow_buffer.jsonl"
REJECTED_NAME = "mlflow_rejected.jsonl"
FILES_DIR = "mlflow_buffer_files"


class TrackingBuffer:
    """The buffer files of one training folder (one writer per folder, like the checkpoints)."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.path = self.dir / BUFFER_NAME

    def append(self, entries: list[dict]) -> None:
        for e in entries:
            if e["kind"] == "artifact" and not e.get("file"):  # keep a copy: the source may be rotated away
                src = Path(e["path"])
                if src.exists():
                    rel = f"{FILES_DIR}/{uuid.uuid4().hex[:12]}/{src.name}"  # keeps the name MLflow will show
                    (self.dir / rel).parent.mkdir(parents=True)
                    shutil.copyfile(src, self.dir / rel)
                    e["file"] = rel
        with open(self.path, "a") as f:
            for e in entries:
                f.write(json.dumps(e, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                e = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line torn by a kill (only the last one can be); repair() warns
            if isinstance(e, dict) and "kind" in e:
                out.append(e)
        return out

    def repair(self) -> None:
        """Drop a torn last line so later appends start on a fresh line."""
        if not self.path.exists():
            return
        raw = self.path.read_bytes()
        entries = self.read()
        if raw and (not raw.endswith(b"\n") or len(entries) != len(raw.splitlines())):
            log.warning("MLflow buffer %s had a torn or unreadable line (killed while writing); dropped it",
                        self.path)
            self.rewrite(entries)

    def rewrite(self, entries: list[dict]) -> None:
        if entries:
            atomic_write(self.path, b"".join(json.dumps(e, sort_keys=True).encode() + b"\n" for e in entries))
        else:
            self.path.unlink(missing_ok=True)
            fsync_dir(self.dir)
        keep = {Path(e["file"]).parts[1] for e in entries if e.get("file")}  # FILES_DIR/<id>/<name>
        files = self.dir / FILES_DIR
        if files.is_dir():
            if not keep:
                shutil.rmtree(files, ignore_errors=True)
            else:
                for p in files.iterdir():
                    if p.name not in keep:
                        shutil.rmtree(p, ignore_errors=True)

    def reject(self, entries: list[dict], exc: BaseException) -> None:
        log.warning("MLflow refused %d %s entr%s for good (%s: %s); kept in %s", len(entries), entries[0]["kind"],
                    "y" if len(entries) == 1 else "ies", type(exc).__name__, str(exc)[:300], self.dir / REJECTED_NAME)
        with open(self.dir / REJECTED_NAME, "a") as f:
            for e in entries:
                f.write(json.dumps({"entry": e, "error": f"{type(exc).__name__}: {exc}"[:2000]}) + "\n")
            f.flush()
            os.fsync(f.fileno())


def set_aside(out: Path, old_state: dict) -> None:
    """A new run starts in ``out``: move the previous run's state and unsent buffer to ``mlflow_orphaned-*``."""
    buf = out / BUFFER_NAME
    if not buf.exists() or not buf.read_text().strip():
        return
    dest = out / f"mlflow_orphaned-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:4]}"
    dest.mkdir()
    for name in (BUFFER_NAME, FILES_DIR):
        if (out / name).exists():
            os.rename(out / name, dest / name)
    (dest / STATE_NAME).write_text(json.dumps(old_state, indent=2, sort_keys=True))
    log.warning("MLflow: a new run starts in %s; the previous run's unsent buffer was moved to %s "
                "(send it with `python -m training.tracking flush %s`)", out, dest, dest)
