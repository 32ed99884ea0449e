"""CLIP frame embeddings for one drop: lake frames -> L2-normalised float16 vectors in Parquet.

Decoding the stored frames and CLIP preprocessing (resize + normalise) run in DataLoader worker
processes, one frames part per worker at a time, while the main process only runs the image tower;
with ``prefetch_factor`` batches queued per worker the model does not wait on I/O (measured in
``benchmarks/embed_cluster_shard.py``). On a GPU the batches arrive in pinned memory and the tower's work is
queued one batch ahead (``overlap``): the result of batch i is fetched while batch i+1 runs, so neither the
host-to-device copy nor the bookkeeping leaves the GPU idle (``benchmarks/levers.py``).

Outputs (``lake/embeddings/<drop>/``, published as a new version, see ``data.publish``)::

    part-NNNNN.parquet   key, id, frame_index, embedding (fixed_size_list<float16>[D]); one file per frames part
    quarantine.parquet   stickers whose embeddings were not finite (e.g. a broken weight file), with reason
    report.json          counts, model, weights source

A sticker never straddles frames parts, so quarantining is decided per part.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm.auto import tqdm

from data import publish
from data.lake import Lake, Stage, read_parquet, write_json, write_parquet
from data.storage import lake_path, open_read
from model.clip import ClipSpec, LoadedClip, embed_pixels_on_device, load_clip, preprocess_frames, tiny_spec

EMBEDDING_NOT_FINITE = "embedding_not_finite"


def embeddings_schema(dim: int) -> pa.Schema:
    return pa.schema(
        [
            ("key", pa.string()),
            ("id", pa.string()),
            ("frame_index", pa.int32()),
            ("embedding", pa.list_(pa.float16(), dim)),  # unit L2 norm (in float32, before the cast)
        ]
    )


EMB_QUARANTINE_SCHEMA = pa.schema([("key", pa.string()), ("id", pa.string()), ("reason", pa.string()), ("message", pa.string())])


@dataclass(frozen=True)
class EmbedSettings:
    clip: ClipSpec = field(default_factory=tiny_spec)  # which CLIP, which weights, device, precision, batch size
    num_workers: int = 1  # DataLoader processes decoding + preprocessing frames (0 = main process)
    prefetch_factor: int = 4  # batches queued per worker, so the model never waits on decoding
    overlap: bool = True  # the tower runs one batch ahead of the result fetch (GPU: from pinned memory)

    def __post_init__(self) -> None:
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")


@dataclass
class EmbedReport:
    drop_id: str
    n_stickers: int = 0
    n_frames: int = 0
    n_quarantined: int = 0
    embed_dim: int = 0
    wall_s: float = 0.0
    model_s: float = 0.0  # time inside the image tower (the rest is waiting for data or writing)
    frames_per_s: float = 0.0
    model_frames_per_s: float = 0.0
    clip: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class LakeFrames(IterableDataset):
    """Batches of preprocessed frames, read part by part from the ingest lake (one part per worker)."""

    def __init__(self, parts: list, frame_size: int, image_size: int, mean, std, batch_size: int):
        # URLs, re-opened in each worker: an fsspec filesystem (s3fs's event loop) created before the fork is not fork-safe
        self.parts, self.frame_size, self.image_size = [str(p) for p in parts], frame_size, image_size
        self.mean, self.std, self.batch_size = mean, std, batch_size

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        mine = range(len(self.parts)) if info is None else range(info.id, len(self.parts), info.num_workers)
        S = self.frame_size
        for pi in mine:
            with open_read(lake_path(self.parts[pi])) as fh:
                yield from self._part(pi, pq.ParquetFile(fh), S)

    def _part(self, pi: int, pf: pq.ParquetFile, S: int) -> Iterator[dict]:
        n_rows, done = pf.metadata.num_rows, 0
        for batch in pf.iter_batches(batch_size=self.batch_size, columns=["key", "frame_index", "frame"]):
            raw = batch.column("frame").to_pylist()
            frames = np.frombuffer(b"".join(raw), np.uint8).reshape(len(raw), S, S, 3)  # (B, S, S, 3)
            done += len(raw)
            yield {
                "part": pi,
                "keys": batch.column("key").to_pylist(),
                "frame_index": batch.column("frame_index").to_numpy().copy(),
                "pixels": preprocess_frames(torch.from_numpy(frames.copy()), self.image_size, self.mean, self.std),
                "last": done >= n_rows,
            }


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # workers only resize/normalise; leave the cores to the model


def _write_part(stage: Path, part_name: str, rows: dict, id_of: dict[str, str], dim: int, quarantine: list[dict]) -> int:
    """Write one part's embeddings, quarantining stickers with any non-finite vector. Returns rows written."""
    emb = np.concatenate(rows["emb"]) if rows["emb"] else np.zeros((0, dim), np.float32)  # (N, D)
    keys = [k for ks in rows["keys"] for k in ks]
    fidx = np.concatenate(rows["fidx"]) if rows["fidx"] else np.zeros(0, np.int32)
    finite = np.isfinite(emb).all(axis=1)
    bad = sorted({k for k, ok in zip(keys, finite) if not ok})
    for k in bad:
        quarantine.append({"key": k, "id": id_of.get(k, k), "reason": EMBEDDING_NOT_FINITE,
                           "message": "image tower produced NaN/Inf or a zero vector (broken weights?)"})
    keep = np.array([k not in bad for k in keys], dtype=bool) if bad else np.ones(len(keys), bool)
    emb16 = emb[keep].astype(np.float16)  # (N', D)
    col = pa.FixedSizeListArray.from_arrays(pa.array(emb16.reshape(-1), pa.float16()), dim)
    kept_keys = [k for k, m in zip(keys, keep) if m]
    table = pa.Table.from_arrays(
        [pa.array(kept_keys, pa.string()), pa.array([id_of.get(k, k) for k in kept_keys], pa.string()),
         pa.array(fidx[keep], pa.int32()), col],
        schema=embeddings_schema(dim),
    )
    write_parquet(table, stage / part_name)
    return table.num_rows


