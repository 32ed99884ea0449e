"""Mutation fuzzing of the parsers of untrusted input: the sticker decoders and the caption tables.

Shared by ``tests/data/test_fuzz.py`` (Hypothesis, a fixed deterministic budget in CI) and ``benchmarks/fuzz.py``
(seeded random mutations, any budget). Mutations are plain tuples, so Hypothesis can generate and shrink them
and ``random.Random`` can draw them alike:

    ("flip", pos, bit)            flip one bit
    ("truncate", pos)             cut the file at pos
    ("insert", pos, data)         insert bytes
    ("delete", pos, n)            delete n bytes
    ("splice", src, dst, n)       copy n bytes from src over dst (chunks moved around: frames, boxes, rows)
    ("dup", pos, n)               insert a copy of n bytes at pos (repeated chunks / frames)
    ("field", k, value)           overwrite header field k of the format (canvas size, frame count, ...)

Positions are taken modulo the length, so any integers are valid. Every example runs in a long-lived spawn
worker (:class:`Runner`): a native crash kills only the worker (restarted, reported as ``crash``) and an
example over the deadline has its worker killed (``hang``), so neither takes the test process down.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import random
import traceback
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import NamedTuple

STICKER_FORMATS = ("gif", "webp", "apng", "mp4", "webm")
TABLE_FORMATS = ("jsonl", "csv", "parquet")
FUZZ_SIZE = 32  # output frame size: small, the decoders' parsing is what is fuzzed
# tighter than the defaults so a mutated canvas size costs milliseconds, not seconds; the limit paths
# (pixel_limit, too_many_frames, ...) are exercised all the same
FUZZ_LIMITS = {"max_frames": 64, "min_frames": 2, "max_frame_pixels": 1024 * 1024, "max_total_pixels": 1 << 24}

# (marker, offset from the marker, width in bytes, byte order): header fields worth lying about, per format
HEADER_FIELDS: dict[str, list[tuple[bytes, int, int, str]]] = {
    "gif": [(b"GIF8", 6, 2, "little"), (b"GIF8", 8, 2, "little"), (b"GIF8", 10, 1, "little"),  # screen, flags
            (b"\x2c\x00\x00", 5, 2, "little"), (b"\x2c\x00\x00", 7, 2, "little"),  # first frame's size
            (b"\x21\xf9\x04", 4, 2, "little"), (b"NETSCAPE2.0", 13, 2, "little")],  # delay, loops
    "webp": [(b"RIFF", 4, 4, "little"), (b"VP8X", 12, 3, "little"), (b"VP8X", 15, 3, "little"),  # canvas - 1
             (b"ANMF", 4, 4, "little"), (b"ANMF", 14, 3, "little"), (b"ANMF", 17, 3, "little"),  # frame size
             (b"ANMF", 20, 3, "little"), (b"VP8L", 4, 4, "little")],
    "apng": [(b"IHDR", 4, 4, "big"), (b"IHDR", 8, 4, "big"), (b"acTL", 4, 4, "big"),  # canvas, num_frames
             (b"acTL", 8, 4, "big"), (b"fcTL", 8, 4, "big"), (b"fcTL", 12, 4, "big"),  # frame w/h
             (b"fcTL", 16, 4, "big"), (b"fcTL", 24, 2, "big"), (b"fdAT", -4, 4, "big")],  # x, delay, chunk len
    "mp4": [(b"ftyp", -4, 4, "big"), (b"mvhd", 16, 4, "big"), (b"tkhd", 80, 4, "big"),  # timescale, width
            (b"tkhd", 84, 4, "big"), (b"avc1", 28, 2, "big"), (b"avc1", 30, 2, "big"),  # coded size
            (b"stsz", 12, 4, "big"), (b"stts", 8, 4, "big"), (b"stco", 8, 4, "big"), (b"mdat", -4, 4, "big")],
    "webm": [(b"\x18\x53\x80\x67", 4, 8, "big"), (b"\xb0\x81", 2, 1, "big"), (b"\xb0\x82", 2, 2, "big"),
             (b"\xba\x81", 2, 1, "big"), (b"\xba\x82", 2, 2, "big"), (b"\x2a\xd7\xb1", 4, 3, "big"),
             (b"\x1f\x43\xb6\x75", 4, 8, "big"), (b"\xa3", 1, 1, "big")],  # cluster size, SimpleBlock size
}


class Outcome(NamedTuple):
    kind: str  # ok | rejected | crash | hang
    detail: str  # reject reason, or what went wrong


# ------------------------------------------------------------------------------------------ seeds


def sticker_seeds() -> dict[str, bytes]:
    """One small valid sticker per format (3 distinct 16x16 frames; the image formats with alpha)."""
    import numpy as np

    from data.media import MediaFormat
    from data.media_encode import encode_animated, encode_video

    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (3, 16, 16, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rgba[..., 3] > 64, 255, 0)
    out = {f: encode_animated(list(rgba), [40, 60, 80], MediaFormat(f)) for f in ("gif", "webp", "apng")}
    for f in ("mp4", "webm"):
        out[f] = encode_video(np.ascontiguousarray(rgba[..., :3]), 10.0, MediaFormat(f))
    return out


# ------------------------------------------------------------------------------------------ mutations


def mutate(data: bytes, ops: list[tuple], fmt: str) -> bytes:
    buf = bytearray(data)
    for op in ops:
        n = len(buf)
        kind = op[0]
        if kind == "flip" and n:
            buf[op[1] % n] ^= 1 << (op[2] % 8)
        elif kind == "truncate":
            del buf[op[1] % (n + 1):]
        elif kind == "insert":
            buf[op[1] % (n + 1):op[1] % (n + 1)] = op[2]
        elif kind == "delete" and n:
            p = op[1] % n
            del buf[p:p + op[2]]
        elif kind == "splice" and n:
            src, dst = op[1] % n, op[2] % n
            chunk = bytes(buf[src:src + op[3]])
            buf[dst:dst + len(chunk)] = chunk
        elif kind == "dup" and n:
            p = op[1] % n
            buf[p:p] = buf[p:p + op[2]]
        elif kind == "field":
            fields = HEADER_FIELDS.get(fmt) or [(b"", 0, 4, "little")]
            marker, off, width, order = fields[op[1] % len(fields)]
            at = buf.find(marker) if marker else 0
            if at >= 0 and 0 <= at + off and at + off + width <= n:
                buf[at + off:at + off + width] = (op[2] % (1 << (8 * width))).to_bytes(width, order)
    return _fix_png_crcs(bytes(buf)) if fmt == "apng" else bytes(buf)


def _fix_png_crcs(data: bytes) -> bytes:
    """Recompute the CRC of every complete PNG chunk: Pillow checks them, so without this nearly every mutated
    APNG stops at the first CRC error instead of reaching the frame logic behind it."""
    import struct
    import zlib

    buf, pos = bytearray(data), 8
    while pos + 12 <= len(buf):
        (length,) = struct.unpack(">I", buf[pos:pos + 4])
        end = pos + 8 + length
        if end + 4 > len(buf):
            break
        buf[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(buf[pos + 4:end])))
        pos = end + 4
    return bytes(buf)


INTERESTING = (0, 1, 2, 3, 255, 256, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0xFFFFFFFF, (1 << 64) - 1)


def random_ops(rng: random.Random, max_ops: int = 4) -> list[tuple]:
    """The benchmark's mutation generator (the test draws the same shapes with Hypothesis)."""
    ops = []
    for _ in range(rng.randint(1, max_ops)):
        kind = rng.choice(("flip", "flip", "truncate", "insert", "delete", "splice", "dup", "field", "field"))
        pos = rng.randrange(1 << 16)
        if kind == "flip":
            ops.append((kind, pos, rng.randrange(8)))
        elif kind == "truncate":
            ops.append((kind, pos))
        elif kind == "insert":
            ops.append((kind, pos, rng.randbytes(rng.choice((1, 2, 4, 16, 300)))))
        elif kind in ("delete", "dup"):
            ops.append((kind, pos, rng.choice((1, 2, 4, 16, 100, 1000))))
        elif kind == "splice":
            ops.append((kind, pos, rng.randrange(1 << 16), rng.choice((4, 16, 64, 512))))
        else:
            ops.append((kind, rng.randrange(16), rng.choice(INTERESTING) if rng.random() < 0.7 else rng.randrange(1 << 32)))
    return ops


