"""Stage-2 benchmark: embeddings, clustering and shards, each against a baseline measured in the same run.

(a) embedding stage frames/s ÷ pure image-tower throughput on pre-made tensors (goal >= 0.9: the
    DataLoader keeps the model fed);
(b) clustering stickers/s ÷ embedding stickers/s (goal >= 5), and batched k-means vs. a per-sticker
    scikit-learn loop (speedup) on long-tailed synthetic embeddings;
(c) shard read samples/s (WebDataset, decoded frames) ÷ decoding the original sticker files again.

    bash scripts/dev.sh bench embed_cluster_shard [--n 40] [--model ViT-B-32] [--size 256]

The CLIP model is randomly initialised (no weights can be downloaded): fine for timing.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import kmeans_speed
from data import lake
from data.clustering import cluster_drop
from data.embed import EmbedSettings, embed_drop
from data.ingest import IngestSettings, ingest_drop
from data.kmeans import KMeansConfig
from data.lake import Lake
from data.media import decode_sticker
from data.shard_reader import make_dataset
from data.sharding import build_shards
from data.shards import FrameEncoding, shard_urls
from data.splits import SplitConfig
from data.synthetic import make_drop
from model.clip import ClipSpec, embed_pixels, load_clip


def pure_model_fps(clip, n_frames: int, batch: int) -> float:
    x = torch.randn(batch, 3, clip.image_size, clip.image_size)
    embed_pixels(clip, x)  # warm-up
    t0, done = time.perf_counter(), 0
    while done < n_frames:
        embed_pixels(clip, x)
        done += batch
    return done / (time.perf_counter() - t0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="stickers in the synthetic drop")
    ap.add_argument("--model", default="ViT-B-32", help="open_clip model (random init) for (a)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--kmeans-stickers", type=int, default=600, help="stickers for the batched-vs-sklearn comparison")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        drop = tmp / "drops" / "bench"
        make_drop(str(drop), n=args.n, seed=args.seed, progress=False, workers=min(2, os.cpu_count() or 1))
        ingest_drop(str(drop), Lake(tmp / "lake").partition(lake.Stage.INGEST, "bench"), IngestSettings(size=args.size),
                    progress=False)
        man = Lake(tmp / "lake").manifest("bench")
        n_frames = int(man.n_frames.sum())

        # (a) embedding stage vs pure model
        spec = ClipSpec(model=args.model, batch_size=args.batch)
        clip = load_clip(spec)
        pure = pure_model_fps(clip, n_frames, args.batch)
        rep = embed_drop(tmp / "lake", "bench", EmbedSettings(clip=spec, num_workers=1), clip=clip, progress=False)
        stage_fps = rep.frames_per_s
        embed_stickers_s = rep.n_stickers / rep.wall_s

        # (b) clustering vs embedding; batched vs sklearn
        crep = cluster_drop(tmp / "lake", "bench", KMeansConfig(), SplitConfig(), progress=False)
        km = kmeans_speed.measure(n_stickers=args.kmeans_stickers, dim=clip.embed_dim, seed=args.seed)

        # (c) shard reading vs decoding the sources again
        build_shards(tmp / "lake", "bench", encoding=FrameEncoding.WEBP, max_count=1000, max_bytes=512 << 20)
        index = Lake(tmp / "lake").shards("bench") / "index.json"
        urls = shard_urls([index], "train") + shard_urls([index], "test")
        list(make_dataset(urls))  # warm the page cache
        t0 = time.perf_counter()
        n_read = sum(1 for _ in make_dataset(urls))
        shard_sps = n_read / (time.perf_counter() - t0)
        files = [drop / f for f in man.file]
        t0 = time.perf_counter()
        for f in files:
            decode_sticker(f.read_bytes(), size=args.size)
        source_sps = len(files) / (time.perf_counter() - t0)
        gifs = [f for f in files if f.suffix == ".gif"]
        t0 = time.perf_counter()
        for f in gifs:
            decode_sticker(f.read_bytes(), size=args.size)
        gif_sps = len(gifs) / (time.perf_counter() - t0) if gifs else float("nan")

    print(f"\nmachine: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}; drop {args.n} stickers / {n_frames} frames "
          f"at {args.size}px; CLIP {args.model} (weights=random, {clip.info['params'] / 1e6:.0f} M params)")
    print(f"(a) pure image tower on pre-made tensors      : {pure:8.1f} frames/s")
    print(f"    embedding stage (DataLoader, 1 worker)     : {stage_fps:8.1f} frames/s")
    print(f"    RATIO stage / pure model                   : {stage_fps / pure:8.2f}   (goal >= 0.9)")
    print(f"(b) clustering k=3..8 + split                  : {crep.stickers_per_s:8.1f} stickers/s")
    print(f"    embedding                                  : {embed_stickers_s:8.1f} stickers/s")
    print(f"    RATIO clustering / embedding               : {crep.stickers_per_s / embed_stickers_s:8.1f}   (goal >= 5)")
    print(f"    batched k-means vs per-sticker sklearn     : {km['batched_stickers_per_s']:.0f} vs {km['sklearn_stickers_per_s']:.1f} "
          f"stickers/s -> SPEEDUP {km['speedup']:.1f}x ({args.kmeans_stickers} stickers, D={clip.embed_dim})")
    print(f"(c) shard read (WebP strips, decoded)          : {shard_sps:8.1f} samples/s")
    print(f"    re-decoding the original files (all fmts)  : {source_sps:8.1f} samples/s   (GIF only: {gif_sps:.1f})")
    print(f"    RATIO shards / sources                     : {shard_sps / source_sps:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
