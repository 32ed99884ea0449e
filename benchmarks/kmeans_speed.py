"""Per-sticker k-means speed: batched numpy (``data.kmeans.cluster_stickers``) vs. a scikit-learn loop.

Workload: synthetic stickers whose frame counts follow the paper's long tail (Fig. 2):
n = 2 + floor(lognormal(1.4, 1.1)), capped at 120. Frames are L2-normalised "CLIP-like" embeddings:
a per-sticker base direction plus a slow random walk, with held (duplicated) frames as real stickers
have. Both implementations cluster every k in 3..8 with the same config (n_init=3).

    .venv/bin/python -m benchmarks.kmeans_speed [--n 2000] [--dim 512] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from data.kmeans import KMeansConfig, cluster_stickers, cluster_stickers_sklearn


def synthetic_embeddings(n_stickers: int, dim: int, seed: int = 0, max_frames: int = 120) -> list[np.ndarray]:
    """Long-tail frame counts; base direction + random walk; ~20% of frames repeat the previous one."""
    rng = np.random.default_rng(seed)
    n_frames = np.minimum(2 + np.floor(rng.lognormal(1.4, 1.1, n_stickers)).astype(int), max_frames)
    out = []
    for n in n_frames:
        walk = np.cumsum(rng.standard_normal((n, dim)) * 0.15, axis=0)  # (n, D)
        x = rng.standard_normal(dim) + walk
        hold = np.flatnonzero(rng.random(n) < 0.2)
        for i in hold[hold > 0]:  # held frames: exact duplicates of the previous frame
            x[i] = x[i - 1]
        out.append((x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32))
    return out


def measure(n_stickers: int, dim: int, seed: int = 0) -> dict:
    """Stickers/s of both implementations on the same synthetic stickers (k in 3..8, n_init=3)."""
    embs = synthetic_embeddings(n_stickers, dim, seed)
    cfg = KMeansConfig(seed=seed)
    cluster_stickers(embs[:50], cfg)  # warm-up: imports, allocator, BLAS threads
    cluster_stickers_sklearn(embs[:50], cfg)
    t0 = time.perf_counter()
    cluster_stickers(embs, cfg)
    t_batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    cluster_stickers_sklearn(embs, cfg)
    t_sklearn = time.perf_counter() - t0
    return {
        "batched_stickers_per_s": n_stickers / t_batched,
        "sklearn_stickers_per_s": n_stickers / t_sklearn,
        "speedup": t_sklearn / t_batched,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="number of synthetic stickers")
    ap.add_argument("--dim", type=int, default=512, help="embedding dimension (ViT-B-32: 512)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    res = measure(args.n, args.dim, args.seed)
    print(f"batched : {res['batched_stickers_per_s']:10.1f} stickers/s")
    print(f"sklearn : {res['sklearn_stickers_per_s']:10.1f} stickers/s")
    print(f"speedup : {res['speedup']:10.1f}x")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