def embed_drop(
    lake_root: str | Path,
    drop_id: str,
    settings: EmbedSettings | None = None,
    *,
    clip: LoadedClip | None = None,
    progress: bool = True,
) -> EmbedReport:
    """Embed every frame of an ingested drop. Raises ValueError on an unusable CLIP spec before reading data."""
    settings = settings or EmbedSettings()
    clip = clip or load_clip(settings.clip)  # validates model name / weights path first
    lake = Lake(lake_root)
    src = lake.ingest(drop_id)
    manifest = read_parquet(src / "manifest.parquet", columns=["id", "key", "frame_size", "n_frames"]).to_pandas()
    id_of = dict(zip(manifest.key, manifest.id))
    parts = sorted((src / "frames").glob("part-*.parquet"), key=lambda p: p.name)
    frame_size = int(manifest.frame_size.iloc[0]) if len(manifest) else 0
    report = EmbedReport(drop_id=drop_id, embed_dim=clip.embed_dim, clip=clip.info)
    with publish.publish(lake.partition(Stage.EMBEDDINGS, drop_id)) as stage:
        _embed_into(stage, clip, settings, manifest, parts, frame_size, id_of, report, progress)
    return report


def _embed_into(stage: Path, clip: LoadedClip, settings: EmbedSettings, manifest, parts: list[Path], frame_size: int,
                id_of: dict[str, str], report: EmbedReport, progress: bool) -> None:
    """Embed every frame part into the version folder ``stage`` (the body of :func:`embed_drop`)."""
    drop_id = report.drop_id
    quarantine: list[dict] = []
    t0 = time.perf_counter()
    pending: dict[int, dict] = {}
    ds = LakeFrames(parts, frame_size, clip.image_size, clip.mean, clip.std, settings.clip.batch_size)
    workers = min(settings.num_workers, len(parts))
    overlap = settings.overlap  # on a CPU the same code path (tested there), without a speed-up
    loader = DataLoader(ds, batch_size=None, num_workers=workers, worker_init_fn=_worker_init if workers else None,
                        prefetch_factor=settings.prefetch_factor if workers else None,
                        pin_memory=overlap and clip.device.type == "cuda")
    bar = tqdm(total=int(manifest.n_frames.sum()), desc=f"embed {drop_id}", unit="frame", disable=not progress)

    def collect(item: dict, z_dev: torch.Tensor) -> None:
        tm = time.perf_counter()
        z = z_dev.cpu().numpy()  # (B, D) float32; waits for this batch only
        report.model_s += time.perf_counter() - tm
        acc = pending.setdefault(item["part"], {"emb": [], "keys": [], "fidx": []})
        acc["emb"].append(z)
        acc["keys"].append(item["keys"])
        acc["fidx"].append(np.asarray(item["frame_index"], np.int32))
        bar.update(len(item["keys"]))
        if item["last"]:
            report.n_frames += _write_part(stage, parts[item["part"]].name, pending.pop(item["part"]), id_of,
                                           clip.embed_dim, quarantine)

    inflight = None  # (item, embeddings on the device) of the batch queued before this one
    for item in loader:
        tm = time.perf_counter()
        z_dev = embed_pixels_on_device(clip, item["pixels"])  # queued on a GPU, computed on the CPU
        report.model_s += time.perf_counter() - tm
        if not overlap:
            collect(item, z_dev)
            continue
        if inflight is not None:
            collect(*inflight)
        inflight = (item, z_dev)
    if inflight is not None:
        collect(*inflight)
    bar.close()
    for pi, acc in pending.items():  # parts with zero rows never send "last"
        report.n_frames += _write_part(stage, parts[pi].name, acc, id_of, clip.embed_dim, quarantine)
    report.n_quarantined = len(quarantine)
    report.n_stickers = len(manifest) - report.n_quarantined
    write_parquet(pa.Table.from_pylist(quarantine, schema=EMB_QUARANTINE_SCHEMA), stage / "quarantine.parquet")
    report.wall_s = time.perf_counter() - t0
    report.frames_per_s = report.n_frames / report.wall_s if report.wall_s else 0.0
    report.model_frames_per_s = report.n_frames / report.model_s if report.model_s else 0.0
    stable = {k: v for k, v in report.to_dict().items() if not k.endswith("_s")}
    write_json(stable, stage / "report.json")




def iter_sticker_embeddings(lake_root: str | Path, drop_id: str) -> Iterator[tuple[str, list[str], np.ndarray]]:
    """Yield ``(part name, keys, list of (n_i, D) float32 arrays)`` per embeddings part, frames in order."""
    for part in sorted(Lake(lake_root).embeddings(drop_id).glob("part-*.parquet"), key=lambda p: p.name):
        t = read_parquet(part)
        if t.num_rows == 0:
            continue
        keys = t.column("key").to_numpy(zero_copy_only=False)
        dim = t.schema.field("embedding").type.list_size
        emb = t.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)
        emb = emb.astype(np.float32).reshape(-1, dim)  # (N, D)
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        bounds = np.r_[starts, len(keys)]
        yield part.name, [str(keys[s]) for s in starts], [emb[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
