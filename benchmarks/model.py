"""DFGN vs. diffusers UNet3DConditionModel at a comparable parameter count: forward and forward+backward time.

Both get the same input (1 clip × 8 frames × 8 channels × 32×32 latents, 77×D text tokens); widths are
reduced so that the comparison runs on a 2-core CPU (``--widths``). Times are medians over ``--reps``.

    bash scripts/dev.sh bench model [--widths 64,128,192,256] [--reps 5]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import torch
from diffusers import UNet3DConditionModel

from benchmarks.timing import median_time
from model.unet import DFGN, paper


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--widths", default="64,128,192,256")
    ap.add_argument("--cross-dim", type=int, default=256)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    widths = tuple(int(w) for w in args.widths.split(","))
    torch.manual_seed(0)

    dfgn = DFGN.from_dataclass(replace(paper(), block_out_channels=widths, cross_attention_dim=args.cross_dim,
                                       num_frames=args.frames))
    unet3d = UNet3DConditionModel(in_channels=8, out_channels=4, block_out_channels=widths, cross_attention_dim=args.cross_dim,
                                  attention_head_dim=8, layers_per_block=2)
    x = torch.randn(1, args.frames, 8, 32, 32)  # (B, F, C, H, W)
    ctx = torch.randn(1, 77, args.cross_dim)
    t = torch.tensor([500])

    def fwd_dfgn():
        with torch.no_grad():
            dfgn(x, t, ctx)

    def fwd_u3d():
        with torch.no_grad():
            unet3d(x.transpose(1, 2), t, ctx)  # UNet3D takes (B, C, F, H, W)

    def train_dfgn():
        dfgn.zero_grad(set_to_none=True)
        dfgn(x, t, ctx).square().mean().backward()

    def train_u3d():
        unet3d.zero_grad(set_to_none=True)
        unet3d(x.transpose(1, 2), t, ctx).sample.square().mean().backward()

    n_d = sum(p.numel() for p in dfgn.parameters())
    n_u = sum(p.numel() for p in unet3d.parameters())
    res = {name: median_time(fn, args.reps) for name, fn in
           [("dfgn_fwd", fwd_dfgn), ("u3d_fwd", fwd_u3d), ("dfgn_train", train_dfgn), ("u3d_train", train_u3d)]}
    print(f"widths {widths}, cross-attn dim {args.cross_dim}, input 1x{args.frames}x8x32x32, torch threads {torch.get_num_threads()}")
    print(f"params        DFGN {n_d / 1e6:7.1f} M   UNet3DConditionModel {n_u / 1e6:7.1f} M   (ratio {n_d / n_u:.2f})")
    print(f"forward       DFGN {res['dfgn_fwd'] * 1e3:7.0f} ms  UNet3DConditionModel {res['u3d_fwd'] * 1e3:7.0f} ms  "
          f"RATIO {res['u3d_fwd'] / res['dfgn_fwd']:.2f}x (UNet3D time / DFGN time)")
    print(f"fwd+backward  DFGN {res['dfgn_train'] * 1e3:7.0f} ms  UNet3DConditionModel {res['u3d_train'] * 1e3:7.0f} ms  "
          f"RATIO {res['u3d_train'] / res['dfgn_train']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
