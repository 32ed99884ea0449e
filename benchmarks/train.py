"""Training benchmark: is the data loader the bottleneck, and how do 1 vs 2 CPU ranks compare?

(a) data-loader samples/s (``data.loader.make_loader`` alone) ÷ samples/s consumed by training steps of
    the ``tiny_pixel`` preset (goal: ratio ≫ 1, the loader never starves the model);
(b) tiny-preset steps/s and samples/s with 1 vs 2 torchrun ranks (gloo), start-up cancelled by timing
    two run lengths and taking the difference.

    bash scripts/dev.sh bench train [--n 24] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from data.embed import EmbedSettings
from data.ingest import IngestSettings
from data.loader import DataConfig, make_loader
from data.splits import SplitConfig
from data.stages import run_data_stages
from data.synthetic import make_drop
from training.launch import LOCAL_TORCHRUN_ENV, local_torchrun_command

ROOT = Path(__file__).resolve().parent.parent


def _train_seconds(index: Path, out: Path, steps: int, nproc: int, batch: int) -> float:
    cfg = {"index_paths": [str(index)], "out_dir": str(out), "preset": "tiny_pixel", "steps": steps,
           "batch_size": batch, "ckpt_every": 10_000, "lr": 2e-4}
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg))
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
    env |= LOCAL_TORCHRUN_ENV  # stores on 127.0.0.1 only (training.launch)
    cmd = local_torchrun_command(nproc, ["-m", "training", "--config", str(path)])
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="stickers in the synthetic drop")
    ap.add_argument("--steps", type=int, default=6, help="extra steps timed beyond a 2-step run")
    ap.add_argument("--batch", type=int, default=2)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_drop(str(tmp / "drops" / "b"), n=args.n, seed=0, progress=False)
        index = run_data_stages(str(tmp / "drops" / "b"), tmp / "lake", "b", ingest=IngestSettings(size=64),
                                embed=EmbedSettings(num_workers=0), split=SplitConfig(max_test_fraction=0.2), max_count=8)

        loader = iter(make_loader(DataConfig(index_paths=(str(index),), image_size=32, batch_size=args.batch)))
        next(loader)
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < 3.0:
            n += len(next(loader)["key"])
        loader_sps = n / (time.perf_counter() - t0)

        res = {}
        for nproc in (1, 2):
            short = _train_seconds(index, tmp / f"r{nproc}a", 2, nproc, args.batch)
            long = _train_seconds(index, tmp / f"r{nproc}b", 2 + args.steps, nproc, args.batch)
            steps_s = args.steps / max(1e-9, long - short)
            res[nproc] = (steps_s, steps_s * args.batch * nproc)

    print(f"\nmachine: {os.cpu_count()} cores; tiny_pixel (3.5 M params), 8 frames x 32x32, batch {args.batch} per rank")
    print(f"(a) data loader alone                 : {loader_sps:8.1f} samples/s")
    print(f"    training consumption (1 rank)     : {res[1][1]:8.2f} samples/s")
    print(f"    RATIO loader / consumption        : {loader_sps / res[1][1]:8.1f}x  (>> 1: the loader is not the bottleneck)")
    print(f"(b) 1 rank : {res[1][0]:.2f} steps/s, {res[1][1]:.2f} samples/s")
    print(f"    2 ranks: {res[2][0]:.2f} steps/s, {res[2][1]:.2f} samples/s (gloo, 1 thread per rank)")
    print(f"    RATIO samples/s 2 ranks / 1 rank  : {res[2][1] / res[1][1]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