# ------------------------------------------------------------------------------------------ caption tables

ODD_FILES = ("a.gif", "sub/b.webp", "./c.png", "../x.gif", "a/../../x.gif", "/etc/passwd", "C:\\x.gif", "s3://b/x",
             "file:///etc/passwd", "x\x00.gif", "", " ", "..", "a" * 5000 + ".gif", "é/ñ 😀.gif", "\udcff.gif")
ODD_VALUES = (None, 0, -1, 7, 2**63, 1.5, float("nan"), True, [], ["x"], {"a": 1}, "", " ", "\t", "x" * 100_000,
              "\udc80\udcff", "\ud800", "a\x00b", "😀" * 50, "\u202e\u200b", "line\nbreak", '"quoted", with comma')


def serialize_table(rows: list[dict], fmt: str, rng_bytes: bytes = b"") -> bytes:
    """A caption table holding ``rows`` (any values); lone surrogates become invalid UTF-8 bytes."""
    if fmt == "jsonl":
        lines = []
        for r in rows:
            try:
                lines.append(json.dumps(r, ensure_ascii=False, allow_nan=True).encode("utf-8", "surrogatepass"))
            except (TypeError, ValueError):
                lines.append(repr(r).encode("utf-8", "surrogatepass"))
        return b"\n".join(lines) + b"\n" + rng_bytes
    if fmt == "csv":
        import csv

        cols = sorted({k for r in rows for k in r} | {"id", "file", "caption"})
        sio = io.StringIO()
        w = csv.writer(sio)
        w.writerow(cols)
        for r in rows:
            w.writerow(["" if r.get(c) is None else str(r.get(c)) for c in cols])
        return sio.getvalue().encode("utf-8", "surrogatepass") + rng_bytes
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {}
    for c in sorted({k for r in rows for k in r} | {"id", "file", "caption"}):
        vals = [r.get(c) for r in rows]
        c = c.encode("utf-8", "surrogatepass").decode("utf-8", "replace")  # Parquet column names must be UTF-8
        kinds = {type(v) for v in vals if v is not None}
        if kinds <= {int} and all(v is None or -(2**63) <= v < 2**63 for v in vals):
            cols[c] = pa.array(vals, pa.int64())
        elif kinds <= {str} and not any(v is not None and _surrogates(v) for v in vals):
            cols[c] = pa.array(vals, pa.string())
        else:  # mixed or undecodable: raw bytes, which the reader decodes with surrogateescape
            cols[c] = pa.array([None if v is None else str(v).encode("utf-8", "surrogatepass") for v in vals],
                               pa.binary())
    buf = io.BytesIO()
    pq.write_table(pa.table(cols) if cols else pa.table({"id": pa.array([], pa.string())}), buf)
    return buf.getvalue() + rng_bytes


