"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

One helper for every small file the pipeline publishes (JSON reports, Parquet tables, pointers, GIFs, shard
indexes): write to a uniquely named temp file in the destination folder, fsync it, ``os.replace`` it over the
target (atomic within one POSIX/Windows directory) and fsync the folder so the rename survives a power cut.
Temp files are named ``.<name>.tmp-<12 hex>`` (:func:`temp_name`), so clean-up code can match them exactly.

    with atomic_path(out / "table.parquet") as tmp:
        pq.write_table(table, tmp)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path


def temp_name(name: str) -> str:
    """A unique temp-file name for ``name`` (no two writers share one)."""
    return f".{name}.tmp-{uuid.uuid4().hex[:12]}"


def fsync_dir(path: str | Path) -> None:
    """Best-effort fsync of a folder (makes a rename inside it durable; some filesystems refuse it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _fsync_file(path: Path) -> None:
    with contextlib.suppress(OSError), open(path, "rb+") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, *, durable: bool = True) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path``, on error it is removed.

    ``durable``: fsync the file and the folder (skip only for files that are cheap to regenerate)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temp_name(path.name))
    try:
        yield tmp
        if durable:
            _fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def atomic_write(path: str | Path, data: bytes | str, *, durable: bool = True) -> Path:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)
