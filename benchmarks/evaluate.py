"""Evaluation benchmark: videos/s of every metric, each against its bare network forward (same run),
and memory of streaming vs. in-memory FVD statistics at two sample counts.

    bash scripts/dev.sh bench evaluate [--n 8] [--device cpu|cuda] [--counts 2000,20000]

Ratios: ``pipeline / bare`` throughput (1.0 = preprocessing and bookkeeping cost nothing on top of the
network); FVD statistics memory ``in-memory / streaming`` at each count and the growth of each between
the two counts (streaming must stay flat). Metric networks use random weights (same FLOPs as the real ones).
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc

import numpy as np
import torch

from benchmarks.timing import median_time


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rate(fn, n: int, reps: int, device: str) -> float:
    def go():
        fn()
        _sync(device)
    return n / median_time(go, reps)


def fvd_memory(counts: list[int], dim: int = 400, chunk: int = 256) -> list[tuple[int, int, int]]:
    """Peak traced bytes of (streaming StreamingStats, in-memory features + np.cov) for each N."""
    from evaluation.fvd import StreamingStats

    rng = np.random.default_rng(0)
    out = []
    for n in counts:
        tracemalloc.start()
        st = StreamingStats(dim)
        for i in range(0, n, chunk):
            st.update(rng.standard_normal((min(chunk, n - i), dim)))  # features arrive per batch
        _ = st.mean, st.cov()
        stream = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        tracemalloc.start()
        feats = [rng.standard_normal((min(chunk, n - i), dim)) for i in range(0, n, chunk)]
        allf = np.concatenate(feats)  # the naive way: keep every feature vector, then np.cov
        _ = allf.mean(0), np.cov(allf, rowvar=False)
        inmem = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del feats, allf
        out.append((n, stream, inmem))
    return out


def _scipy_recon(pred: np.ndarray, target: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Baseline: the textbook per-frame, per-channel SSIM with scipy (11-tap Gaussian, sigma 1.5) + PSNR."""
    from scipy.ndimage import gaussian_filter

    c1, c2, r = (0.01 * 255) ** 2, (0.03 * 255) ** 2, 5
    ps, ss = [], []
    for v in range(len(pred)):
        for f in np.flatnonzero(mask):
            x, y = pred[v, f].astype(np.float64), target[v, f].astype(np.float64)
            ps.append(10 * np.log10(255.0 ** 2 / max(np.mean((x - y) ** 2), 1e-10)))
            for c in range(3):
                a, b = x[..., c], y[..., c]

                def g(z):
                    return gaussian_filter(z, 1.5, truncate=3.5)[r:-r, r:-r]  # 'valid' 11x11 window
                mx, my = g(a), g(b)
                sxx, syy, sxy = g(a * a) - mx * mx, g(b * b) - my * my, g(a * b) - mx * my
                ss.append(np.mean((2 * mx * my + c1) * (2 * sxy + c2) / ((mx * mx + my * my + c1) * (sxx + syy + c2))))
    return float(np.mean(ps)), float(np.mean(ss))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8, help="videos per measurement (8 frames, 256 px)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--counts", default="2000,20000", help="FVD feature counts for the memory comparison")
    args = ap.parse_args()
    dev, n = args.device, args.n
    rng = np.random.default_rng(0)
    videos = rng.integers(0, 256, (n, 8, 256, 256, 3), dtype=np.uint8)  # (N, F, S, S, 3)
    captions = [f"sticker {i}" for i in range(n)]
    print(f"device {dev}, {n} videos of 8x256x256, torch threads {torch.get_num_threads()}")
    rows = []

    from evaluation.fvd import FVDConfig, FVDEvaluator
    from evaluation.i3d import load_i3d, preprocess_i3d

    i3d, _ = load_i3d(None, device=dev)
    ev = FVDEvaluator(FVDConfig(device=dev, batch_size=n), model=i3d)
    pre = preprocess_i3d(torch.from_numpy(videos)).to(dev)  # (N, 3, 16, 224, 224)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=False):
        bare = _rate(lambda: i3d(pre), n, args.reps, dev)
    full = _rate(lambda: ev.add_fake(videos), n, args.reps, dev)
    rows.append(("FVD (I3D features + stats)", full, "bare I3D forward on pre-made tensors", bare))

    from evaluation.vqa import VQAConfig, VQAEvaluator, load_fastvqa, sample_fragments

    vqa_model, _ = load_fastvqa(None, device=dev)
    for clips in (1, 4):
        cfg = VQAConfig(num_clips=clips, device=dev, batch_size=1)
        vev = VQAEvaluator(cfg, model=vqa_model)
        frags = sample_fragments(videos[0], cfg, torch.Generator().manual_seed(0)).to(dev)  # (clips, 3, 32, 224, 224)
        with torch.inference_mode():
            bare = _rate(lambda frags=frags: vqa_model(frags), 1, args.reps, dev)
        m = max(1, n // 4)
        full = _rate(lambda vev=vev, m=m: vev.add(videos[:m]), m, args.reps, dev)
        rows.append((f"VQA FAST-VQA ({clips} clip{'s' if clips > 1 else ''} x 32 frames)", full,
                     "bare Swin3D forward on pre-sampled fragments", bare))

    from evaluation.clip_similarity import ClipSimConfig, ClipSimilarityEvaluator
    from model.clip import embed_pixels, preprocess_frames

    for model_name in ("rdtf-tiny-clip", "ViT-B-32"):
        cev = ClipSimilarityEvaluator(ClipSimConfig(model=model_name, device=dev))
        pix = preprocess_frames(torch.from_numpy(videos.reshape(-1, 256, 256, 3)), cev.clip.image_size,
                                cev.clip.mean, cev.clip.std)  # (N*F, 3, R, R)

        def full_clip(cev=cev):
            cev.reset()
            cev.add(videos, captions)
            return cev.result()
        rows.append((f"CLIP similarity ({model_name})", _rate(full_clip, n, args.reps, dev),
                     "bare image-tower forward", _rate(lambda cev=cev, pix=pix: embed_pixels(cev.clip, pix), n,
                                                       args.reps, dev)))

    from evaluation.reconstruction import ReconstructionEvaluator, generated_frame_mask

    rev = ReconstructionEvaluator()
    target = rng.integers(0, 256, videos.shape, dtype=np.uint8)
    mask = generated_frame_mask(8, [0, 2, 4, 6])
    rows.append(("PSNR+SSIM (4 generated frames/video)", _rate(lambda: rev.add(videos, target, mask), n, args.reps, dev),
                 "scipy gaussian_filter SSIM + numpy PSNR", _rate(lambda: _scipy_recon(videos, target, mask), n,
                                                                   args.reps, dev)))

    print(f"\n{'metric':<42} {'videos/s':>10}   {'baseline':<46} {'videos/s':>10} {'ratio':>7}")
    for name, full, base_name, base in rows:
        print(f"{name:<42} {full:>10.2f}   {base_name:<46} {base:>10.2f} {full / base:>7.2f}")

    counts = [int(c) for c in args.counts.split(",")]
    t0 = time.perf_counter()
    mem = fvd_memory(counts)
    print(f"\nFVD statistics memory (D=400, features arriving in batches of 256; {time.perf_counter() - t0:.1f} s)")
    print(f"{'N':>8} {'streaming MiB':>14} {'in-memory MiB':>14} {'in-memory/streaming':>20}")
    for nn, s, m in mem:
        print(f"{nn:>8} {s / 2**20:>14.2f} {m / 2**20:>14.2f} {m / s:>20.2f}")
    (n1, s1, m1), (n2, s2, m2) = mem[0], mem[-1]
    print(f"growth {n1} -> {n2} videos: streaming x{s2 / s1:.2f}, in-memory x{m2 / m1:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