def _surrogates(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def random_rows(rng: random.Random, n_max: int = 8) -> list[dict]:
    def value(pool):
        return rng.choice(pool) if rng.random() < 0.6 else "".join(
            chr(rng.choice((rng.randrange(32, 127), rng.randrange(0x80, 0x2FFF), rng.randrange(0xD800, 0xE000))))
            for _ in range(rng.randrange(12)))

    rows = []
    for i in range(rng.randrange(n_max + 1)):
        r = {"id": value((f"id{i}", f"id{i % 2}", *ODD_VALUES)), "file": value(ODD_FILES),
             "caption": value(ODD_VALUES)}
        if rng.random() < 0.2:
            del r[rng.choice(list(r))]
        if rng.random() < 0.1:
            r[value(("extra", "", "id "))] = value(ODD_VALUES)
        rows.append(r)
    return rows


# ------------------------------------------------------------------------------------------ worker side


def decode_case(data: bytes) -> Outcome:
    """Run in the worker: decode and check the result's invariants."""
    from data.media import DecodeLimits, decode_sticker
    from data.rejects import StickerRejected

    limits = DecodeLimits(**FUZZ_LIMITS)
    try:
        dec = decode_sticker(data, size=FUZZ_SIZE, limits=limits)
    except StickerRejected as exc:
        return Outcome("rejected", exc.reason.value)
    except Exception:  # noqa: BLE001 - exactly what the fuzzer looks for
        return Outcome("crash", traceback.format_exc(limit=-6))
    F = dec.frames.shape[0]
    problems = [
        dec.frames.shape != (F, FUZZ_SIZE, FUZZ_SIZE, 3) and f"frames shape {dec.frames.shape}",
        str(dec.frames.dtype) != "uint8" and f"dtype {dec.frames.dtype}",
        not (limits.min_frames <= F <= limits.max_frames) and f"{F} frames outside the limits",
        len(dec.durations_ms) != F and "one duration per frame",
        not all(isinstance(d, int) and d > 0 for d in dec.durations_ms) and f"durations {dec.durations_ms[:5]}",
        not (math.isfinite(dec.fps) and dec.fps > 0) and f"fps {dec.fps}",
        not (dec.width > 0 and dec.height > 0) and f"size {dec.width}x{dec.height}",
    ]
    bad = [p for p in problems if p]
    return Outcome("crash", "invariant violated: " + "; ".join(bad)) if bad else Outcome("ok", dec.format.value)


def caption_case(table: bytes, fmt: str) -> Outcome:
    """Run in the worker: parse a caption table from a memory:// drop and check the result's invariants."""
    import fsspec

    from data.drops import CaptionStatus, read_caption_table, safe_member_path

    root = f"memory://fuzz-captions/{uuid.uuid4().hex}"
    fs = fsspec.filesystem("memory")
    fs.pipe(f"{root}/captions.{fmt}", table)
    try:
        rows, rejects = read_caption_table(root)
    except Exception:  # noqa: BLE001
        return Outcome("crash", traceback.format_exc(limit=-6))
    finally:
        fs.rm(root.split("://", 1)[1], recursive=True)
    bad = []
    for r in rows:
        texts = (r.id, r.key, r.file, r.caption)
        if not all(isinstance(t, str) and _utf8(t) for t in texts):
            bad.append(f"row {r.row}: a field is not valid UTF-8 text (would break the Parquet manifest): {texts!r:.200}")
        elif safe_member_path(r.file) != r.file:
            bad.append(f"row {r.row}: file {r.file!r:.100} not normalised")
        if not isinstance(r.caption_status, CaptionStatus):
            bad.append(f"row {r.row}: caption_status {r.caption_status!r}")
    if len({r.id for r in rows}) != len(rows) or len({r.key for r in rows}) != len(rows):
        bad.append("duplicate ids or keys among the kept rows")
    if fmt == "jsonl" and any(j.row == 0 for j in rejects):  # line-oriented: one bad line must not sink the rest
        bad.append(f"one line made the whole jsonl table unreadable: {[j.message for j in rejects if j.row == 0]!r:.300}")
    for j in rejects:
        if not (isinstance(j.message, str) and _utf8(j.message) and len(j.message) <= 2000):
            bad.append(f"reject row {j.row}: message not short UTF-8 text: {j.message!r:.200}")
        if not all(v is None or (isinstance(v, str) and _utf8(v)) for v in (j.id, j.file)):
            bad.append(f"reject row {j.row}: id/file not UTF-8 text: {(j.id, j.file)!r:.200}")
    return Outcome("crash", "invariant violated: " + "; ".join(bad)) if bad else Outcome("ok", f"{len(rows)}+{len(rejects)}")


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _warm(quiet: bool = False) -> None:
    if quiet:  # decord/FFmpeg/Pillow write a line per broken packet to fd 2: thousands per run
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    import av  # the video decoders, imported lazily by data.media
    import decord  # noqa: F401

    av.logging.set_level(None)  # FFmpeg would print a line per broken packet: thousands per run
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import data.drops  # noqa: F401
    import data.media  # noqa: F401


# ------------------------------------------------------------------------------------------ parent side


class Runner:
    """Runs cases in one spawn worker: a crash or hang costs a restart, never the calling process."""

    def __init__(self, hang_s: float = 10.0, quiet: bool = False):
        self.hang_s = hang_s  # per-example deadline: longer is a hang
        self.quiet = quiet  # silence the worker's stderr (decoder chatter)
        self._pool: ProcessPoolExecutor | None = None
        self.restarts = 0

    def _start(self) -> ProcessPoolExecutor:
        from data.worker_guard import die_with_parent

        self._pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=die_with_parent,
                                         initargs=(os.getpid(),))
        self._pool.submit(_warm, self.quiet).result()
        return self._pool

    def run(self, fn, *args) -> Outcome:
        pool = self._pool or self._start()
        fut = pool.submit(fn, *args)
        try:
            return fut.result(timeout=self.hang_s)
        except TimeoutError:
            self._kill()
            return Outcome("hang", f"no result within {self.hang_s:g} s")
        except BrokenProcessPool:
            self._kill()
            return Outcome("crash", "the worker process died (native crash)")

    def _kill(self) -> None:
        if self._pool is not None:
            for p in list((getattr(self._pool, "_processes", None) or {}).values()):
                p.kill()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self.restarts += 1

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self) -> Runner:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
