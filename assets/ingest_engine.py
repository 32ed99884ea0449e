"""Ingest engine: decode every sticker of a drop once, in parallel, with bounded memory.

Pure Python (no Dagster): ``assets/ingest.py`` wraps it as a partitioned asset, the CLI and the
benchmark call it directly.

Design:
- Caption rows are validated first (``assets.drops``); bad rows become quarantine records.
- Stickers are decoded in worker processes (spawn context: safe next to Dagster's and torch's
  threads). At most ``workers * inflight_per_worker`` stickers are in flight and results are
  consumed *in submission order*, so memory does not grow with the drop and the output is
  byte-identical whatever the worker count.
- A decoder that crashes its process (possible with corrupt video streams in native code) breaks
  the pool; the engine then rebuilds it and retries the in-flight stickers one at a time, so only
  the culprit is quarantined (``decode_error``: "decoder crashed").
- Outputs are written to a fresh version folder and committed by replacing a pointer (``assets.publish``).
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
import os
import re
import time
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path

import fsspec
import pyarrow as pa
from tqdm.auto import tqdm

from assets import lake, publish
from assets.drops import CaptionPolicy, CaptionRow, join, read_caption_table, refuse_overlap
from assets.ids import validate_id
from model.media import DecodeLimits, Resample, decode_sticker
from model.rejects import RejectReason, StickerRejected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSettings:
    size: int = 256  # stored frame size (square, aspect kept with padding); 256 px as in the paper
    background: tuple[int, int, int] = (255, 255, 255)  # colour transparent pixels are composited onto
    resample: Resample = Resample.BICUBIC  # resize filter (bicubic | lanczos | bilinear)
    limits: DecodeLimits = field(default_factory=DecodeLimits)  # frame-count and pixel caps (decompression bombs)
    max_file_bytes: int = 64 << 20  # larger source files are rejected before reading
    caption_policy: CaptionPolicy = CaptionPolicy.KEEP_EMPTY  # missing/undecodable captions: keep or quarantine
    workers: int = 0  # decode processes; 0 = os.cpu_count(), 1 = decode in this process
    inflight_per_worker: int = 4  # bounded look-ahead per worker (memory bound)
    part_max_bytes: int = 256 << 20  # raw frame bytes per frames/part-*.parquet (memory is bounded by row groups)

    def __post_init__(self) -> None:
        if self.size < 16 or self.size > 2048:
            raise ValueError(f"size must be in [16, 2048], got {self.size}")
        if len(self.background) != 3 or not all(0 <= c <= 255 for c in self.background):
            raise ValueError(f"background must be an (r, g, b) triple of 0..255, got {self.background}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = all cores), got {self.workers}")


@dataclass
class IngestReport:
    drop_id: str
    drop_url: str
    out_dir: str
    n_rows: int = 0  # caption rows incl. bad ones
    n_ingested: int = 0
    n_rejected: int = 0
    rejects_by_reason: dict[str, int] = field(default_factory=dict)
    caption_status: dict[str, int] = field(default_factory=dict)
    formats: dict[str, int] = field(default_factory=dict)
    n_frames_total: int = 0
    n_alpha: int = 0
    n_parts: int = 0
    wall_s: float = 0.0
    frames_per_s: float = 0.0
    workers: int = 1

    @property
    def reject_rate(self) -> float:
        return self.n_rejected / self.n_rows if self.n_rows else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"reject_rate": self.reject_rate}


# ---------------------------------------------------------------- per-sticker work (runs in workers)


@dataclass
class _Task:
    row: CaptionRow
    url: str
    data: bytes | None  # pre-read bytes when the filesystem is process-local (memory://)
    read_error: StickerRejected | None = None  # parent-side read failure for pre-read tasks


def _read(url: str, max_bytes: int) -> bytes:
    fs, path = fsspec.core.url_to_fs(url)
    try:
        size = fs.size(path)
    except FileNotFoundError:
        raise StickerRejected(RejectReason.MISSING_FILE, f"no such file: {url}") from None
    except OSError as exc:
        raise StickerRejected(RejectReason.READ_ERROR, f"{type(exc).__name__}: {exc}") from None
    if size is not None and size > max_bytes:
        raise StickerRejected(RejectReason.FILE_TOO_LARGE, f"{size} bytes > max_file_bytes={max_bytes}")
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise StickerRejected(RejectReason.MISSING_FILE, f"no such file: {url}") from None
    except OSError as exc:
        raise StickerRejected(RejectReason.READ_ERROR, f"{type(exc).__name__}: {exc}") from None


def process_one(task: _Task, settings: IngestSettings) -> dict:
    """Read, hash and decode one sticker. Never raises: failures come back as a reject record."""
    try:
        if task.read_error is not None:
            raise task.read_error
        data = task.data if task.data is not None else _read(task.url, settings.max_file_bytes)
        if len(data) > settings.max_file_bytes:
            raise StickerRejected(RejectReason.FILE_TOO_LARGE, f"{len(data)} bytes > max_file_bytes")
        digest = hashlib.sha256(data).hexdigest()
        dec = decode_sticker(data, size=settings.size, background=settings.background, limits=settings.limits,
                             resample=settings.resample)
        return {
            "ok": True,
            "hash": digest,
            "n_bytes": len(data),
            "frames": dec.frames,  # (F, S, S, 3) uint8
            "durations_ms": [int(d) for d in dec.durations_ms],
            "fps": float(dec.fps),
            "width": int(dec.width),
            "height": int(dec.height),
            "has_alpha": bool(dec.has_alpha),
            "format": dec.format.value,
        }
    except StickerRejected as exc:
        return {"ok": False, "reason": exc.reason.value, "message": _stable_message(exc.message)}
    except Exception as exc:  # a decoder bug must not take the partition down
        return {"ok": False, "reason": RejectReason.DECODE_ERROR.value,
                "message": _stable_message(f"unexpected {type(exc).__name__}: {exc}")}


_CLOCK_RE = re.compile(r"\[\d{2}:\d{2}:\d{2}\] ")


def _stable_message(msg: str) -> str:
    """Drop wall-clock stamps native decoders put in errors, so quarantine files are reproducible."""
    return _CLOCK_RE.sub("", msg)[:1000]


def _process_in_worker(task: _Task, settings: IngestSettings) -> dict:
    return process_one(task, settings)


# ---------------------------------------------------------------- orchestration (main process)


def _shared_across_processes(url: str) -> bool:
    """memory:// lives in one process only; every other fsspec backend can be opened by workers."""
    fs, _ = fsspec.core.url_to_fs(url)
    return "memory" not in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


