"""Training clips from WebDataset shards: RDTF's random-k representative frames and loss mask.

RDTF (arXiv 2503.17735), "Dual-mask based Data Utilization Strategy": sticker frame counts are
long-tailed, so instead of sampling frames at equal intervals the frames are clustered "into random
k clusters during training" and the loss mask makes the loss count "only on the first k frames".
Table 6 sets k in 3-8 and the model works on 8-frame clips. The shards already hold, per sticker,
the representative frame indices for every k (``meta["reps"][str(k)]``, temporal order, written by
the clustering stage), so a training sample is: draw k ~ U[k_min, k_max], take those frames, pad
the clip to ``num_frames`` and mark the first ``k_eff`` frames valid (``k_eff < k`` when a sticker
has fewer frames or fewer distinct representatives than k).

Stream (per rank r and worker stream o of W, see Resume; all RNGs are numpy generators seeded with
``(seed, r, o, purpose)``):

    shard = uniform choice over every train shard of every index, *with replacement*
      -> raw samples of that tar in order (bytes; nothing decoded)
      -> shuffle buffer of ``shuffle_buffer`` raw samples
      -> cheap probe (json, reps, image headers; no pixels): a bad sample is skipped + counted
      -> groups of ``batch_size`` probed samples = this worker's batches
      -> decode, k draw (RNG seeded by the sample's position in the worker's stream), resize, collate

Every rank and worker thus reads a different, reproducible stream; with resampling several ranks
may read the same shard at the same time and "epochs" are not defined (the number of steps is).
The stream of a rank is a deterministic function of (cfg, rank) -- ``num_workers`` included,
since each worker owns a stream and the DataLoader interleaves them. ``world_size`` only bounds
``rank``.

Resume: ``start_batch`` = batches this rank has already consumed. Batch i of the rank is batch
i // W of stream i % W. The DataLoader always takes its first batch from worker 0, so a resumed
worker w plays stream o = (start_batch + w) % W (o = w when start_batch = 0 or W = 1). Stream o
produced batches o, o + W, ... < start_batch, i.e. ceil((start_batch - o) / W) of them, and the
worker drops that many batches of *probed raw samples* before yielding. The skip reads tar bytes
and parses image headers (~0.1 ms per sample) but decodes no pixels, draws no k (k is seeded by
position) and resizes nothing; it is exact because batch membership is decided by the probe alone.
Caveat: a sample whose headers are fine but whose pixel data fails to decode is only caught in the
decode step and replaced by the next sample, so a resume that skips past it is one sample off from
the uninterrupted stream. ``data.shards.verify_shards`` decodes every sample, so verified shards
have none.

Float frames are in [-1, 1]; padding frames (valid False) are exactly 0.0 there.
"""

from __future__ import annotations

import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data.shards import INDEX_NAME, SPLITS, FrameEncoding, decode_sample, read_index, shard_urls

_MAX_BAD_IN_A_ROW = 10_000  # consecutive unusable samples/shards before a worker gives up (all data corrupt?)
_SHARD, _SHUFFLE, _K = 1, 2, 3  # RNG purposes: the element after (seed, rank, stream) in each seed


class _Tally:
    """Unusable samples met by one iteration of one worker (shared by that iteration's generators)."""

    def __init__(self) -> None:
        self.n = 0


class FrameExtraction(StrEnum):
    """How a training clip's frames are taken from a sticker (paper, Method, "Dual-mask based Data Utilization").

    CLUSTER: RDTF's random-k cluster representatives + loss mask (Fig. 3; short stickers are used, padded).
    UNIFORM: "the traditional method of extracting frames at equal intervals" the paper contrasts it with:
    ``num_frames`` frames at equal spacing over the whole sticker; stickers with fewer frames cannot give a
    clip and are left out ("less data will be generated") — the no-DDU baseline of the Table 3 ablation.
    """

    CLUSTER = "cluster"
    UNIFORM = "uniform"


