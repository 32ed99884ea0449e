"""Sampling benchmark: one batched dual-guidance forward per DDIM step vs. three sequential forwards,
bf16 autocast vs fp32, and image-only generation (text scale 0: the text pass is skipped) vs image & text,
measured in the same run.

    bash scripts/dev.sh bench sample [--widths 64,128,192,256] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch

from benchmarks.timing import median_time
from model.sampling import sample_latents
from model.unet import DFGN, paper


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="64,128,192,256")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    torch.manual_seed(0)
    model = DFGN.from_dataclass(replace(paper(), block_out_channels=widths, cross_attention_dim=256)).eval()
    cond = torch.randn(1, 8, 4, 32, 32)
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, 0] = True
    txt, null = torch.randn(1, 77, 256), torch.zeros(1, 77, 256)

    def run(batched: bool, bf16: bool = False, text_scale: float = 7.5):
        def go():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                sample_latents(model, cond, mask, txt, null, steps=args.steps, generator=torch.Generator().manual_seed(0),
                               batched=batched, text_scale=text_scale)
        return go

    t_batched = median_time(run(True), args.reps)
    t_seq = median_time(run(False), args.reps)
    t_bf16 = median_time(run(True, bf16=True), args.reps)
    t_image = median_time(run(True, text_scale=0.0), args.reps)
    n = sum(p.numel() for p in model.parameters())
    print(f"DFGN {n / 1e6:.1f} M params (widths {widths}), 1 clip x 8 frames x 4 x 32x32, {args.steps} DDIM steps, "
          f"dual guidance, torch threads {torch.get_num_threads()}")
    print(f"three sequential forwards per step : {t_seq:6.2f} s ({t_seq / args.steps * 1e3:.0f} ms/step)")
    print(f"one batched forward per step       : {t_batched:6.2f} s ({t_batched / args.steps * 1e3:.0f} ms/step)")
    print(f"RATIO sequential / batched         : {t_seq / t_batched:6.2f}x")
    print(f"bf16 autocast (batched)            : {t_bf16:6.2f} s -> RATIO fp32 / bf16 {t_batched / t_bf16:.2f}x "
          "(CPU autocast; on GPU see the device notes)")
    print(f"image-only (generate_image, 2 passes): {t_image:6.2f} s -> RATIO image&text / image-only "
          f"{t_batched / t_image:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
