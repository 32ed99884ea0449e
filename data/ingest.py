"""Ingest engine: decode every sticker of a drop once, in parallel, with bounded memory.

Pure Python (no Dagster): ``assets/ingest.py`` wraps it as a partitioned asset, the CLI and the
benchmark call it directly.

Design:
- Caption rows are validated first (``data.drops``); bad rows become quarantine records.
- Stickers are decoded in worker processes (spawn context: safe next to Dagster's and torch's
  threads). At most ``workers * inflight_per_worker`` stickers are in flight and results are
  consumed *in submission order*, so memory does not grow with the drop and the output is
  byte-identical whatever the worker count.
- A decoder that crashes its process (possible with corrupt video streams in native code) breaks
  the pool; the engine then rebuilds it and retries the in-flight stickers one at a time, so only
  the culprit is quarantined (``decode_error``: "decoder crashed").
- No single sticker can stall a drop: decoding is capped in work (``DecodeLimits.max_total_pixels``, counted
  while decoding) and in wall time (``decode_timeout_s``); workers die with this process (kill -9 included).
- Drop files are read through ``data.drop_files``: regular files inside the drop only, reads capped.
- Outputs are written to a fresh version folder and committed by replacing a pointer (``data.publish``).
"""

from __future__ import annotations

import hashlib
import logging
import math
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

from data import drop_files, lake, publish, worker_guard
from data.captionless import CaptionSource
from data.decode_budget import deadline
from data.drops import (
    MAX_CAPTION_BYTES,
    CaptionPolicy,
    CaptionRow,
    captionless_source,
    join,
    read_drop_rows,
    refuse_overlap,
)
from data.ids import validate_id
from data.media import DecodeLimits, Resample, decode_sticker
from data.rejects import RejectReason, StickerRejected
from data.storage import lake_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSettings:
    size: int = 256  # stored frame size (square, aspect kept with padding); 256 px as in the paper
    background: tuple[int, int, int] = (255, 255, 255)  # colour transparent pixels are composited onto
    resample: Resample = Resample.BICUBIC  # resize filter (bicubic | lanczos | bilinear)
    limits: DecodeLimits = field(default_factory=DecodeLimits)  # frame-count and pixel caps (decompression bombs)
    max_file_bytes: int = 64 << 20  # larger source files are rejected; never more than this + 1 byte is read
    max_caption_bytes: int = MAX_CAPTION_BYTES  # a larger caption table refuses the drop (it is read whole)
    decode_timeout_s: float = 30.0  # wall-time limit per sticker's decode (decode_timeout); 0 = none
    caption_policy: CaptionPolicy = CaptionPolicy.KEEP_EMPTY  # missing/undecodable captions: keep or quarantine
    caption_source: CaptionSource = CaptionSource.TABLE  # table | none | filename (data.captionless); a READY marker wins over table
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
        if self.max_file_bytes < 1 or self.max_caption_bytes < 1:
            raise ValueError(f"max_file_bytes and max_caption_bytes must be >= 1, got {self.max_file_bytes}, "
                             f"{self.max_caption_bytes}")
        if not (self.decode_timeout_s >= 0 and math.isfinite(self.decode_timeout_s)):
            raise ValueError(f"decode_timeout_s must be a finite number >= 0 (0 = no limit), got {self.decode_timeout_s}")


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
    drop_url: str = ""  # the drop folder: members are read relative to it (row.file), never via ``url``


def _read(drop_url: str, rel: str, max_bytes: int) -> bytes:
    """A member's bytes: regular files inside the drop only, at most ``max_bytes`` (``data.drop_files``)."""
    fs, root = fsspec.core.url_to_fs(drop_url)
    return drop_files.read_member(fs, root, rel, max_bytes)


def process_one(task: _Task, settings: IngestSettings) -> dict:
    """Read, hash and decode one sticker. Never raises: failures come back as a reject record."""
    try:
        if task.read_error is not None:
            raise task.read_error
        data = task.data if task.data is not None else _read(task.drop_url, task.row.file, settings.max_file_bytes)
        if len(data) > settings.max_file_bytes:
            raise StickerRejected(RejectReason.FILE_TOO_LARGE, f"{len(data)} bytes > max_file_bytes")
        digest = hashlib.sha256(data).hexdigest()
        # the wall-time limit covers decoding only: a slow object store is not the sticker's fault
        with deadline(settings.decode_timeout_s, f"decoding took longer than decode_timeout_s={settings.decode_timeout_s:g}"):
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


_HARD_GRACE_S = 10.0  # a worker silent for 2 * decode_timeout_s + this is deemed stuck in native code


def _warm() -> None:
    """No-op task: returns once a worker has started and imported this module."""


def _succeeded(fut: Future) -> bool:
    return fut.done() and not fut.cancelled() and fut.exception() is None


class _PoolStuck(BrokenProcessPool):
    """No sticker of the window finished within the hard limit; the workers were killed."""


