"""Training clips from WebDataset shards: RDTF's random-k representative frames and loss mask.

RDTF (arXiv 2503.17735), "Dual-mask based Data Utilization Strategy": sticker frame counts are
long-tailed, so instead of sampling frames at equal intervals the frames are clustered "into random
k clusters during training" and the loss mask makes the loss count "only on the first k frames".
Table 6 sets k in 3-8 and the model works on 8-frame clips. The shards already hold, per sticker,
the representative frame indices for every k (``meta["reps"][str(k)]``, temporal order, written by
the clustering stage), so a training sample is: draw k ~ U[k_min, k_max], take those frames, pad
the clip to ``num_frames`` and mark the first ``k_eff`` frames valid (``k_eff < k`` when a sticker
has fewer frames or fewer distinct representatives than k).

Stream (per rank r and worker stream o of W, see Resume), a webdataset pipeline (``data.shard_reader``):

    shard urls (``shard_sampling``):
      resample (default): ``wds.ResampledShards`` over every train shard of every index, *with replacement*,
                          forever, seeded with (seed, r, o)
      split:              epoch e: all shards in an order shuffled with (seed, e) -- the same in every rank and
                          stream -- then shard j of it goes to rank j % world_size (``split_by_node``
                          semantics) and, of that rank's list, shard i to stream i % W; epochs repeat forever
      -> open: local paths / ``pipe:`` by wds ``gopen``, object-store URLs (``s3://``, ``gs://`` ...) by fsspec
         with ``read_block_bytes`` read-ahead; with ``cache_dir``, wds ``FileCache`` copies each object-store
         shard there on first read and re-reads the copy
      -> wds ``tar_file_expander`` + ``group_by_keys``: raw samples (suffix -> bytes; nothing decoded); a shard
         that fails to open or breaks mid-way is counted in ``n_skipped`` and skipped
      -> wds ``shuffle`` buffer of ``shuffle_buffer`` raw samples, ``random.Random`` seeded with (seed, r, o)
      -> cheap probe (json, reps, image headers; no pixels): a bad sample is skipped + counted
      -> groups of ``batch_size`` probed samples = this worker's batches
      -> decode, k draw (numpy RNG seeded by (seed, r, o, the sample's position in the stream)), resize, collate

Every rank and worker thus reads a different, reproducible stream. With resampling several ranks may read
the same shard at the same time and "epochs" are not defined (the number of steps is); with ``split`` each
shard is read by exactly one (rank, stream) per epoch -- streams count their epochs independently (one with
fewer shards cycles faster), and every stream needs a shard: ``world_size * max(1, num_workers)`` <= shards.
The stream of a rank is a deterministic function of (cfg, rank) -- ``num_workers`` included, since each
worker owns a stream and the DataLoader interleaves them -- and of ``world_size`` for ``split``
(with ``resample`` it only bounds ``rank``). Where the bytes come from (local, object store, cache) does
not change it either, as long as reads succeed: fsspec/botocore retry a failed request, but a read that still
fails breaks that shard like a truncated tar does (counted, skipped), and the stream differs from there on.

Resume: ``start_batch`` = batches this rank has already consumed. Batch i of the rank is batch
i // W of stream i % W. The DataLoader always takes its first batch from worker 0, so a resumed
worker w plays stream o = (start_batch + w) % W (o = w when start_batch = 0 or W = 1). Stream o
produced batches o, o + W, ... < start_batch, i.e. ceil((start_batch - o) / W) of them, and the
worker drops that many batches of *probed raw samples* before yielding. The skip reads tar bytes
(from disk, the object store or ``cache_dir``) and parses image headers (~0.1 ms per sample) but decodes
no pixels, draws no k (k is seeded by position) and resizes nothing; it is exact because batch
membership is decided by the probe alone.
Caveat: a sample whose headers are fine but whose pixel data fails to decode is only caught in the
decode step and replaced by the next sample, so a resume that skips past it is one sample off from
the uninterrupted stream. ``data.shards.verify_shards`` decodes every sample, so verified shards
have none.

Float frames are in [-1, 1]; padding frames (valid False) are exactly 0.0 there.
"""

from __future__ import annotations

import io
import json
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import count, islice

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from data.shard_reader import ShardOpener, read_shards, uses_fsspec
from data.shards import INDEX_NAME, SPLITS, FrameEncoding, decode_sample, read_index, shard_urls
from data.storage import LakePath, is_remote, lake_path