@dataclass(frozen=True)
class DataConfig:
    index_paths: tuple[str, ...]  # shard index.json files (or their folders), one per drop; all their `split` shards are used
    split: str = "train"  # which shards of each index to read
    num_frames: int = 8  # F: clips are padded to this length (Table 6: 8 frames)
    k_min: int = 3  # paper Table 6: k drawn uniformly in [k_min, k_max] per sample
    k_max: int = 8  # must be <= num_frames
    image_size: int = 256  # frames resized (antialiased bilinear, torch) to this square size
    batch_size: int = 4  # samples per batch, per rank
    num_workers: int = 0  # DataLoader worker processes (0 = read in the training process)
    shuffle_buffer: int = 64  # raw samples held for shuffling (<= 1: shard order only)
    seed: int = 0  # base seed of shard choice, shuffle and k draws
    frame_extraction: FrameExtraction = FrameExtraction.CLUSTER  # cluster (DDU) | uniform (equal intervals, k = F)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index_paths", tuple(str(p) for p in self.index_paths))
        try:
            object.__setattr__(self, "frame_extraction", FrameExtraction(self.frame_extraction))
        except ValueError:
            raise ValueError(f"DataConfig.frame_extraction must be one of {[m.value for m in FrameExtraction]}, "
                             f"got {self.frame_extraction!r}") from None
        if self.split not in SPLITS:
            raise ValueError(f"DataConfig.split must be one of {SPLITS}, got {self.split!r}")
        if not 1 <= self.k_min <= self.k_max <= self.num_frames:
            raise ValueError(f"need 1 <= k_min <= k_max <= num_frames, got {self.k_min}, {self.k_max}, {self.num_frames}")
        for name in ("image_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"DataConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_workers", "shuffle_buffer", "seed"):
            if getattr(self, name) < 0:
                raise ValueError(f"DataConfig.{name} must be >= 0, got {getattr(self, name)}")


def validate_indexes(cfg: DataConfig) -> list[str]:
    """Shard urls of ``cfg.split`` over all indexes; ValueError naming the problem otherwise.

    Call it before launching ranks: it checks that indexes exist and parse, that each lists at least
    one shard of the split, that every listed shard exists with the indexed size, and that the
    index's k range (when recorded) covers [k_min, k_max].
    """
    if not cfg.index_paths:
        raise ValueError("DataConfig.index_paths is empty: pass at least one shard index.json")
    for raw in cfg.index_paths:
        path = Path(raw) / INDEX_NAME if Path(raw).is_dir() else Path(raw)
        if not path.is_file():
            raise ValueError(f"shard index not found: {raw}")
        try:
            doc = read_index(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"unreadable shard index {path}: {exc}") from exc
        listed = [s for s in doc.get("shards", []) if s.get("split") == cfg.split]
        if not listed:
            raise ValueError(f"shard index {path} lists no {cfg.split!r} shard")
        for s in listed:
            shard = path.parent / s["name"]
            if not shard.is_file():
                raise ValueError(f"shard {shard} listed in {path} is missing")
            if shard.stat().st_size != s["bytes"]:
                raise ValueError(f"shard {shard} has {shard.stat().st_size} bytes, {path} says {s['bytes']} (rewritten?)")
        k_range = doc.get("k_range")
        if k_range and not (k_range[0] <= cfg.k_min and cfg.k_max <= k_range[1]):
            raise ValueError(f"{path} has representatives for k in {k_range}, config asks for [{cfg.k_min}, {cfg.k_max}]")
    return shard_urls(cfg.index_paths, cfg.split)


def select_frames(
    frames: np.ndarray,
    reps: dict[str, list[int]],
    n_frames: int,
    rng: np.random.Generator,
    k_min: int,
    k_max: int,
    num_frames: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Random-k representative frames of one sticker, padded to ``num_frames``.

    frames: (n, S, S, 3) uint8; reps[str(k)]: representative frame indices for k clusters.
    Draws exactly one k ~ U[k_min, k_max] from ``rng``; uses the distinct indices of reps[str(k)]
    in temporal (sorted) order, at most ``num_frames``. Returns (clip (num_frames, S, S, 3) uint8
    zero-padded, valid (num_frames,) bool with the first k_eff True, k_eff).
    """
    k = int(rng.integers(k_min, k_max + 1))
    n = min(int(n_frames), int(frames.shape[0]))
    chosen = reps.get(str(k))
    if chosen is None:
        raise ValueError(f"no representatives for k={k} (have k in {sorted(reps, key=int)})")
    idx = sorted({int(i) for i in chosen})[:num_frames]
    if not idx or idx[0] < 0 or idx[-1] >= n:
        raise ValueError(f"representatives {list(chosen)} for k={k} are empty or outside [0, {n})")
    k_eff = len(idx)
    clip = np.zeros((num_frames, *frames.shape[1:]), dtype=np.uint8)  # (F, S, S, 3)
    clip[:k_eff] = frames[idx]
    valid = np.zeros(num_frames, dtype=bool)  # (F,)
    valid[:k_eff] = True
    return clip, valid, k_eff


def uniform_frames(frames: np.ndarray, n_frames: int, num_frames: int) -> tuple[np.ndarray, np.ndarray, int]:
    """``num_frames`` frames at equal intervals over the whole sticker (first and last included).

    The equal-interval extraction of :class:`FrameExtraction.UNIFORM`; same return layout as
    :func:`select_frames` with every frame valid. ValueError when the sticker is shorter than ``num_frames``.
    """
    n = min(int(n_frames), int(frames.shape[0]))
    if n < num_frames:
        raise ValueError(f"{n} frame(s): equal-interval extraction needs at least {num_frames}")
    idx = np.linspace(0, n - 1, num_frames).round().astype(int)  # (F,) increasing, distinct since n >= F
    return frames[idx].copy(), np.ones(num_frames, dtype=bool), num_frames


def _probe(raw: dict, k_min: int, k_max: int) -> int:
    """Frame count of a raw sample; raise if it cannot be decoded into a clip (checks all but the pixel data)."""
    meta = json.loads(raw["json"])
    n, size, enc = int(meta["n_frames"]), int(meta["frame_size"]), FrameEncoding(meta["encoding"])
    if n < 1 or size < 1:
        raise ValueError(f"n_frames={n}, frame_size={size}")
    for k in range(k_min, k_max + 1):
        r = meta["reps"][str(k)]
        if not r or not all(isinstance(i, int) and 0 <= i < n for i in r):
            raise ValueError(f"bad representatives for k={k}: {r!r}")
    if enc is FrameEncoding.NPY:
        buf = io.BytesIO(raw["frames.npy"])
        version = np.lib.format.read_magic(buf)
        readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        shape, _, dtype = readers[version](buf)  # header only
        if shape != (n, size, size, 3) or dtype != np.uint8 or len(buf.getvalue()) - buf.tell() != n * size * size * 3:
            raise ValueError(f"frames.npy holds {dtype}{shape}")
        return n
    from PIL import Image

    strips = sorted((int(k.split(".")[1]), k) for k in raw if k.startswith("frames.") and k.endswith("." + enc.value))
    total = 0
    for _, k in strips:
        with Image.open(io.BytesIO(raw[k])) as im:  # parses the header, decodes no pixels
            w, h = im.size
            if im.format != enc.name or w != size or h % size:
                raise ValueError(f"{k}: {im.format} {w}x{h} does not tile {size}x{size} frames")
        total += h // size
    if total != n:
        raise ValueError(f"strips hold {total} frames, meta says {n}")
    return n


class TrainStream(IterableDataset):
    """Infinite, deterministic stream of batches (use ``DataLoader(batch_size=None)``); see module doc.

    Yields {"frames": float32 (B, F, 3, S, S) in [-1, 1], "valid": bool (B, F), "k": long (B,) = k_eff,
    "caption": list[str], "key": list[str], "n_skipped": int (unusable samples so far, this worker)}.
    """

    def __init__(self, cfg: DataConfig, rank: int = 0, world_size: int = 1, start_batch: int = 0):
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        if start_batch < 0:
            raise ValueError(f"start_batch must be >= 0, got {start_batch}")
        self.cfg, self.rank, self.world_size, self.start_batch = cfg, rank, world_size, start_batch
        self.urls = validate_indexes(cfg)

    def _rng(self, stream: int, *purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, self.rank, stream, *purpose])

    def _raw(self, rng: np.random.Generator, tally: _Tally) -> Iterator[dict]:
        """Raw samples (suffix -> bytes, "__key__") of shards drawn with replacement, forever."""
        barren = 0  # shards in a row that gave no sample
        while True:
            url = self.urls[int(rng.integers(len(self.urls)))]
            got, cur = 0, {}
            try:
                with tarfile.open(url, "r|") as tar:  # stream mode: sequential reads only
                    for m in tar:
                        if not m.isfile() or "." not in m.name:
                            continue
                        key, suffix = m.name.split(".", 1)  # webdataset convention: first dot
                        if cur and cur["__key__"] != key:
                            yield cur
                            got, cur = got + 1, {}
                        cur["__key__"] = key
                        cur[suffix.lower()] = tar.extractfile(m).read()
                if cur:
                    yield cur
                    got += 1
            except (OSError, EOFError, tarfile.TarError):
                tally.n += 1  # the sample being read when the shard broke (rest of the shard is lost)
            barren = 0 if got else barren + 1
            if barren > _MAX_BAD_IN_A_ROW:
                raise RuntimeError(f"rank {self.rank}: {barren} shards in a row gave no sample (last {url})")

    def _shuffled(self, src: Iterator[dict], rng: np.random.Generator) -> Iterator[dict]:
        size = self.cfg.shuffle_buffer
        if size <= 1:
            yield from src
            return
        buf: list[dict] = []
        for item in src:
            if len(buf) < size:
                buf.append(item)
                continue
            i = int(rng.integers(size))
            buf[i], item = item, buf[i]
            yield item

    def _probed(self, src: Iterator[dict], tally: _Tally) -> Iterator[dict]:
        bad = short = 0
        # equal-interval extraction cannot use stickers shorter than F: filtered here, by the probe, so that
        # batch membership (and thus resume) is still decided before any pixel is decoded
        min_frames = self.cfg.num_frames if self.cfg.frame_extraction is FrameExtraction.UNIFORM else 1
        for raw in src:
            try:
                n = _probe(raw, self.cfg.k_min, self.cfg.k_max)
            except Exception:  # noqa: BLE001 - any malformed sample is skipped, never fatal
                tally.n += 1
                bad += 1
                if bad > _MAX_BAD_IN_A_ROW:
                    raise RuntimeError(f"rank {self.rank}: {bad} unusable samples in a row (last {raw.get('__key__')})") from None
                continue
            bad = 0
            if n < min_frames:
                short += 1
                if short > _MAX_BAD_IN_A_ROW:
                    raise RuntimeError(f"rank {self.rank}: {short} stickers in a row shorter than {min_frames} frames: "
                                       "nothing for frame_extraction=uniform to use")
                continue
            short = 0
            yield raw

    def _clip(self, raw: dict, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, int, str, str]:
        cfg = self.cfg
        s = decode_sample(raw)  # frames (n, S0, S0, 3) uint8
        if cfg.frame_extraction is FrameExtraction.UNIFORM:
            clip, valid, k_eff = uniform_frames(s["frames"], s["meta"]["n_frames"], cfg.num_frames)
        else:
            clip, valid, k_eff = select_frames(s["frames"], s["meta"]["reps"], s["meta"]["n_frames"], rng,
                                               cfg.k_min, cfg.k_max, cfg.num_frames)
        x = torch.zeros(cfg.num_frames, 3, cfg.image_size, cfg.image_size)  # (F, 3, S, S), padding = 0.0
        v = torch.from_numpy(clip[:k_eff]).permute(0, 3, 1, 2).float()  # (k_eff, 3, S0, S0) in [0, 255]
        if v.shape[-1] != cfg.image_size:
            v = F.interpolate(v, size=(cfg.image_size, cfg.image_size), mode="bilinear", antialias=True, align_corners=False)
        x[:k_eff] = (v / 127.5 - 1.0).clamp_(-1.0, 1.0)
        return x, torch.from_numpy(valid), k_eff, s["caption"], s["key"]

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        w, n_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        # The DataLoader always starts at worker 0, so after a resume physical worker w serves global
        # batches start_batch + w, start_batch + w + W, ...: those of stream o = (start_batch + w) % W.
        o = (self.start_batch + w) % n_workers
        B = self.cfg.batch_size
        tally = _Tally()
        probed = self._probed(self._shuffled(self._raw(self._rng(o, _SHARD), tally), self._rng(o, _SHUFFLE)), tally)
        skip = -(-(self.start_batch - o) // n_workers) if self.start_batch > o else 0  # stream o's batches < start_batch
        pos = 0  # position in this worker's probed stream: seeds the sample's k draw
        for _ in range(skip * B):  # resume: cheap, no pixel decoding (see module doc)
            next(probed)
            pos += 1
        while True:
            items: list[tuple] = []
            while len(items) < B:
                raw = next(probed)
                rng = self._rng(o, _K, pos)
                pos += 1
                try:
                    items.append(self._clip(raw, rng))
                except Exception:  # noqa: BLE001 - pixel data broken behind valid headers: skip it
                    tally.n += 1
            yield {
                "frames": torch.stack([it[0] for it in items]),  # (B, F, 3, S, S) float32 in [-1, 1]
                "valid": torch.stack([it[1] for it in items]),  # (B, F) bool, first k True
                "k": torch.tensor([it[2] for it in items], dtype=torch.long),  # (B,)
                "caption": [it[3] for it in items],
                "key": [it[4] for it in items],
                "n_skipped": tally.n,
            }


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # W workers x many intra-op threads would oversubscribe the CPU


def make_loader(cfg: DataConfig, rank: int = 0, world_size: int = 1, start_batch: int = 0) -> DataLoader:
    """DataLoader over ``TrainStream``; batches come ready-made and worker w serves the rank's batches
    start_batch + w, start_batch + w + W, ... (DataLoader round-robin over an infinite IterableDataset)."""
    workers = cfg.num_workers
    return DataLoader(
        TrainStream(cfg, rank, world_size, start_batch),
        batch_size=None,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_one_thread if workers > 0 else None,
    )