class _OrderedPool:
    """Ordered, bounded, crash- and hang-tolerant map of ``process_one`` over tasks.

    Workers die with this process (``data.worker_guard``). ``decode_timeout_s`` is enforced inside the
    worker by a timer signal (``data.decode_budget.deadline``); a decoder stuck where no Python signal
    handler runs (a loop in native code) is caught here: when no sticker in flight finished for
    ``2 * decode_timeout_s + _HARD_GRACE_S``, the workers are killed and the unfinished stickers retried one
    by one, as after a crash; one that hangs alone is quarantined as ``decode_timeout``. Decoding in this
    process (``workers <= 1``) has the timer only.
    """

    def __init__(self, settings: IngestSettings, workers: int):
        self.settings, self.workers = settings, workers
        self.ctx = mp.get_context("spawn")
        self.pool: ProcessPoolExecutor | None = None
        self.broken = False  # the current pool lost a worker (crash or kill): make a new one before reuse
        timeout = settings.decode_timeout_s
        self.hard_s = 2 * timeout + _HARD_GRACE_S if timeout > 0 else None

    def _new_pool(self) -> ProcessPoolExecutor:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = ProcessPoolExecutor(self.workers, mp_context=self.ctx, initializer=worker_guard.die_with_parent,
                                        initargs=(os.getpid(),))
        self.broken = False
        if self.hard_s is not None:
            # start every worker (spawn + imports take seconds on a busy machine) before the hang clock runs
            for f in [self.pool.submit(_warm) for _ in range(self.workers)]:
                f.result()
        return self.pool

    def _kill_workers(self) -> None:
        for p in list((getattr(self.pool, "_processes", None) or {}).values()):
            try:
                p.kill()
            except (OSError, AttributeError):
                pass

    def _result(self, fut: Future, window) -> dict:
        """``fut.result()``; raises ``_PoolStuck`` (killing the workers) when the pool stops making progress."""
        if self.hard_s is None:
            return fut.result()
        n_done, since = -1, time.monotonic()
        while True:
            try:
                return fut.result(timeout=min(1.0, self.hard_s))
            except TimeoutError:
                done = sum(f.done() for _, f in window)
                if done != n_done:
                    n_done, since = done, time.monotonic()
                elif time.monotonic() - since > self.hard_s:
                    self._kill_workers()
                    raise _PoolStuck(f"no sticker finished within {self.hard_s:g} s") from None

    def _isolated(self, task: _Task) -> dict:
        """Run one task alone (nothing else in flight); a crash or hang now is this sticker's fault."""
        if self.broken or self.pool is None:
            self._new_pool()
        try:
            return self._result(self.pool.submit(_process_in_worker, task, self.settings), ())
        except _PoolStuck:
            self.broken = True
            return {"ok": False, "reason": RejectReason.DECODE_TIMEOUT.value,
                    "message": f"decoder did not return within {self.hard_s:g} s (decode_timeout_s="
                               f"{self.settings.decode_timeout_s:g}, stuck in native code?): its worker was killed"}
        except BrokenProcessPool:
            self.broken = True
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
                    res = self._result(fut, window)
                except BrokenProcessPool as exc:
                    self.broken = True
                    what = "workers were stuck (killed)" if isinstance(exc, _PoolStuck) else "a decoder crashed its worker"
                    pending = [(task, fut), *window]
                    window.clear()
                    log.warning("%s; retrying the %d unfinished in-flight stickers one by one", what,
                                sum(not _succeeded(f) for _, f in pending))
                    for t, f in pending:  # stickers that finished before the break keep their results
                        yield t, (f.result() if _succeeded(f) else self._isolated(t))
                    pool = self._new_pool() if self.broken else self.pool
                    continue
                yield task, res
        except BaseException:
            self._kill_workers()  # shutdown(wait=True) below must not wait on a stuck decoder
            raise
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
    is also ``report.out_dir``. ``drop_id`` defaults to the folder name and must obey ``data.ids``.

    Raises ``FileNotFoundError`` if the drop has no caption table; every per-sticker problem is
    quarantined instead of raised.
    """
    settings = settings or IngestSettings()
    out_dir = lake_path(out_dir)
    drop_id = validate_id(drop_id or out_dir.name, "drop id")
    refuse_overlap(drop_url, out_dir, "output folder")
    t0 = time.perf_counter()
    source = CaptionSource(settings.caption_source)
    if source is CaptionSource.TABLE:  # a caption-less drop declares its source in its READY marker
        source = captionless_source(drop_url) or CaptionSource.TABLE
    rows, row_rejects = read_drop_rows(drop_url, source, settings.caption_policy, settings.max_caption_bytes)

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
                yield _Task(r, url, None, drop_url=drop_url)
                continue
            try:
                task = _Task(r, url, _read(drop_url, r.file, settings.max_file_bytes), drop_url=drop_url)
            except StickerRejected as exc:
                task = _Task(r, url, None, exc, drop_url=drop_url)
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