_MAX_BAD_IN_A_ROW = 10_000  # consecutive unusable samples/shards before a worker gives up (all data corrupt?)
_SHARD, _SHUFFLE, _K, _EPOCH = 1, 2, 3, 4  # RNG purposes: the element after (seed, rank, stream) in each seed


class _Tally:
    """Unusable samples met by one iteration of one worker (shared by that iteration's generators)."""

    def __init__(self) -> None:
        self.n = 0


class ShardSampling(StrEnum):
    """Which shards each (rank, worker stream) reads; see the module doc."""

    RESAMPLE = "resample"  # with replacement, forever, seeded per (seed, rank, stream): no epochs, ranks may overlap
    SPLIT = "split"  # per epoch every shard read by exactly one (rank, stream); order reshuffled every epoch


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
    shard_sampling: ShardSampling = ShardSampling.RESAMPLE  # resample (with replacement) | split (disjoint epochs)
    cache_dir: str = ""  # local folder: object-store shards copied there on first read, re-read from it ("" = none)
    read_block_bytes: int = 8 << 20  # object-store reads: bytes per ranged GET (fsspec block size / read-ahead)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index_paths", tuple(str(p) for p in self.index_paths))
        for name, enum in (("frame_extraction", FrameExtraction), ("shard_sampling", ShardSampling)):
            try:
                object.__setattr__(self, name, enum(getattr(self, name)))
            except ValueError:
                raise ValueError(f"DataConfig.{name} must be one of {[m.value for m in enum]}, "
                                 f"got {getattr(self, name)!r}") from None
        cache = self.cache_dir
        if not isinstance(cache, str | os.PathLike) or uses_fsspec(str(cache)):
            raise ValueError(f"DataConfig.cache_dir must be a local folder, or '' for no cache, got {cache!r}")
        object.__setattr__(self, "cache_dir", str(cache))
        if not isinstance(self.read_block_bytes, int) or self.read_block_bytes < 1:
            raise ValueError(f"DataConfig.read_block_bytes must be an integer >= 1 (bytes), got {self.read_block_bytes!r}")
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


def _file_sizes(paths: list[LakePath]) -> dict[str, int | None]:
    """Size of each file by ``str(path)`` (None: missing or not a file). Locally one stat per file; on an
    object store one listing per folder -- a HEAD per shard would make every rank's start-up cost one
    round trip per shard (thousands, on a real lake)."""
    out: dict[str, int | None] = {}
    folders: dict[str, list[LakePath]] = {}
    for p in paths:
        if is_remote(p):
            folders.setdefault(str(p.parent), []).append(p)
        else:
            out[str(p)] = p.stat().st_size if p.is_file() else None
    for members in folders.values():
        folder = members[0].parent
        folder.fs.invalidate_cache(folder.path)  # listings are cached per filesystem instance: ask the store
        try:
            entries = folder.fs.ls(folder.path, detail=True)
        except FileNotFoundError:
            entries = []
        sizes = {e["name"].rstrip("/").rsplit("/", 1)[-1]: int(e["size"]) for e in entries if e.get("type") == "file"}
        out.update((str(p), sizes.get(p.name)) for p in members)
    return out


