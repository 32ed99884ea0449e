"""The data lake: its layout (the :class:`Lake` object), Parquet schemas and the frame-part writer.

Layout under ``lake_root`` (a local folder or any fsspec URL such as ``s3://bucket/lake``, see ``data.storage``)::

    ingest/<drop_id>/manifest.parquet      one row per kept sticker (MANIFEST_SCHEMA)
    ingest/<drop_id>/quarantine.parquet    one row per rejected sticker or caption row (QUARANTINE_SCHEMA)
    ingest/<drop_id>/frames/part-NNNNN.parquet   decoded frames, one row per frame (FRAMES_SCHEMA)
    ingest/<drop_id>/report.json           counts and timings of the last materialization

Why frames are stored as raw RGB in zstd-compressed Parquet rather than PNG/JPEG: the next stages
(CLIP embeddings, clustering, shards) read every frame at least twice, and zstd decompression is an
order of magnitude cheaper than PNG decode while flat-colour sticker frames still compress ~10-30x.

Every stage output is a new immutable version folder committed by replacing a pointer
(``data.publish``): a killed run never leaves a half-written or missing partition, two runs of one
partition serialize on its lock, and re-running replaces it wholesale (idempotent). Paths quoted above
are relative to the partition's committed version (``published(...)``).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data import publish
from data.atomic import atomic_path, atomic_write, temp_name
from data.ids import contained, is_valid_id, validate_id
from data.storage import LakePath, is_remote, lake_path, open_read, put_file, scratch_dir

MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),  # producer's sticker id
        ("key", pa.string()),  # safe key (file names, webdataset __key__)
        ("file", pa.string()),  # path relative to the drop
        ("source_uri", pa.string()),  # full fsspec URL of the source file
        ("caption", pa.string()),
        ("caption_status", pa.string()),  # ok | missing | invalid_utf8
        ("format", pa.string()),  # gif | webp | apng | mp4 | webm
        ("n_frames", pa.int32()),
        ("durations_ms", pa.list_(pa.int32())),  # per-frame display time
        ("fps", pa.float32()),
        ("width", pa.int32()),  # native canvas size
        ("height", pa.int32()),
        ("has_alpha", pa.bool_()),
        ("hash", pa.string()),  # sha256 of the source bytes
        ("n_bytes", pa.int64()),  # source file size
        ("frames_part", pa.string()),  # frames/part-NNNNN.parquet holding this sticker's frames
        ("frame_size", pa.int32()),  # stored frames are frame_size x frame_size x 3
    ]
)

QUARANTINE_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("file", pa.string()),
        ("source_uri", pa.string()),
        ("row", pa.int32()),  # line/row in the caption table (0 = the table itself)
        ("reason", pa.string()),  # data.rejects.RejectReason value
        ("message", pa.string()),
    ]
)

FRAMES_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("frame_index", pa.int32()),
        ("duration_ms", pa.int32()),
        ("frame", pa.binary()),  # raw uint8 RGB, row-major (frame_size, frame_size, 3)
    ]
)


def read_parquet(path: LakePath, columns: list[str] | None = None) -> pa.Table:
    """A Parquet table from the lake (local file or object), all of it or ``columns``."""
    with open_read(path) as fh:
        return pq.read_table(fh, columns=columns)


def parquet_rows(path: LakePath) -> int:
    """Row count from the Parquet footer (no data read)."""
    with open_read(path) as fh:
        return pq.read_metadata(fh).num_rows


def parquet_schema(path: LakePath) -> pa.Schema:
    """The schema from the Parquet footer (no data read)."""
    with open_read(path) as fh:
        return pq.read_schema(fh)


def write_parquet(table: pa.Table, path: str | LakePath) -> None:
    """Write a Parquet file atomically (temp file + rename); deterministic bytes for equal input."""
    with atomic_path(path) as tmp:
        pq.write_table(
            table,
            tmp,
            compression="zstd",
            use_dictionary=[c for c in table.column_names if c != "frame"],
            write_statistics=[c for c in table.column_names if c != "frame"],
            row_group_size=512,
        )


def write_json(obj: object, path: str | LakePath) -> None:
    """Write JSON atomically."""
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str))


class Stage(StrEnum):
    """Per-drop stages of the lake; each is a folder ``lake/<stage>/<drop_id>/`` published by ``data.publish``."""

    INGEST = "ingest"
    EMBEDDINGS = "embeddings"
    CLUSTERS = "clusters"
    SHARDS = "shards"


class RunArea(StrEnum):
    """Per-run areas of the lake, ``lake/<area>/<run_name>/``."""

    TRAINING = "training"
    GALLERY = "gallery"
    EVALUATION = "evaluation"
    MODELS = "models"  # exported model packages (diffusers folders), one per registered checkpoint


RESERVED_RUN_NAMES = {RunArea.EVALUATION: frozenset({"comparison", "fvd_real_stats"})}  # shared folders beside runs


class Lake:
    """Every path of the lake under ``root``, validated (ids obey ``data.ids``) and contained in the lake.

    Per-drop stages resolve through the publish pointer (``published``): readers never see an unfinished version.

        lake = Lake("/data/lake")
        lake.partition(Stage.SHARDS, "drop-001")   # the partition folder a writer publishes into
        lake.shards("drop-001") / "index.json"     # the committed shards
        lake.run(RunArea.TRAINING, "nightly")      # lake/training/nightly
    """

    def __init__(self, root: str | LakePath):
        self.root = lake_path(root)

    def __repr__(self) -> str:
        return f"Lake({str(self.root)!r})"

    # ------------------------------------------------------------------ per-drop stages

    def partition(self, stage: Stage, drop_id: str) -> LakePath:
        """The partition folder of ``drop_id`` in ``stage`` (validated id, resolved inside the lake)."""
        validate_id(drop_id, "drop id")
        return contained(self.root, Stage(stage).value, drop_id)

    def published(self, stage: Stage, drop_id: str) -> LakePath:
        """The committed version folder of a partition; ``FileNotFoundError`` naming the stage if none."""
        found = publish.current_or_none(self.partition(stage, drop_id))
        if found is None:
            raise FileNotFoundError(f"no published {Stage(stage).value} output for drop {drop_id!r} under {self.root} "
                                    f"(materialize that stage first)")
        return found

    def drops(self, stage: Stage) -> list[str]:
        """Sorted drop ids that have a committed version in ``stage`` (folders with invalid names are ignored)."""
        root = self.root / Stage(stage).value
        if not root.is_dir():
            return []
        return [p.name for p in sorted(root.iterdir())
                if is_valid_id(p.name) and p.is_dir() and not p.is_symlink() and publish.current_or_none(p) is not None]

    def ingest(self, drop_id: str) -> LakePath:
        """Published ingest output of a drop (manifest, quarantine, frames)."""
        return self.published(Stage.INGEST, drop_id)

    def embeddings(self, drop_id: str) -> LakePath:
        """Published embeddings of a drop (``part-*.parquet``, quarantine, report)."""
        return self.published(Stage.EMBEDDINGS, drop_id)

    def clusters(self, drop_id: str) -> LakePath:
        """The published cluster/split table of a drop."""
        return self.published(Stage.CLUSTERS, drop_id) / "clusters.parquet"

    def shards(self, drop_id: str) -> LakePath:
        """The published shards of a drop (tars + ``index.json``)."""
        return self.published(Stage.SHARDS, drop_id)

    def shard_indexes(self) -> list[str]:
        """``index.json`` of every drop's committed shard version (never an unpublished or half-written build)."""
        return [str(self.shards(d) / "index.json") for d in self.drops(Stage.SHARDS)]

    def manifest(self, drop_id: str):
        """The drop's manifest as a pandas DataFrame."""
        return read_parquet(self.ingest(drop_id) / "manifest.parquet").to_pandas()

    def quarantine(self, drop_id: str):
        """The drop's quarantine table (rejected stickers and caption rows) as a pandas DataFrame."""
        return read_parquet(self.ingest(drop_id) / "quarantine.parquet").to_pandas()

    def sticker_frames(self, drop_id: str) -> Iterator[tuple[str, np.ndarray, list[int]]]:
        """Yield ``(key, frames (F, S, S, 3) uint8, durations_ms)`` per sticker, part by part.

        Memory is bounded by one row group (rows of one sticker are contiguous and in frame order).
        """
        root = self.ingest(drop_id)
        size = int(read_parquet(root / "manifest.parquet", columns=["frame_size"])["frame_size"][0].as_py())
        for part in sorted((root / "frames").glob("part-*.parquet"), key=lambda p: p.name):
            key, frames, durs = None, [], []
            with open_read(part) as fh:  # streamed row group by row group, also from an object store
                for batch in pq.ParquetFile(fh).iter_batches(batch_size=256):
                    for k, d, f in zip(batch.column("key").to_pylist(), batch.column("duration_ms").to_pylist(),
                                       batch.column("frame").to_pylist()):
                        if k != key and key is not None:
                            yield key, np.stack(frames), durs
                            frames, durs = [], []
                        key = k
                        frames.append(np.frombuffer(f, np.uint8).reshape(size, size, 3))
                        durs.append(d)
            if key is not None:
                yield key, np.stack(frames), durs

    # ------------------------------------------------------------------ per-run areas

    def run(self, area: RunArea, run_name: str) -> LakePath:
        """``lake/<area>/<run_name>`` with the run name validated, contained and not a reserved shared folder."""
        try:
            area = RunArea(area)
        except ValueError:
            raise ValueError(f"unknown run area {area!r}; allowed: {[a.value for a in RunArea]}") from None
        validate_id(run_name, "run name")
        if run_name in RESERVED_RUN_NAMES.get(area, ()):
            raise ValueError(f"run name {run_name!r} is reserved under lake/{area.value}/ "
                             f"(used by {sorted(RESERVED_RUN_NAMES[area])})")
        return contained(self.root, area.value, run_name)

    def training(self, run_name: str) -> LakePath:
        return self.run(RunArea.TRAINING, run_name)

    def gallery(self, run_name: str) -> LakePath:
        return self.run(RunArea.GALLERY, run_name)

    def evaluation(self, run_name: str) -> LakePath:
        return self.run(RunArea.EVALUATION, run_name)

    def model_package(self, run_name: str, step: int) -> LakePath:
        """``lake/models/<run>/step-NNNNNN``: the diffusers package exported from that checkpoint."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be an int >= 0, got {step!r}")
        return self.run(RunArea.MODELS, run_name) / f"step-{step:06d}"

    def fvd_real_stats(self) -> LakePath:
        """Test-set I3D statistics, shared by every evaluated checkpoint."""
        return self.root / RunArea.EVALUATION.value / "fvd_real_stats"

    def comparison(self) -> LakePath:
        """The cross-run comparison table and chart."""
        return self.root / RunArea.EVALUATION.value / "comparison"

    def ablation(self, mode: str) -> LakePath:
        """``lake/ablation/<mode>`` (quick, standard, ...)."""
        validate_id(mode, "ablation mode")
        return contained(self.root, "ablation", mode)


class FramePartWriter:
    """Streams frames into ``frames/part-NNNNN.parquet`` files with bounded memory.

    Frames are buffered up to ``row_group_frames`` and written as one row group; a new part file
    starts once the current one holds ``part_max_bytes`` of raw frame data. Stickers never straddle
    two parts (a part is closed only between stickers), so the manifest can name one part each.
    Files are written under temporary names and renamed on close (atomic per part); on an object store the
    temp file is on local scratch disk and uploaded on close (one PUT per part, see ``data.storage``).
    """

    def __init__(self, frames_dir: str | LakePath, part_max_bytes: int, row_group_frames: int = 64):
        self.dir = lake_path(frames_dir)
        self.remote = is_remote(self.dir)
        if not self.remote:
            self.dir.mkdir(parents=True, exist_ok=True)
        self.part_max_bytes, self.row_group_frames = part_max_bytes, row_group_frames
        self.index, self.part_bytes = 0, 0
        self._writer: pq.ParquetWriter | None = None
        self._tmp: Path | None = None
        self._buf: list[tuple[str, int, np.ndarray, list[int]]] = []  # (key, first frame index, (n, S*S*3), durations)
        self._buffered = 0  # frames in _buf
        self.n_parts = 0

    @property
    def current_part(self) -> str:
        return f"frames/part-{self.index:05d}.parquet"

    def add_sticker(self, key: str, frames: np.ndarray, durations_ms: list[int]) -> str:
        """Append one sticker's frames (F, S, S, 3) uint8; returns the part it was written to."""
        part = self.current_part
        F = frames.shape[0]
        flat = np.ascontiguousarray(frames).reshape(F, -1)  # (F, S*S*3)
        start = 0
        while start < F:
            take = min(F - start, self.row_group_frames - self._buffered)
            self._buf.append((key, start, flat[start : start + take], durations_ms[start : start + take]))
            self._buffered += take
            start += take
            if self._buffered >= self.row_group_frames:
                self._write_buf()
        self.part_bytes += frames.nbytes
        if self.part_bytes >= self.part_max_bytes:
            self._close_part()
        return part

    def _write_buf(self) -> None:
        if not self._buf:
            return
        if self._writer is None:
            name = f".part-{self.index:05d}.tmp-{uuid.uuid4().hex[:8]}"
            self._tmp = scratch_dir() / temp_name(name) if self.remote else self.dir / name
            self._writer = pq.ParquetWriter(self._tmp, FRAMES_SCHEMA, compression="zstd",
                                            use_dictionary=["key"], write_statistics=["key", "frame_index", "duration_ms"])
        keys, idx, durs = [], [], []
        for key, start, flat, d in self._buf:
            keys += [key] * flat.shape[0]
            idx += range(start, start + flat.shape[0])
            durs += [int(x) for x in d]
        data = np.concatenate([flat for _, _, flat, _ in self._buf])  # (N, S*S*3), one copy
        N, nbytes = data.shape
        # Zero-copy binary column over the concatenated frames: building it from Python bytes objects
        # was the main cost of the write path.
        offsets = pa.py_buffer((np.arange(N + 1, dtype=np.int64) * nbytes).astype(np.int32 if N * nbytes < 2**31 else np.int64))
        frame_type = pa.binary() if N * nbytes < 2**31 else pa.large_binary()
        frame_col = pa.Array.from_buffers(frame_type, N, [None, offsets, pa.py_buffer(data)])
        table = pa.Table.from_arrays(
            [pa.array(keys, pa.string()), pa.array(idx, pa.int32()), pa.array(durs, pa.int32()), frame_col.cast(pa.binary())],
            schema=FRAMES_SCHEMA,
        )
        self._writer.write_table(table)
        self._buf, self._buffered = [], 0

    def _close_part(self) -> None:
        self._write_buf()
        if self._writer is not None:
            self._writer.close()
            final = self.dir / f"part-{self.index:05d}.parquet"
            if self.remote:
                put_file(self._tmp, final)
                self._tmp.unlink()
            else:
                os.replace(self._tmp, final)
            self._writer, self._tmp = None, None
            self.index += 1
            self.n_parts += 1
        self.part_bytes = 0

    def close(self) -> None:
        self._close_part()

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        self._writer, self._tmp, self._buf, self._buffered = None, None, [], 0
