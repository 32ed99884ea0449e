"""Reading the files of an untrusted drop: regular files inside the drop folder only, never more than a cap.

``data.drops.safe_member_path`` refuses ``..`` and absolute paths, but only as strings. On a local
filesystem a member can still be a symlink (or lie under a symlinked folder) that resolves outside the drop,
a FIFO whose ``open`` blocks forever, or a device such as ``/dev/zero`` whose reported size (0) says nothing
about how much it yields. So every read here:

* resolves the path (``os.path.realpath``) and refuses anything that lands outside the resolved drop folder
  (``symlink_escape``) before touching the target: nothing outside the drop is even stat'ed;
* accepts only regular files (``S_ISREG``; ``not_regular_file`` for FIFOs, devices, sockets, directories),
  checked *before* ``open`` so a FIFO is never opened, and re-checked with ``fstat`` on the opened
  descriptor (opened ``O_NONBLOCK | O_NOFOLLOW``), plus, on Linux, the descriptor's real path, so a file
  swapped for a symlink or a FIFO between the check and the open is refused too;
* reads at most ``max_bytes + 1`` bytes and rejects when more came: the size reported by ``stat`` or the
  object store is never trusted alone.

Other fsspec backends (``memory://``, ``s3://``, ...) have no symlinks or special files; there the entry
must be ``type == "file"`` and the read is capped the same way.

Messages name the drop-relative path and the reason only: neither bytes of a file nor the resolved
target of a link ever reach a quarantine message or a log.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable

from fsspec.implementations.local import LocalFileSystem

from data.ids import within
from data.rejects import RejectReason, StickerRejected

_CHUNK = 1 << 20  # read granularity: the cap is exact, the chunk only bounds one read call
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
               | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0))
_PROC_FD = sys.platform.startswith("linux") and os.path.isdir("/proc/self/fd")


def is_local(fs) -> bool:
    return isinstance(fs, LocalFileSystem)


def kind_of(mode: int) -> str:
    """What a non-regular file is, for messages."""
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"


def member_exists(fs, root: str, rel: str) -> bool:
    """An entry named ``rel`` exists and is not a real directory (links and special files count: reading
    them is what refuses them, with a clear reason, instead of silently treating the drop as not ready)."""
    if not is_local(fs):
        return fs.isfile(f"{root.rstrip('/')}/{rel}")
    try:
        return not stat.S_ISDIR(os.lstat(os.path.join(root, *rel.split("/"))).st_mode)
    except OSError:
        return False


def read_member(fs, root: str, rel: str, max_bytes: int, limit_name: str = "max_file_bytes") -> bytes:
    """The bytes of drop member ``rel`` (a path normalised by ``safe_member_path``) or ``StickerRejected``.

    ``root`` is the drop folder as ``fs`` names it; ``limit_name`` names ``max_bytes`` in messages.
    """
    if is_local(fs):
        return _read_local(root, rel, max_bytes, limit_name)
    return _read_fsspec(fs, f"{root.rstrip('/')}/{rel}", rel, max_bytes, limit_name)


def _too_large(rel: str, n: int | str, max_bytes: int, limit_name: str) -> StickerRejected:
    return StickerRejected(RejectReason.FILE_TOO_LARGE, f"{rel!r}: {n} bytes > {limit_name}={max_bytes}")


def _read_capped(read: Callable[[int], bytes], rel: str, max_bytes: int, limit_name: str) -> bytes:
    chunks, total = [], 0
    while total <= max_bytes:
        chunk = read(min(_CHUNK, max_bytes + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    if total > max_bytes:
        raise _too_large(rel, "more than", max_bytes, limit_name)
    return b"".join(chunks)


def _os_error(rel: str, exc: OSError) -> StickerRejected:
    # strerror only: str(exc) would carry the resolved path, which may name a target outside the drop
    return StickerRejected(RejectReason.READ_ERROR, f"{rel!r}: {type(exc).__name__}: {exc.strerror or 'I/O error'}")


def _read_local(root: str, rel: str, max_bytes: int, limit_name: str) -> bytes:
    real_root = os.path.realpath(root)
    path = os.path.join(real_root, *rel.split("/"))
    try:
        os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise StickerRejected(RejectReason.MISSING_FILE, f"no such file in the drop: {rel!r}") from None
    except OSError as exc:
        raise _os_error(rel, exc) from None
    real = os.path.realpath(path)
    if not within(real, real_root):  # checked before the target is touched at all
        raise StickerRejected(RejectReason.SYMLINK_ESCAPE,
                              f"{rel!r} is a symbolic link (or lies under one) that resolves outside the drop")
    try:
        st = os.stat(real)
    except (FileNotFoundError, NotADirectoryError):
        raise StickerRejected(RejectReason.MISSING_FILE, f"{rel!r} is a symbolic link to nothing") from None
    except OSError as exc:
        raise _os_error(rel, exc) from None
    if not stat.S_ISREG(st.st_mode):  # before open(): opening a FIFO for reading blocks until a writer comes
        raise StickerRejected(RejectReason.NOT_REGULAR_FILE, f"{rel!r} is {kind_of(st.st_mode)}, not a regular file")
    if st.st_size > max_bytes:  # cheap early exit; the capped read below is what enforces the limit
        raise _too_large(rel, st.st_size, max_bytes, limit_name)
    try:
        fd = os.open(real, _OPEN_FLAGS)  # O_NOFOLLOW: a final component swapped for a link fails (ELOOP)
    except OSError as exc:
        raise _os_error(rel, exc) from None
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise StickerRejected(RejectReason.NOT_REGULAR_FILE, f"{rel!r} was replaced while being opened")
        if _PROC_FD and not within(os.readlink(f"/proc/self/fd/{fd}"), real_root):
            # a folder above it was swapped for a symlink between the check and the open
            raise StickerRejected(RejectReason.SYMLINK_ESCAPE, f"{rel!r} was moved outside the drop while being opened")
        return _read_capped(lambda n: os.read(fd, n), rel, max_bytes, limit_name)
    except OSError as exc:
        raise _os_error(rel, exc) from None
    finally:
        os.close(fd)


def _read_fsspec(fs, path: str, rel: str, max_bytes: int, limit_name: str) -> bytes:
    try:
        info = fs.info(path)
    except FileNotFoundError:
        raise StickerRejected(RejectReason.MISSING_FILE, f"no such file in the drop: {rel!r}") from None
    except Exception as exc:  # noqa: BLE001 - object-store clients raise their own error types
        raise StickerRejected(RejectReason.READ_ERROR, f"{rel!r}: {type(exc).__name__}: {exc}"[:300]) from None
    if info.get("type") != "file":
        raise StickerRejected(RejectReason.NOT_REGULAR_FILE, f"{rel!r} is a {info.get('type')!s}, not a file")
    size = info.get("size")
    if isinstance(size, int) and size > max_bytes:
        raise _too_large(rel, size, max_bytes, limit_name)
    try:
        with fs.open(path, "rb") as fh:
            return _read_capped(fh.read, rel, max_bytes, limit_name)
    except StickerRejected:
        raise
    except FileNotFoundError:
        raise StickerRejected(RejectReason.MISSING_FILE, f"no such file in the drop: {rel!r}") from None
    except Exception as exc:  # noqa: BLE001
        raise StickerRejected(RejectReason.READ_ERROR, f"{rel!r}: {type(exc).__name__}: {exc}"[:300]) from None