def validate_indexes(cfg: DataConfig) -> list[str]:
    """Shard urls of ``cfg.split`` over all indexes (local paths or fsspec URLs); ValueError naming the problem otherwise.

    Call it before launching ranks: it checks that indexes exist and parse, that each lists at least
    one shard of the split, that every listed shard exists with the indexed size, and that the
    index's k range (when recorded) covers [k_min, k_max]. An index entry's name may be a brace
    pattern (``train-{000000..000003}.tar``, as webdataset writes shard sets; e.g. a hand-written index
    of external shards): it is expanded the way webdataset expands URLs, and its ``bytes`` is then
    the list of the shards' sizes in expansion order. The returned urls are expanded.
    """
    from braceexpand import braceexpand  # webdataset's own url expansion (wds.shardlists.expand_urls)

    if not cfg.index_paths:
        raise ValueError("DataConfig.index_paths is empty: pass at least one shard index.json")
    for raw in cfg.index_paths:
        path = lake_path(raw)  # ValueError naming the allowed protocols for an unknown one
        if path.name != INDEX_NAME and path.is_dir():
            path = path / INDEX_NAME
        if not path.is_file():
            raise ValueError(f"shard index not found: {raw}")
        try:
            doc = read_index(path)
        except (OSError, ValueError) as exc:
            raise ValueError(f"unreadable shard index {path}: {exc}") from exc
        listed = [s for s in doc.get("shards", []) if s.get("split") == cfg.split]
        if not listed:
            raise ValueError(f"shard index {path} lists no {cfg.split!r} shard")
        expected: list[tuple[LakePath, int]] = []
        for s in listed:
            names = list(braceexpand(s["name"]))
            sizes = s["bytes"] if isinstance(s["bytes"], list) else [s["bytes"]]
            if len(sizes) != len(names):
                raise ValueError(f"{path}: entry {s['name']!r} names {len(names)} shard(s) but gives {len(sizes)} size(s)")
            expected += [(path.parent / name, size) for name, size in zip(names, sizes, strict=True)]
        found = _file_sizes([shard for shard, _ in expected])
        for shard, size in expected:
            got = found[str(shard)]
            if got is None:
                raise ValueError(f"shard {shard} listed in {path} is missing")
            if got != size:
                raise ValueError(f"shard {shard} has {got} bytes, {path} says {size} (rewritten?)")
        k_range = doc.get("k_range")
        if k_range and not (k_range[0] <= cfg.k_min and cfg.k_max <= k_range[1]):
            raise ValueError(f"{path} has representatives for k in {k_range}, config asks for [{cfg.k_min}, {cfg.k_max}]")
    return [u for url in shard_urls(cfg.index_paths, cfg.split) for u in braceexpand(url)]


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
        streams = world_size * max(1, cfg.num_workers)
        if cfg.shard_sampling is ShardSampling.SPLIT and len(self.urls) < streams:
            raise ValueError(f"shard_sampling=split gives every shard to one (rank, worker) per epoch: {len(self.urls)} "
                             f"{cfg.split} shard(s) cannot feed world_size x num_workers = {streams} streams; "
                             "use shard_sampling=resample, fewer workers, or more shards")

    def _rng(self, stream: int, *purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.cfg.seed, self.rank, stream, *purpose])

    def _seed(self, *key: int) -> int:
        """A 32-bit seed of ``key`` under ``cfg.seed`` for webdataset's ``random.Random`` stages."""
        return int(np.random.SeedSequence([self.cfg.seed, *key]).generate_state(1)[0])

    def _shards(self, o: int, n_streams: int) -> Iterator[dict]:
        """``{"url": ...}`` of the shards stream ``o`` of ``n_streams`` reads, forever (module doc)."""
        import webdataset as wds

        if self.cfg.shard_sampling is ShardSampling.RESAMPLE:
            seed = self._seed(self.rank, o, _SHARD)
            # worker_seed keyed by the resume stream o: wds' default (pytorch_worker_seed) uses the physical
            # worker id, which after a resume plays another stream
            return iter(wds.ResampledShards(self.urls, seed=self.cfg.seed, worker_seed=lambda: seed, deterministic=True))
        return self._split_epochs(o, n_streams)

    def _split_epochs(self, o: int, n_streams: int) -> Iterator[dict]:
        import webdataset as wds

        for epoch in count():
            # one order for every rank and stream (seeded without them), so the slices below partition it
            order = wds.SimpleShardList(self.urls, seed=self._seed(_EPOCH, epoch))
            # wds.split_by_node / split_by_worker do these same islices, but take rank and worker id from the
            # environment / torch.distributed and get_worker_info(): here the rank is this stream's argument and
            # the worker split goes by resume stream o (physical worker w plays o = (start_batch + w) % W)
            mine = islice(islice(order, self.rank, None, self.world_size), o, None, n_streams)
            n = 0
            for item in mine:
                n += 1
                yield item
            if not n:
                raise RuntimeError(f"shard_sampling=split: rank {self.rank} stream {o} of {n_streams} gets none of the "
                                   f"{len(self.urls)} shards (world_size x workers = {self.world_size * n_streams})")

    def _raw(self, o: int, n_streams: int, tally: _Tally) -> Iterator[dict]:
        """Shuffled raw samples (suffix -> bytes, "__key__", "__url__") of stream ``o``: the webdataset pipeline."""
        import webdataset as wds

        def broken() -> None:
            tally.n += 1  # a shard that failed to open or broke mid-way (its last, maybe partial, sample is lost)

        size = self.cfg.shuffle_buffer
        opener = ShardOpener(self.cfg.read_block_bytes, self.cfg.cache_dir)
        pipeline = wds.DataPipeline(
            lambda: self._shards(o, n_streams),
            lambda shards: read_shards(shards, opener, broken, _MAX_BAD_IN_A_ROW),
            wds.shuffle(size, initial=size, rng=random.Random(self._seed(self.rank, o, _SHUFFLE))) if size > 1 else None,
        )
        return iter(pipeline)

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
        probed = self._probed(self._raw(o, n_workers, tally), tally)
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
