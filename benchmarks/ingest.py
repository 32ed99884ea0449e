"""Ingest benchmark: decoded frames/s vs. a naive baseline, and peak RSS at two drop sizes.

Baseline (measured in the same run, on the same files): single-process ``PIL.ImageSequence``
decode + ``resize`` per sticker, no compositing/padding/writing — i.e. what a first script would
do. It cannot read MP4/WebM, so the speed ratio is computed on the image-format stickers (GIF,
WebP, APNG) of the larger drop; the full-drop ingest throughput (video included) is printed as well.

Memory: the ingest engine runs in a fresh subprocess for a small and a 4x larger drop; the ratio of
peak RSS (main process + largest worker) shows whether memory grows with drop size.

    bash scripts/dev.sh bench ingest [--n 120] [--size 256] [--workers 0]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image, ImageSequence

from data.drops import read_caption_table
from data.ingest import IngestSettings, ingest_drop
from data.synthetic import make_drop

ROOT = Path(__file__).resolve().parent.parent

IMAGE_EXT = (".gif", ".webp", ".png")


def naive_decode(paths: list[Path], size: int) -> tuple[int, float]:
    t0 = time.perf_counter()
    frames = 0
    for p in paths:
        im = Image.open(io.BytesIO(p.read_bytes()))
        for fr in ImageSequence.Iterator(im):
            fr.convert("RGBA").resize((size, size))
            frames += 1
    return frames, time.perf_counter() - t0


def subset_drop(src: Path, dst: Path) -> list[Path]:
    """A drop holding only the image-format stickers of ``src`` (same bytes)."""
    rows, _ = read_caption_table(str(src))
    dst.mkdir(parents=True)
    keep = [r for r in rows if r.file.endswith(IMAGE_EXT)]
    lines = []
    for r in keep:
        (dst / r.file).write_bytes((src / r.file).read_bytes())
        lines.append(json.dumps({"id": r.id, "file": r.file, "caption": r.caption}))
    (dst / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return [dst / r.file for r in keep]


def _child_rss(drop: str, out: str, size: int, workers: int) -> dict:
    """Run one ingest in this (child) process; report peak RSS of itself and of its workers."""
    rep = ingest_drop(drop, Path(out), IngestSettings(size=size, workers=workers), progress=False)
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"frames": rep.n_frames_total, "stickers": rep.n_ingested, "main_mb": self_mb, "worker_mb": kids_mb}


def measure_rss(drop: Path, out: Path, size: int, workers: int) -> dict:
    code = ("import json; from benchmarks.ingest import _child_rss; "
            f"print(json.dumps(_child_rss({str(drop)!r}, {str(out)!r}, {size}, {workers})))")
    # cwd at the repo root: `python -c` puts the working directory first on sys.path, so `benchmarks` imports
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=120, help="stickers in the small drop (the large one has 4x)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=0, help="0 = all cores")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cores = os.cpu_count() or 1

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        small, large = tmp / "drops" / "small", tmp / "drops" / "large"
        print(f"generating drops: {args.n} and {4 * args.n} stickers (not timed)")
        make_drop(str(small), n=args.n, seed=args.seed, progress=False, workers=min(2, cores))
        make_drop(str(large), n=4 * args.n, seed=args.seed + 1, progress=False, workers=min(2, cores))
        # throughput on the larger drop: per-run start-up (process spawn, imports) is amortised as
        # it would be on a real drop of thousands of stickers
        img_paths = subset_drop(large, tmp / "drops" / "large-images")

        # warm the page cache and the imports for both contenders
        naive_decode(img_paths[:5], args.size)
        base_frames, base_s = naive_decode(img_paths, args.size)
        rep = ingest_drop(str(tmp / "drops" / "large-images"), tmp / "lake" / "img",
                          IngestSettings(size=args.size, workers=args.workers), progress=False)
        ours_fps, base_fps = rep.n_frames_total / rep.wall_s, base_frames / base_s
        full = ingest_drop(str(small), tmp / "lake" / "full", IngestSettings(size=args.size, workers=args.workers), progress=False)

        rss_small = measure_rss(small, tmp / "lake" / "rss-small", args.size, args.workers)
        rss_large = measure_rss(large, tmp / "lake" / "rss-large", args.size, args.workers)

    print(f"\nmachine: {cores} cores; frame size {args.size}; ingest workers {rep.workers}")
    print(f"baseline  naive PIL ImageSequence+resize, 1 process : {base_frames} frames in {base_s:.2f} s = {base_fps:,.0f} frames/s")
    print(f"ingest    decode+composite+pad+hash+Parquet write   : {rep.n_frames_total} frames in {rep.wall_s:.2f} s = {ours_fps:,.0f} frames/s")
    print(f"RATIO ingest/naive frames/s (image formats)          : {ours_fps / base_fps:.2f}x")
    print(f"full drop incl. MP4/WebM: {full.n_frames_total} frames, {full.frames_per_s:,.0f} frames/s, "
          f"{full.n_rejected} rejected {full.rejects_by_reason}")
    for name, r in (("small", rss_small), ("large", rss_large)):
        print(f"peak RSS {name:5s} drop: {r['stickers']} stickers / {r['frames']} frames -> main {r['main_mb']:.0f} MB, "
              f"largest worker {r['worker_mb']:.0f} MB")
    frames_ratio = rss_large["frames"] / max(1, rss_small["frames"])
    print(f"RATIO peak RSS large/small (main)                     : {rss_large['main_mb'] / rss_small['main_mb']:.2f}x "
          f"for {frames_ratio:.1f}x the frames")
    return 0


if __name__ == "__main__":
    sys.exit(main())