class _OrderedPool:
    """Ordered, bounded, crash-tolerant map of ``process_one`` over tasks."""

    def __init__(self, settings: IngestSettings, workers: int):
        self.settings, self.workers = settings, workers
        self.ctx = mp.get_context("spawn")
        self.pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = ProcessPoolExecutor(self.workers, mp_context=self.ctx)
        return self.pool

    def _isolated(self, task: _Task) -> dict:
        """Run one task alone in a fresh pool; a crash now is this sticker's fault."""
        try:
            return self._new_pool().submit(_process_in_worker, task, self.settings).result()
        except BrokenProcessPool:
            self._new_pool()
            return {"ok": False, "reason": RejectReason.DECODE_ERROR.value, "message": "decoder crashed the worker process"}

    def map(self, tasks):
        if self.workers <= 1:
            for t in tasks:
                yield t, process_one(t, self.settings)
            return
        window: deque[tuple[_Task, Future]] = deque()
        limit = self.workers * self.settings.inflight_per_worker
        it = iter(tasks)
        pool = self._new_pool()
        try:
            exhausted = False
            while window or not exhausted:
                while not exhausted and len(window) < limit:
                    t = next(it, None)
                    if t is None:
                        exhausted = True
                        break
                    window.append((t, pool.submit(_process_in_worker, t, self.settings)))
                if not window:
                    break
                task, fut = window.popleft()
                try:
                    yield task, fut.result()
                except BrokenProcessPool:
                    log.warning("a decoder crashed its worker; retrying %d in-flight stickers one by one", len(window) + 1)
                    pending = [task] + [t for t, _ in window]
                    window.clear()
                    for t in pending:
                        yield t, self._isolated(t)
                    pool = self._new_pool()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = None


