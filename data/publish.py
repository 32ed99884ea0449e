"""Publish protocol of a lake partition: immutable versions, one atomically replaced pointer, one lock.

Layout of a partition folder ``P`` (e.g. ``lake/shards/<drop_id>``)::

    P/.lock                      held (flock) by the one writer of this partition
    P/CURRENT                    {"version": "v...", "previous": "v..." | null, ...} -- the commit point
    P/versions/<version>/...     a complete, never-modified output

Why this shape (the former protocol built a ``.staging-<name>-*`` sibling and swapped it in with two
renames): a kill between the renames left *no* published folder, the next run deleted the only good
copy in ``.trash-*``, and stale-folder cleanup matched by prefix, so cleaning drop ``d1`` deleted the
staging folder of ``d1-x``. Here:

* **No window of absence.** A writer fills a fresh ``versions/<version>/`` and commits by replacing
  ``CURRENT`` (temp file + ``os.replace``, fsynced). Before the replace, readers see the old version;
  after it, the new one. On an object store the same commit is one PUT of ``CURRENT`` (atomic per
  key), and nothing on the commit path renames a directory.
* **One writer per partition.** ``P/.lock`` is an exclusive ``flock``: a second run of the same
  partition waits (logging who holds it) up to ``lock_timeout_s``, then fails with a clear error.
  The kernel drops the lock when its holder dies, so a killed writer never needs a human.
* **Cleanup touches only what it provably owns.** Under the lock, every ``versions/`` entry whose name
  has the exact version format and is neither ``CURRENT``'s version nor its ``previous`` is garbage
  (an older version, or the leftover of a dead writer -- a live one would hold the lock). The previous
  version is kept so a reader that resolved the pointer just before a commit can finish.
* **Readers resolve through the pointer** (:func:`current`). A partition written by the former layout
  (files directly in ``P``, no ``CURRENT``) is read as it is.
* **On an object store** (``data.storage``) the protocol is the same with the store's primitives: the lock is a
  lease object created by an exclusive PUT (``data.object_lock``), each file of the version is one PUT, a
  ``.version.json`` marker is written last into the version (a prefix exists only while it holds objects), and
  the commit is the PUT of ``CURRENT``. Nothing is renamed; GC deletes prefixes.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from data.atomic import atomic_write, fsync_dir
from data.object_lock import ObjectLease
from data.storage import LakePath, is_remote, lake_path, remove_tree

log = logging.getLogger(__name__)

POINTER = "CURRENT"
VERSIONS = "versions"
LOCK = ".lock"
MARKER = ".version.json"  # last object of a version on an object store (see module doc)
VERSION_RE = re.compile(r"^v\d{8}T\d{6}\d{6}Z-[0-9a-f]{12}$")  # sortable by time; exact, so GC owns only these
_POINTER_TMP_RE = re.compile(rf"^\.{POINTER}\.tmp-[0-9a-f]{{12}}$")
DEFAULT_LOCK_TIMEOUT_S = float(os.environ.get("RDTF_LOCK_TIMEOUT_S", 6 * 3600))  # a drop's ingest can take hours


class PartitionBusy(TimeoutError):
    """Another writer held the partition lock for longer than the timeout."""


def _new_version() -> str:
    now = dt.datetime.now(dt.UTC)
    return f"v{now:%Y%m%dT%H%M%S%f}Z-{uuid.uuid4().hex[:12]}"


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder of a finished version before the pointer names it (power loss)."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            fsync_dir(Path(dirpath) / name)  # a plain O_RDONLY fsync flushes files too
        fsync_dir(Path(dirpath))


def read_pointer(partition: str | LakePath) -> dict | None:
    """The partition's committed pointer, or None if it has never been published in this layout."""
    partition = lake_path(partition)
    try:
        doc = json.loads((partition / POINTER).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ValueError(f"{partition / POINTER}: unreadable pointer ({exc}); re-materialize the partition") from None
    if not isinstance(doc, dict) or not VERSION_RE.match(str(doc.get("version", ""))):
        raise ValueError(f"{partition / POINTER}: not a valid pointer: {str(doc)[:200]}")
    return doc


def current(partition: str | LakePath) -> LakePath:
    """Folder of the partition's committed version. ``FileNotFoundError`` when nothing is published."""
    found = current_or_none(partition)
    if found is None:
        raise FileNotFoundError(f"nothing published at {partition} (materialize it first)")
    return found


def current_or_none(partition: str | LakePath) -> LakePath | None:
    """Like :func:`current`, but None when nothing is published."""
    partition = lake_path(partition)
    doc = read_pointer(partition)
    if doc is not None:
        path = partition / VERSIONS / doc["version"]
        # on an object store a prefix "exists" only while it holds objects; the marker covers an empty version, and
        # a lake copied from a local one (``aws s3 sync``; no markers) still reads
        complete = ((path / MARKER).is_file() or path.is_dir()) if is_remote(path) else path.is_dir()
        if not complete:
            raise FileNotFoundError(f"{partition / POINTER} names {doc['version']}, which is missing")
        return path
    if is_remote(partition):
        return None  # the former layout never existed on object stores
    if partition.is_dir() and not (partition / VERSIONS).exists() and any(
        p.name != LOCK for p in partition.iterdir()
    ):
        return partition  # former layout: outputs directly in the partition folder
    return None


class PartitionLock:
    """Exclusive, kernel-released lock of one partition (``P/.lock``), waiting up to ``timeout_s``."""

    def __init__(self, partition: str | Path, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S, poll_s: float = 0.2):
        self.path = Path(partition) / LOCK
        self.timeout_s, self.poll_s = timeout_s, poll_s
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            return self.path.read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def __enter__(self) -> PartitionLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        deadline, warned = time.monotonic() + self.timeout_s, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
            if time.monotonic() >= deadline:
                os.close(fd)
                raise PartitionBusy(f"{self.path.parent} is being written by another run ({self._holder()}); "
                                    f"gave up after {self.timeout_s:.0f} s (RDTF_LOCK_TIMEOUT_S)")
            if not warned:
                log.warning("waiting for %s: held by %s", self.path.parent, self._holder())
                warned = True
            time.sleep(self.poll_s)
        owner = f"pid={os.getpid()} host={socket.gethostname()} since={dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def _commit(partition: LakePath, version: str, previous: str | None) -> None:
    doc = {"version": version, "previous": previous, "committed_utc": f"{dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}"}
    atomic_write(partition / POINTER, json.dumps(doc, indent=2, sort_keys=True))  # the commit point


def collect_garbage(partition: str | LakePath) -> list[str]:
    """Remove versions no pointer references and dead writers' temp pointers; call under the lock.

    Returns the removed names. Entries that do not have this module's exact name formats are left alone.
    """
    partition = lake_path(partition)
    doc = read_pointer(partition) or {}
    keep = {doc.get("version"), doc.get("previous")}
    removed = []
    vdir = partition / VERSIONS
    if vdir.is_dir():
        for p in sorted(vdir.iterdir()):
            if VERSION_RE.match(p.name) and p.name not in keep:
                remove_tree(p)
                removed.append(p.name)
    for p in partition.iterdir() if partition.is_dir() else ():
        if _POINTER_TMP_RE.match(p.name):
            p.unlink(missing_ok=True)
            removed.append(p.name)
    return removed


@contextlib.contextmanager
def publish(partition: str | LakePath, *, lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> Iterator[LakePath]:
    """Write a new version of ``partition`` inside the ``with`` block; it is committed when the block exits cleanly.

    Yields the fresh, empty version folder. On an exception the folder is removed and the pointer is
    untouched (readers keep the last good version). A kill at any point leaves the last committed version
    readable; the next writer removes the leftovers.
    """
    partition = lake_path(partition)
    remote = is_remote(partition)
    if not remote:
        partition.mkdir(parents=True, exist_ok=True)
    lock = ObjectLease(partition, lock_timeout_s, PartitionBusy) if remote else PartitionLock(partition, lock_timeout_s)
    with lock:
        leftovers = collect_garbage(partition)
        if leftovers:
            log.info("%s: removed %d unreferenced version(s) of earlier runs: %s", partition, len(leftovers), leftovers)
        previous = (read_pointer(partition) or {}).get("version")
        version = _new_version()
        out = partition / VERSIONS / version
        if not remote:
            out.mkdir(parents=True)
        try:
            yield out
            if remote:
                atomic_write(out / MARKER, json.dumps({"version": version, "previous": previous}))
            else:
                _fsync_tree(out)
            _commit(partition, version, previous)
        except BaseException:
            remove_tree(out)
            raise
        collect_garbage(partition)
