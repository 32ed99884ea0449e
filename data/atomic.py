"""Atomic file writes: a reader sees the old file or the new one, never a half-written one.

One helper for every small file the pipeline publishes (JSON reports, Parquet tables, pointers, GIFs, shard
indexes): write to a uniquely named temp file in the destination folder, fsync it, ``os.replace`` it over the
target (atomic within one POSIX/Windows directory) and fsync the folder so the rename survives a power cut.
Temp files are named ``.<name>.tmp-<12 hex>`` (:func:`temp_name`), so clean-up code can match them exactly.

On an object store (``data.storage.is_remote``) there is no rename: the temp file lives on local scratch disk and
is uploaded in one (multipart) PUT, which is the store's atomic replace of that key.

    with atomic_path(out / "table.parquet") as tmp:
        pq.write_table(table, tmp)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from data.storage import LakePath, is_remote, lake_path, put_file, scratch_dir


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
def atomic_path(path: str | LakePath, *, durable: bool = True) -> Iterator[Path]:
    """Yield a local temp path; on success it replaces ``path`` (local or object store), on error it is removed.

    ``durable``: fsync the file and the folder (skip only for files that are cheap to regenerate)."""
    path = lake_path(path)
    if is_remote(path):
        tmp = scratch_dir() / temp_name(path.name)
        try:
            yield tmp
            put_file(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return
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


def atomic_write(path: str | LakePath, data: bytes | str, *, durable: bool = True) -> LakePath:
    """Write ``data`` (bytes, or text as UTF-8) to ``path`` atomically; returns ``path``."""
    blob = data.encode() if isinstance(data, str) else data
    path = lake_path(path)
    if is_remote(path):
        path.write_bytes(blob)  # one PUT: the object store's atomic replace
        return path
    with atomic_path(path, durable=durable) as tmp:
        tmp.write_bytes(blob)
    return path
