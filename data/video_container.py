"""Container-level checks for video stickers, run before a native decoder sees the bytes.

Why: decord and FFmpeg decode what they can of a damaged file, and decord is not robust against hostile
containers at all. ``tests/data/test_fuzz.py`` found three ways to take a process down from decord's
``VideoReader`` constructor:

* an MP4 whose chunk offset (``stco``) or sample size (``stsz``) points past the end of the data: decord's
  reader for file-like objects copies past its buffer (segfault). Over a real file FFmpeg's own I/O
  returns EOF instead, so decord reads a temporary file (:func:`open_decord`);
* a WebM whose Duration is absurd (one flipped bit: 1.3e12 ms): decord sizes its frame index from
  duration x frame rate and dies in ``std::bad_alloc``; :func:`claimed_frames` lets the caller refuse
  such a claim from PyAV's header probe first.

Truncation is detected here too: both libraries happily decode a cut-off file (fewer frames, a torn last
frame).
"""

from __future__ import annotations

import os
import struct
import tempfile


def bmff_truncation(data: bytes) -> str | None:
    """Walk top-level ISO-BMFF boxes; a box running past EOF means the file was cut short."""
    pos = 0
    while pos + 8 <= len(data):
        size, box = struct.unpack(">I4s", data[pos : pos + 8])
        if size == 1:  # 64-bit largesize follows the type
            if pos + 16 > len(data):
                return f"box {box!r} header cut at offset {pos}"
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
        elif size == 0:  # box extends to end of file
            return None
        if size < 8 or pos + size > len(data):
            return f"box {box!r} at offset {pos} has size {size}, only {len(data) - pos} bytes left"
        pos += size
    return None


def ebml_vint(data: bytes, pos: int, keep_marker: bool) -> tuple[int, int, bool]:
    """Read an EBML variable-length integer: (value, new_pos, all_value_bits_set)."""
    if pos >= len(data) or data[pos] == 0:
        raise ValueError(f"bad EBML vint at offset {pos}")
    length = 9 - data[pos].bit_length()
    if pos + length > len(data):
        raise ValueError(f"EBML vint at offset {pos} cut short")
    value, all_ones = int.from_bytes(data[pos : pos + length], "big"), (1 << (7 * length)) - 1
    return (value if keep_marker else value & all_ones), pos + length, value & all_ones == all_ones


def ebml_truncation(data: bytes) -> str | None:
    """A Matroska Segment whose declared size exceeds the rest of the file was cut short.
    Seekable muxers back-patch the size; live streams write 'unknown' and cannot be checked."""
    try:
        _, pos, _ = ebml_vint(data, 0, keep_marker=True)  # EBML header ID
        size, pos, _ = ebml_vint(data, pos, keep_marker=False)
        seg_id, pos, _ = ebml_vint(data, pos + size, keep_marker=True)
        if seg_id != 0x18538067:
            return f"expected a Segment after the EBML header, found element 0x{seg_id:X}"
        size, pos, unknown = ebml_vint(data, pos, keep_marker=False)
    except ValueError as e:
        return str(e)
    return (
        None if unknown or pos + size <= len(data) else f"Segment needs {size} bytes, {len(data) - pos} left"
    )


def claimed_frames(container) -> int:
    """Frames a PyAV-opened container claims for its first video stream: the sample count where the container
    has one (MP4), else duration x frame rate (Matroska/WebM has no frame count). 0 when unknown."""
    stream = container.streams.video[0]
    n = int(stream.frames or 0)
    rate = stream.average_rate or stream.guessed_rate
    if container.duration and rate:
        n = max(n, int(container.duration / 1_000_000 * float(rate)))  # duration is in AV_TIME_BASE (us)
    return n


def open_decord(data: bytes, suffix: str):
    """A ``decord.VideoReader`` over ``data``, read through a temporary file (see the module docstring).

    The file is unlinked at once: the reader keeps its own descriptor, and nothing lingers on a crash.
    One decoder thread: ingest parallelises across processes.
    """
    import decord

    fd, path = tempfile.mkstemp(prefix="rdtf-decode-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    finally:
        os.unlink(path)
