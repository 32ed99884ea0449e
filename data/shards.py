"""WebDataset training shards: writer, per-drop shard index, reader, verifier.

Why: training (torchrun, DDP) streams clips from many drops; tar shards are read sequentially
(cheap on local disk, NFS and object stores) and drops mix by listing their shards. One drop
writes ``{split}-000000.tar, {split}-000001.tar, ...`` plus ``index.json``.

Sample layout (one sample = consecutive tar members sharing the key; webdataset splits a member
name on its *first* dot, so keys are restricted to ``[A-Za-z0-9_-]``, at most 80 characters so
every member name fits a plain ustar header)::

    <key>.frames.000.webp   frames 0..62 stacked vertically into one (63*S, S) lossless image
    <key>.frames.001.webp   frames 63..125, ... (WebP caps a side at 16383 px: 16383 // S frames)
    <key>.json              meta + "n_frames", "frame_size", "encoding"
    <key>.txt               caption, UTF-8

With ``FrameEncoding.NPY`` the frames are one ``<key>.frames.npy`` (np.save of (F, S, S, 3) uint8);
``PNG`` uses the same strip entries as WebP, as ``.png``.

Why strips, not a member per frame: each member costs a 512-byte header plus padding (~770
B/frame, a sizeable fraction of a compressed frame), and in a strip WebP's LZ77 can reference the
previous frame, so small motion is almost free. Training decodes whole clips anyway.

Encoding choice, measured by ``python -m benchmarks.frame_encoding --frames 300 --repeat 3`` (256x256
flat-colour cartoon frames, anti-aliased outlines and text, clips of <= 8 frames with small
motion; Pillow 13 / libwebp, one core of a 2-core VM; per frame; every variant round-trips
bit-exactly; "tar B" includes member headers and padding)::

    | encoding        | B/frame | tar B/frame | vs npy | encode ms | decode ms |
    |-----------------|--------:|------------:|-------:|----------:|----------:|
    | npy             |  196624 |      196738 |   1.0x |      0.04 |     0.025 |
    | png-1/frame     |   13133 |       13909 |  14.1x |      1.42 |     0.604 |
    | png-6/frame     |   11626 |       12387 |  15.9x |      2.32 |     0.818 |
    | webp-m0/frame   |   13694 |       14445 |  13.6x |      1.31 |     0.726 |
    | webp-m4/frame   |    6199 |        6967 |  28.2x |     11.72 |     0.769 |
    | png-1/strip     |   13087 |       13186 |  14.9x |      1.80 |     0.670 |
    | png-6/strip     |   11506 |       11599 |  17.0x |      2.27 |     0.693 |
    | webp-m0/strip   |    7856 |        7953 |  24.7x |      1.45 |     0.586 |
    | webp-m4/strip   |    4211 |        4303 |  45.7x |     11.74 |     0.357 |

Default: ``WEBP`` (lossless, method 4, strips): the fastest-decoding compressed codec and 3x
smaller than PNG. NPY decodes ~14x faster but is 46x larger; 0.36 ms/frame is ~2800 frames/s per
DataLoader worker, far more than a 256^2 video-diffusion step consumes, while NPY's 197 KB/frame
(~160 GB for 100k 8-frame stickers) falls out of the page cache and is re-read every epoch -- at
1 GB/s that is 0.2 ms/frame of I/O alone. The 11.7 ms/frame encode is paid once per drop. NPY
remains for tiny debug sets or CPU-starved hosts, PNG (level 1: decodes faster than level 6 in
every run, ~13 % larger) for tools without WebP. A rerun gave the same sizes, timings within ~20 %.

Determinism: members are written in a fixed order with fixed mtime/uid/gid/uname/gname/mode (plain
USTAR headers, one 512-byte block per member; mtime is truncated to whole seconds) and
meta is JSON with sorted keys, so the same samples give byte-identical tars (for the same Pillow/
libwebp/zlib versions). Shards are cut *before* a sample would push the finished tar past
``max_bytes`` (the final tar size is computed exactly), or after ``max_count`` samples.

Atomicity: each tar is written as ``.{name}.tmp`` (hidden, not ``*.tar``) and renamed on
completion; ``index.json`` is written last, also via temp + rename, and is the commit record:
readers only ever open shards the index lists, so a killed run's temp file is invisible, and
``verify_shards`` catches a shard replaced by a later, unfinished re-run (sha256/size mismatch).
One writer per (out_dir, split) at a time.

How training consumes it: ``shard_urls(index_paths, "train")`` gives absolute shard paths over
all drops in a stable order; ``make_dataset(urls, shuffle=..., seed=...)`` yields
``decode_sample`` dicts. Shards are dealt out per DDP rank (``split_by_node``: RANK/WORLD_SIZE or
torch.distributed) and then per DataLoader worker (``split_by_worker``); shuffling happens after
that, so each rank+worker owns a fixed 1/(world*workers) subset of shards. Keep the shard count
a multiple of world_size*num_workers (or add ``.with_epoch(n)``) so ranks do not run uneven
epochs; a worker with no shard simply yields nothing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from data.atomic import atomic_write, fsync_dir, temp_name
from data.storage import LakePath, is_remote, lake_path, open_read, put_file, scratch_dir

SPLITS = ("train", "test")
INDEX_NAME = "index.json"
INDEX_VERSION = 1
MAX_KEY_LEN = 80  # key + ".frames.000.webp" stays inside ustar's 100-byte name field
WEBP_MAX_SIDE = 16383  # libwebp's hard limit on either image side
WEBP_METHOD = 4  # see table: smallest and fastest to decode; encode cost paid once
PNG_LEVEL = 1  # decodes faster than level 6 in every run (see table); only ~13 % larger
TAR_USER = "rdtf"  # fixed owner so tars do not depend on who ran the job
_BLOCK = 512
_RECORD = 20 * _BLOCK  # tarfile pads a finished archive to this
_KEY_RE = re.compile(rf"^[A-Za-z0-9_-]{{1,{MAX_KEY_LEN}}}$")
_SHARD_RE = re.compile(r"^(train|test)-(\d{6})\.tar$")


class FrameEncoding(str, Enum):  # noqa: UP042 - value is stored in json meta
    NPY = "npy"
    PNG = "png"
    WEBP = "webp"  # lossless WebP


@dataclass
class ShardSample:
    key: str  # unique id, [A-Za-z0-9_-]{1,80}, no dots
    frames: np.ndarray  # (F, S, S, 3) uint8
    caption: str  # training caption (may be empty)
    meta: dict  # JSON-serialisable sticker metadata (id, drop_id, durations_ms, fps, reps, split, ...)


@dataclass
class ShardInfo:
    name: str  # file name inside out_dir, e.g. "train-000003.tar"
    split: str  # "train" or "test"
    count: int  # number of samples
    bytes: int  # exact file size
    sha256: str  # hex digest of the whole file
    keys_first: str  # key of the first sample
    keys_last: str  # key of the last sample


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; allowed: {', '.join(SPLITS)}")


def _json_default(o: Any) -> Any:
    # Upstream code often leaves numpy scalars/arrays in meta; store them as plain JSON.
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def frames_per_entry(size: int) -> int:
    """Frames stacked into one PNG/WebP member (WebP caps each side at 16383 px)."""
    return max(1, WEBP_MAX_SIDE // size)


def encode_sample(sample: ShardSample, encoding: FrameEncoding) -> dict[str, bytes]:
    """Validate a sample and return its tar members (suffix -> bytes); ValueError when invalid."""
    encoding = FrameEncoding(encoding)
    key, frames = sample.key, sample.frames
    if not isinstance(key, str) or not _KEY_RE.match(key):
        raise ValueError(f"unsafe sample key {key!r}: need 1-{MAX_KEY_LEN} chars of [A-Za-z0-9_-] (no dots)")
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8:
        got = frames.dtype if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ValueError(f"sample {key}: frames must be a uint8 numpy array, got {got}")
    if frames.ndim != 4 or frames.shape[0] < 1 or frames.shape[1] != frames.shape[2] or frames.shape[3] != 3:
        raise ValueError(f"sample {key}: frames must have shape (F>=1, S, S, 3), got {frames.shape}")
    if frames.shape[1] < 1 or (encoding is FrameEncoding.WEBP and frames.shape[1] > WEBP_MAX_SIDE):
        raise ValueError(f"sample {key}: frame size {frames.shape[1]} not storable as {encoding.value}")
    if not isinstance(sample.caption, str) or not isinstance(sample.meta, dict):
        raise ValueError(f"sample {key}: caption must be a str and meta a dict")
    n, size = int(frames.shape[0]), int(frames.shape[1])
    derived = {"n_frames": n, "frame_size": size, "encoding": encoding.value}
    for field, value in derived.items():
        if field in sample.meta and sample.meta[field] != value:
            raise ValueError(f"sample {key}: meta[{field!r}]={sample.meta[field]!r} contradicts frames")
    try:  # sorted keys, no NaN: the same meta always gives the same bytes
        meta = json.dumps({**sample.meta, **derived}, sort_keys=True, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"sample {key}: meta is not JSON-serialisable: {exc}") from exc

    frames = np.ascontiguousarray(frames)
    members = {"json": meta.encode(), "txt": sample.caption.encode("utf-8")}
    if encoding is FrameEncoding.NPY:
        buf = io.BytesIO()
        np.save(buf, frames, allow_pickle=False)
        members["frames.npy"] = buf.getvalue()
        return members
    from PIL import Image

    per = frames_per_entry(size)
    for i, start in enumerate(range(0, n, per)):
        img = Image.fromarray(frames[start : start + per].reshape(-1, size, 3))  # (f*S, S, 3) -> RGB
        buf = io.BytesIO()
        if encoding is FrameEncoding.WEBP:
            img.save(buf, "WEBP", lossless=True, method=WEBP_METHOD, quality=80, exact=True)
        else:
            img.save(buf, "PNG", compress_level=PNG_LEVEL)
        members[f"frames.{i:03d}.{encoding.value}"] = buf.getvalue()
    return members


def decode_sample(sample: dict) -> dict:
    """Raw webdataset sample (suffix -> bytes) -> {"key", "frames" (F,S,S,3) uint8, "caption", "meta"}."""
    key = sample.get("__key__", "?")
    if "json" not in sample:
        raise ValueError(f"sample {key}: no json member")
    meta = json.loads(sample["json"])
    caption = sample["txt"].decode("utf-8") if "txt" in sample else ""
    n, size, enc = int(meta["n_frames"]), int(meta["frame_size"]), FrameEncoding(meta["encoding"])
    if enc is FrameEncoding.NPY:
        if "frames.npy" not in sample:
            raise ValueError(f"sample {key}: no frames.npy member")
        frames = np.load(io.BytesIO(sample["frames.npy"]), allow_pickle=False)
    else:
        from PIL import Image

        # Member order within a sample is not guaranteed by every reader: sort by chunk number.
        chunks = sorted(
            (int(k.split(".")[1]), k)
            for k in sample
            if k.startswith("frames.") and k.endswith("." + enc.value)
        )
        if not chunks:
            raise ValueError(f"sample {key}: no frames.*.{enc.value} members")
        parts = []
        for _, k in chunks:
            with Image.open(io.BytesIO(sample[k])) as im:
                parts.append(np.asarray(im if im.mode == "RGB" else im.convert("RGB")))
        frames = np.concatenate(parts, axis=0)  # (F*S, S, 3), a fresh writable array
        if frames.shape[0] % max(size, 1) or frames.shape[1] != size:
            raise ValueError(f"sample {key}: strip shape {frames.shape} does not tile {size}x{size} frames")
        frames = frames.reshape(-1, size, size, 3)  # (F, S, S, 3)
    if frames.dtype != np.uint8 or frames.shape != (n, size, size, 3):
        raise ValueError(
            f"sample {key}: decoded {frames.dtype}{frames.shape}, meta says ({n}, {size}, {size}, 3)"
        )
    return {"key": key, "frames": frames, "caption": caption, "meta": meta}


def _member_bytes(n: int) -> int:
    return _BLOCK + _BLOCK * -(-n // _BLOCK)  # header + data padded to a block


def _final_size(payload: int) -> int:
    # tarfile ends a stream with two zero blocks and pads to a whole 10 KiB record.
    return -(-(payload + 2 * _BLOCK) // _RECORD) * _RECORD


class _HashingFile:
    """File wrapper that hashes and counts what tarfile writes, so no second read is needed."""

    def __init__(self, f: io.BufferedWriter):
        self.f, self.h, self.n = f, hashlib.sha256(), 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        self.n += len(b)
        return self.f.write(b)


class _OpenShard:
    """One tar being written under its temp name.

    Written with ``tarfile`` in USTAR format rather than webdataset's TarWriter: TarWriter 1.0.x
    ignores its ``format`` argument (Python's default is PAX) and a float mtime then adds a 1 KiB
    pax extended header to every member -- more than a compressed 256^2 frame strip.
    """

    def __init__(self, out_dir: LakePath, split: str, number: int, mtime: float):
        self.name = f"{split}-{number:06d}.tar"
        self.remote = is_remote(out_dir)
        # on an object store the tar is staged on local scratch disk and uploaded in one PUT on close
        self.final = out_dir / self.name
        self.tmp = scratch_dir() / temp_name(self.name) if self.remote else out_dir / f".{self.name}.tmp"
        self.split, self.count, self.payload, self.mtime = split, 0, 0, int(mtime)
        self.first = self.last = ""
        self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in close()/abort()
        self.hashing = _HashingFile(self.file)
        # Stream mode ("w|") only ever calls write(), so the hash sees every byte exactly once.
        self.tar = tarfile.open(fileobj=self.hashing, mode="w|", format=tarfile.USTAR_FORMAT)

    def write(self, key: str, members: dict[str, bytes], size: int) -> None:
        for suffix in sorted(members):  # fixed member order -> reproducible bytes
            data = members[suffix]
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), self.mtime, 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = TAR_USER
            self.tar.addfile(info, io.BytesIO(data))
        self.count, self.payload, self.last = self.count + 1, self.payload + size, key
        self.first = self.first or key

    def close(self) -> ShardInfo:
        self.tar.close()
        self.file.flush()
        os.fsync(self.file.fileno())  # data on disk before the name says "complete"
        self.file.close()
        if self.remote:
            put_file(self.tmp, self.final)
            self.tmp.unlink()
        else:
            os.replace(self.tmp, self.final)
        digest = self.hashing.h.hexdigest()
        return ShardInfo(self.name, self.split, self.count, self.hashing.n, digest, self.first, self.last)

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # close now, or tarfile's finaliser writes to a closed file
            self.tar.close()
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def write_shards(
    samples: Iterable[ShardSample],
    out_dir: str | Path,
    split: str,
    *,
    encoding: FrameEncoding = FrameEncoding.WEBP,
    max_count: int = 1000,
    max_bytes: int = 512 << 20,
    mtime: float = 0.0,
) -> list[ShardInfo]:
    """Write ``out_dir/{split}-NNNNNN.tar`` shards; return their infos (feed them to write_index).

    A shard is closed when it holds ``max_count`` samples or the next sample would make the tar
    exceed ``max_bytes`` (a single larger sample still gets its own shard). Stale temp files and
    higher-numbered shards of this split left by an earlier run are removed.
    """
    _check_split(split)
    encoding = FrameEncoding(encoding)
    if max_count < 1 or max_bytes < 1:
        raise ValueError(f"max_count and max_bytes must be positive, got {max_count}, {max_bytes}")
    if not 0 <= mtime < 8**11:
        raise ValueError(f"mtime must fit a ustar header (0 <= mtime < 8**11), got {mtime}")
    out = lake_path(out_dir)
    if not is_remote(out):
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(f".{split}-*.tar.tmp"):  # a killed run's partial shard
            stale.unlink(missing_ok=True)

    infos: list[ShardInfo] = []
    seen: set[str] = set()
    shard: _OpenShard | None = None
    try:
        for sample in samples:
            members = encode_sample(sample, encoding)
            if sample.key in seen:
                raise ValueError(f"duplicate sample key {sample.key!r} in split {split!r}")
            seen.add(sample.key)
            size = sum(_member_bytes(len(v)) for v in members.values())
            if shard is not None and (
                shard.count >= max_count or _final_size(shard.payload + size) > max_bytes
            ):
                infos.append(shard.close())
                shard = None
            if shard is None:
                shard = _OpenShard(out, split, len(infos), mtime)
            shard.write(sample.key, members, size)
        if shard is not None:
            infos.append(shard.close())
            shard = None
    finally:
        if shard is not None:
            shard.abort()
    # A previous, longer run's tail would look like valid shards to anyone globbing the folder.
    for path in out.glob(f"{split}-*.tar"):
        m = _SHARD_RE.match(path.name)
        if m and int(m.group(2)) >= len(infos):
            path.unlink(missing_ok=True)
    if not is_remote(out):
        fsync_dir(out)
    return infos


def write_index(infos: list[ShardInfo], out_dir: str | LakePath, *, extra: dict | None = None) -> LakePath:
    """Write ``out_dir/index.json`` atomically; shards of each split must be numbered 0..n-1."""
    shards = sorted(infos, key=lambda i: (i.split, i.name))
    brace: dict[str, str] = {}
    counts = {s: 0 for s in SPLITS}
    for split in SPLITS:
        mine = [i for i in shards if i.split == split]
        if [i.name for i in mine] != [f"{split}-{n:06d}.tar" for n in range(len(mine))]:
            raise ValueError(
                f"{split} shards must be numbered consecutively from 0: {[i.name for i in mine]}"
            )
        if mine:
            brace[split] = f"{split}-{{{0:06d}..{len(mine) - 1:06d}}}.tar"
        counts[split] = sum(i.count for i in mine)
    doc = {"version": INDEX_VERSION, "shards": [asdict(i) for i in shards], "brace": brace, "counts": counts}
    clash = set(extra or {}) & set(doc)
    if clash:
        raise ValueError(f"extra index fields clash with reserved ones: {sorted(clash)}")
    doc.update(extra or {})
    return atomic_write(lake_path(out_dir) / INDEX_NAME, json.dumps(doc, indent=2, sort_keys=True, default=_json_default) + "\n")


def _index_file(path: str | LakePath) -> LakePath:
    p = lake_path(path)
    return p if p.name == INDEX_NAME else p / INDEX_NAME if p.is_dir() else p


def read_index(path: str | LakePath) -> dict:
    """Load an index.json (or the index.json inside a directory)."""
    p = _index_file(path)
    doc = json.loads(p.read_text())
    if doc.get("version") != INDEX_VERSION:
        raise ValueError(f"{p}: unsupported shard index version {doc.get('version')!r}")
    return doc


def shard_urls(index_paths: Iterable[str | LakePath], split: str) -> list[str]:
    """Absolute shard paths (or fsspec URLs) of ``split`` over many drops' indexes: indexes by path, shards by name."""
    _check_split(split)
    urls: list[str] = []
    found = {_index_file(p) for p in index_paths}
    resolved = {p.resolve() if isinstance(p, Path) else p for p in found}
    for index in sorted(resolved, key=str):
        doc = read_index(index)
        urls += sorted(str(index.parent / s["name"]) for s in doc["shards"] if s["split"] == split)
    return urls


def _scan(path: LakePath) -> tuple[list[str], list[str]]:
    """Keys of the samples in a tar (in order) and problems found decoding them."""
    keys: list[str] = []
    problems: list[str] = []
    current: dict[str, Any] = {}

    def flush() -> None:
        if current:
            try:
                decode_sample(current)
            except Exception as exc:  # noqa: BLE001 - any failure is a finding, not a crash
                problems.append(f"{path.name}: sample {current['__key__']} does not decode: {exc}")
            current.clear()

    try:
        with open_read(path) as fh, tarfile.open(fileobj=fh, mode="r|") as tar:
            for member in tar:
                if not member.isfile() or "." not in member.name:
                    problems.append(f"{path.name}: unexpected member {member.name!r}")
                    continue
                key, suffix = member.name.split(".", 1)
                if current.get("__key__") != key:
                    flush()
                    if key in keys:
                        problems.append(f"{path.name}: key {key} appears in non-adjacent members")
                    keys.append(key)
                    current["__key__"] = key
                current[suffix.lower()] = tar.extractfile(member).read()
            flush()
    except (tarfile.TarError, EOFError, OSError) as exc:
        problems.append(f"{path.name}: unreadable tar: {exc}")
    return keys, problems


def verify_shards(index_path: str | LakePath) -> list[str]:
    """Re-open every shard in an index; return human-readable problems (empty list = all good)."""
    index = _index_file(index_path)
    try:
        doc = read_index(index)
    except (OSError, ValueError) as exc:
        return [f"{index}: unreadable index: {exc}"]
    problems: list[str] = []
    totals = {s: 0 for s in SPLITS}
    for s in doc["shards"]:
        path = index.parent / s["name"]
        totals[s["split"]] = totals.get(s["split"], 0) + s["count"]
        if not path.is_file():
            problems.append(f"{s['name']}: missing")
            continue
        size = path.stat().st_size
        if size != s["bytes"]:
            problems.append(f"{s['name']}: size {size} != index {s['bytes']}")
        with open_read(path) as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        if digest != s["sha256"]:
            problems.append(f"{s['name']}: sha256 mismatch")
        keys, found = _scan(path)
        problems += found
        if len(keys) != s["count"]:
            problems.append(f"{s['name']}: {len(keys)} samples, index says {s['count']}")
        elif keys and (keys[0], keys[-1]) != (s["keys_first"], s["keys_last"]):
            problems.append(f"{s['name']}: first/last keys {keys[0]}/{keys[-1]} != index")
    for split, n in totals.items():
        if doc.get("counts", {}).get(split, 0) != n:
            problems.append(f"counts[{split!r}]={doc.get('counts', {}).get(split)} but shards hold {n}")
    return problems