def ingest_drop(
    drop_url: str,
    out_dir: str | Path,
    settings: IngestSettings | None = None,
    *,
    drop_id: str | None = None,
    progress: bool = True,
) -> IngestReport:
    """Decode a drop into a new committed version of the partition folder ``out_dir``.

    The outputs (manifest, quarantine, frames parts, report) are in ``publish.current(out_dir)``, which
    is also ``report.out_dir``. ``drop_id`` defaults to the folder name and must obey ``assets.ids``.

    Raises ``FileNotFoundError`` if the drop has no caption table; every per-sticker problem is
    quarantined instead of raised.
    """
    settings = settings or IngestSettings()
    out_dir = Path(out_dir)
    drop_id = validate_id(drop_id or out_dir.name, "drop id")
    refuse_overlap(drop_url, out_dir, "output folder")
    t0 = time.perf_counter()
    rows, row_rejects = read_caption_table(drop_url, settings.caption_policy)

    workers = settings.workers or os.cpu_count() or 1
    workers = max(1, min(workers, len(rows) or 1))
    shared = _shared_across_processes(drop_url)
    if not shared:
        workers = 1  # the bytes must be read here anyway; spawning would only add overhead

    report = IngestReport(drop_id=drop_id, drop_url=drop_url, out_dir=str(out_dir), workers=workers)
    report.n_rows = len(rows) + len(row_rejects)
    quarantine: list[dict] = [
        {"id": r.id, "file": r.file, "source_uri": join(drop_url, r.file) if r.file else None, "row": r.row,
         "reason": r.reason.value, "message": r.message}
        for r in row_rejects
    ]
    with publish.publish(out_dir) as stage:  # one writer per partition; committed only when complete
        _decode_into(stage, drop_url, rows, settings, workers, shared, report, quarantine, progress, t0)
    report.out_dir = str(publish.current(out_dir))
    return report


def _decode_into(stage: Path, drop_url: str, rows: list[CaptionRow], settings: IngestSettings, workers: int,
                 shared: bool, report: IngestReport, quarantine: list[dict], progress: bool, t0: float) -> None:
    """Decode the rows into the version folder ``stage`` and fill ``report`` (the body of :func:`ingest_drop`)."""
    drop_id = report.drop_id
    manifest: list[dict] = []
    parts = lake.FramePartWriter(stage / "frames", settings.part_max_bytes)
    seen_hash: dict[str, str] = {}

    def tasks():
        for r in rows:
            url = join(drop_url, r.file)
            if shared:
                yield _Task(r, url, None)
                continue
            try:
                task = _Task(r, url, _read(url, settings.max_file_bytes))
            except StickerRejected as exc:
                task = _Task(r, url, None, exc)
            yield task

    try:
        bar = tqdm(total=len(rows), desc=f"ingest {drop_id}", unit="sticker", disable=not progress)
        for task, res in _OrderedPool(settings, workers).map(tasks()):
            bar.update(1)
            r = task.row
            if res["ok"] and res["hash"] in seen_hash:
                res = {"ok": False, "reason": RejectReason.DUPLICATE_CONTENT.value,
                       "message": f"same bytes as sticker {seen_hash[res['hash']]!r}"}
            if not res["ok"]:
                quarantine.append({"id": r.id, "file": r.file, "source_uri": task.url, "row": r.row,
                                   "reason": res["reason"], "message": res["message"]})
                continue
            seen_hash[res["hash"]] = r.id
            frames = res["frames"]  # (F, S, S, 3) uint8
            n_frames = int(frames.shape[0])
            part = parts.add_sticker(r.key, frames, res["durations_ms"])
            manifest.append({
                "id": r.id, "key": r.key, "file": r.file, "source_uri": task.url, "caption": r.caption,
                "caption_status": r.caption_status.value, "format": res["format"], "n_frames": n_frames,
                "durations_ms": res["durations_ms"], "fps": res["fps"], "width": res["width"], "height": res["height"],
                "has_alpha": res["has_alpha"], "hash": res["hash"], "n_bytes": res["n_bytes"],
                "frames_part": part, "frame_size": settings.size,
            })
            report.n_frames_total += n_frames
        bar.close()
        parts.close()
        report.n_parts = parts.n_parts
        report.n_ingested = len(manifest)
        report.n_rejected = len(quarantine)
        report.rejects_by_reason = dict(sorted(Counter(q["reason"] for q in quarantine).items()))
        report.caption_status = dict(sorted(Counter(m["caption_status"] for m in manifest).items()))
        report.formats = dict(sorted(Counter(m["format"] for m in manifest).items()))
        report.n_alpha = sum(m["has_alpha"] for m in manifest)
        lake.write_parquet(pa.Table.from_pylist(manifest, schema=lake.MANIFEST_SCHEMA), stage / "manifest.parquet")
        lake.write_parquet(pa.Table.from_pylist(quarantine, schema=lake.QUARANTINE_SCHEMA), stage / "quarantine.parquet")
        report.wall_s = time.perf_counter() - t0
        report.frames_per_s = report.n_frames_total / report.wall_s if report.wall_s > 0 else 0.0
        # report.json holds only what the inputs determine, so re-runs stay byte-identical
        stable = {k: v for k, v in report.to_dict().items() if k not in ("wall_s", "frames_per_s", "workers", "out_dir")}
        lake.write_json(stable, stage / "report.json")
    except BaseException:
        parts.abort()
        raise

