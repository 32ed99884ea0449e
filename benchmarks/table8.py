"""Table 8 protocol: one U-Net forward pass, DFGN vs. diffusers ``UNet3DConditionModel`` at matched parameters.

Paper, Appendix A.3 / Table 8: "the inference time refers to the duration between a tensor passing through a
U-Net", for 8-frame GIFs at 256x256 ("inputs of shape 1x8x256x256"), single V100, averaged over hundreds
of runs; DFGN 0.96 B parameters / 0.39 s vs. 1.19-1.32 B / 0.42-0.43 s for the I2VGen-XL-based baselines.
Here both networks get the same tensor: the 1x8x256² clip's latent 1x8x4x32x32 (VAE f = 8) concatenated with
its 4-channel condition latent (Table 6: 8 input channels), i.e. 1x8x8x32x32, timestep 500, and the same
text conditioning 1x77x``cross_attention_dim`` (Table 6: 77 tokens, 1024-d for the paper preset).
``UNet3DConditionModel`` mirrors the DFGN's layout (levels, cross-attention levels, layers per block, text
dim, GroupNorm groups) and its widths are scaled until its parameter count is within ``--tolerance`` (5 %)
of the DFGN's, so the ratio compares the temporal design (STI vs. temporal conv + temporal attention) and
not model size. Both counts are printed.

    .venv/bin/python -m benchmarks.table8 [--preset paper_slim|paper|paper_3dconv|tiny] [--reps N]
                                           [--device cpu|cuda] [--precisions fp32,bf16]

Default preset ``paper_slim`` (the paper's layout, 1024-d text and STI at widths 64/128/192/256, the widths
of ``benchmarks/model.py``; 43 M parameters): a full run takes about a minute on 2 shared CPU cores.
``--preset paper`` is Table 8's 0.94 B network (9-40 s per forward on 2 shared CPU cores, ~1.5 min with
``--reps 1``). On CUDA (``torch.cuda.is_available()``) the default device is ``cuda`` and both fp32 and
bf16-autocast absolute times are printed. Times are medians; the two models are timed alternately, round
by round, so drift of a shared machine hits both alike.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import torch
from diffusers import UNet3DConditionModel

from model.unet import DFGN, PRESETS, DFGNConfig

VAE_FACTOR = 8  # SD VAE spatial down-sampling: 256 px -> 32 latent (Sec. 4, Table 6)
LATENT_CHANNELS = 4  # SD VAE latent channels (Table 6)
TIMESTEP = 500  # any timestep: the cost of a forward does not depend on it


class Precision(StrEnum):
    FP32 = "fp32"  # plain float32
    BF16 = "bf16"  # torch.autocast(bfloat16) around the forward


def paper_slim() -> DFGNConfig:
    """The paper's DFGN layout (Table 6: 4 levels, 2 layers, 1024-d text, STI) at widths 64/128/192/256."""
    return replace(PRESETS["paper"](), block_out_channels=(64, 128, 192, 256))


# latent presets only: Table 8 times a latent U-Net (tiny_pixel is a pixel-space toy)
BENCH_PRESETS: dict[str, Callable[[], DFGNConfig]] = {
    "paper_slim": paper_slim, **{k: v for k, v in PRESETS.items() if k != "tiny_pixel"}}
DEFAULT_PRESET = "paper_slim"


@dataclass(frozen=True)
class Table8Config:
    preset: str = DEFAULT_PRESET  # DFGN preset: paper_slim | paper | paper_3dconv | tiny
    frames: int = 8  # Table 8: 8-frame GIFs
    image_size: int = 256  # Table 8: 256x256 pixels; the latent side is image_size / 8
    batch: int = 1  # Table 8: one clip per forward
    text_tokens: int = 77  # Table 6: 77 text tokens (dim = the preset's cross_attention_dim)
    reps: int = 3  # timed forwards per model and precision, after one warm-up (the paper: "hundreds")
    device: str = "cpu"  # torch device: cpu | cuda | cuda:N
    precisions: tuple[str, ...] = (Precision.FP32.value,)  # fp32 and/or bf16 (autocast)
    u3d_heads: int = 8  # UNet3DConditionModel ``attention_head_dim`` (diffusers: it is the number of heads)
    tolerance: float = 0.05  # largest relative parameter mismatch UNet3D vs. DFGN
    seed: int = 0  # weights and inputs

    def __post_init__(self) -> None:
        if self.preset not in BENCH_PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; allowed: {sorted(BENCH_PRESETS)}")
        for p in self.precisions:
            if p not in {e.value for e in Precision}:
                raise ValueError(f"unknown precision {p!r}; allowed: {[e.value for e in Precision]}")
        for name in ("frames", "image_size", "batch", "text_tokens", "reps", "u3d_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.image_size % VAE_FACTOR:
            raise ValueError(f"image_size must be a multiple of {VAE_FACTOR} (VAE factor), got {self.image_size}")
        if not 0 < self.tolerance < 1:
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance}")

    @property
    def latent_size(self) -> int:
        return self.image_size // VAE_FACTOR


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def unet3d_kwargs(cfg: DFGNConfig, widths: Sequence[int], heads: int) -> dict:
    """``UNet3DConditionModel`` arguments with the DFGN's layout and the given widths."""
    down = tuple("CrossAttnDownBlock3D" if x else "DownBlock3D" for x in cfg.cross_attn)
    up = tuple("CrossAttnUpBlock3D" if x else "UpBlock3D" for x in reversed(cfg.cross_attn))
    return dict(sample_size=cfg.sample_size, in_channels=cfg.in_channels, out_channels=cfg.out_channels,
                down_block_types=down, up_block_types=up, block_out_channels=tuple(int(w) for w in widths),
                layers_per_block=cfg.layers_per_block, norm_num_groups=cfg.norm_num_groups,
                cross_attention_dim=cfg.cross_attention_dim, attention_head_dim=heads)


def _u3d_params(cfg: DFGNConfig, widths: Sequence[int], heads: int) -> int:
    with torch.device("meta"):  # shapes only: counts a 1 B model in a fraction of a second
        return n_params(UNet3DConditionModel(**unet3d_kwargs(cfg, widths, heads)))


def match_unet3d(cfg: DFGNConfig, target: int, heads: int, tolerance: float) -> tuple[tuple[int, ...], int]:
    """Widths of a ``UNet3DConditionModel`` with ``cfg``'s layout whose parameter count is closest to ``target``.

    Every DFGN width is scaled by one factor (bisection), rounded to a multiple of lcm(GroupNorm groups,
    heads); then single levels are nudged by one step while that gets closer. Raises ``ValueError`` when
    the best match is off by more than ``tolerance``.
    """
    q = math.lcm(cfg.norm_num_groups, heads)

    def widths_at(s: float) -> tuple[int, ...]:
        return tuple(max(q, round(s * w / q) * q) for w in cfg.block_out_channels)

    cache: dict[tuple[int, ...], int] = {}

    def count(w: tuple[int, ...]) -> int:
        if w not in cache:
            cache[w] = _u3d_params(cfg, w, heads)
        return cache[w]

    lo, hi = 0.05, 4.0
    for _ in range(18):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if count(widths_at(mid)) < target else (lo, mid)
    best = min((widths_at(lo), widths_at(hi)), key=lambda w: abs(count(w) - target))
    improved = True
    while improved:
        improved = False
        for i in range(len(best)):
            for step in (-q, q):
                cand = tuple(w + step if j == i else w for j, w in enumerate(best))
                if min(cand) >= q and abs(count(cand) - target) < abs(count(best) - target):
                    best, improved = cand, True
    rel = abs(count(best) - target) / target
    if rel > tolerance:
        raise ValueError(f"no UNet3DConditionModel width within {tolerance:.0%} of {target} parameters "
                         f"(best {best}: {count(best)}, off by {rel:.1%})")
    return best, count(best)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_medians(fns: dict[str, Callable[[], object]], reps: int,
                        device: torch.device) -> dict[str, float]:
    """Median seconds of every ``fn`` after one warm-up each, timed alternately round by round."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
        _sync(device)
    for _ in range(reps):
        for k, fn in fns.items():
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(cfg: Table8Config) -> dict:
    """Build both U-Nets, time one forward each per precision; returns counts, widths and median seconds."""
    device = torch.device(cfg.device)
    dcfg = replace(BENCH_PRESETS[cfg.preset](), num_frames=cfg.frames)
    if cfg.latent_size % 2 ** (len(dcfg.block_out_channels) - 1):
        raise ValueError(f"latent side {cfg.latent_size} must be divisible by 2**(levels-1) = "
                         f"{2 ** (len(dcfg.block_out_channels) - 1)} for preset {cfg.preset!r}")
    torch.manual_seed(cfg.seed)
    dfgn = DFGN.from_dataclass(dcfg).to(device).eval()
    n_d = n_params(dfgn)
    widths, n_u = match_unet3d(dcfg, n_d, cfg.u3d_heads, cfg.tolerance)
    unet3d = UNet3DConditionModel(**unet3d_kwargs(dcfg, widths, cfg.u3d_heads)).to(device).eval()
    g = torch.Generator().manual_seed(cfg.seed)
    S = cfg.latent_size
    x = torch.randn(cfg.batch, cfg.frames, dcfg.in_channels, S, S, generator=g).to(device)  # (B, F, 4+4, S, S)
    ctx = torch.randn(cfg.batch, cfg.text_tokens, dcfg.cross_attention_dim, generator=g).to(device)  # (B, L, D)
    t = torch.full((cfg.batch,), TIMESTEP, device=device)
    x_u3d = x.transpose(1, 2).contiguous()  # UNet3DConditionModel takes (B, C, F, H, W)
    out: dict = {"n_dfgn": n_d, "n_unet3d": n_u, "dfgn_widths": dcfg.block_out_channels, "unet3d_widths": widths,
                 "temporal_layer": dcfg.temporal_layer, "times": {}}
    for prec in cfg.precisions:
        amp = (torch.autocast(device.type, dtype=torch.bfloat16) if prec == Precision.BF16
               else contextlib.nullcontext())

        def fwd_dfgn(amp=amp):
            with torch.inference_mode(), amp:
                dfgn(x, t, ctx)

        def fwd_u3d(amp=amp):
            with torch.inference_mode(), amp:
                unet3d(x_u3d, t, ctx)

        out["times"][prec] = interleaved_medians({"dfgn": fwd_dfgn, "unet3d": fwd_u3d}, cfg.reps, device)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    cuda = torch.cuda.is_available()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(BENCH_PRESETS),
                    help=f"DFGN preset (default {DEFAULT_PRESET}: about a minute on 2 CPU cores)")
    ap.add_argument("--device", default="cuda" if cuda else "cpu")
    ap.add_argument("--reps", type=int, default=None, help="timed forwards per model (default: 3 on CPU, 100 on CUDA)")
    ap.add_argument("--precisions", default=None, help="comma list of fp32,bf16 (default: fp32 on CPU, both on CUDA)")
    ap.add_argument("--frames", type=int, default=8, help="frames per clip (Table 8: 8)")
    ap.add_argument("--image-size", type=int, default=256, help="pixel side (Table 8: 256 -> latent 32)")
    ap.add_argument("--text-tokens", type=int, default=77, help="text tokens (Table 6: 77)")
    ap.add_argument("--u3d-heads", type=int, default=8, help="UNet3DConditionModel attention_head_dim (= heads)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="largest relative parameter mismatch")
    args = ap.parse_args(argv)
    on_cuda = torch.device(args.device).type == "cuda"
    precisions = (tuple(p.strip() for p in args.precisions.split(",")) if args.precisions
                  else ((Precision.FP32.value, Precision.BF16.value) if on_cuda else (Precision.FP32.value,)))
    cfg = Table8Config(preset=args.preset, frames=args.frames, image_size=args.image_size,
                       text_tokens=args.text_tokens, reps=args.reps or (100 if on_cuda else 3), device=args.device,
                       precisions=precisions, u3d_heads=args.u3d_heads, tolerance=args.tolerance)
    t0 = time.perf_counter()
    res = run(cfg)
    dcfg = BENCH_PRESETS[cfg.preset]()
    S = cfg.latent_size
    where = (torch.cuda.get_device_name(torch.device(cfg.device)) if on_cuda
             else f"cpu, torch threads {torch.get_num_threads()}")
    print(f"Table 8 protocol: one U-Net forward; pixels {cfg.batch}x{cfg.frames}x{cfg.image_size}x{cfg.image_size} -> "
          f"latent {cfg.batch}x{cfg.frames}x{LATENT_CHANNELS}x{S}x{S} (+{dcfg.in_channels - LATENT_CHANNELS} "
          f"condition channels: input {cfg.batch}x{cfg.frames}x{dcfg.in_channels}x{S}x{S}), text "
          f"{cfg.batch}x{cfg.text_tokens}x{dcfg.cross_attention_dim}; device {cfg.device} ({where})")
    print(f"DFGN preset {cfg.preset}: widths {res['dfgn_widths']}, temporal layer {res['temporal_layer']}; "
          f"UNet3DConditionModel widths {res['unet3d_widths']}, {cfg.u3d_heads} heads")
    mism = res["n_unet3d"] / res["n_dfgn"] - 1
    print(f"params   DFGN {res['n_dfgn'] / 1e6:9.1f} M   UNet3DConditionModel {res['n_unet3d'] / 1e6:9.1f} M   "
          f"(mismatch {mism:+.1%}, tolerance {cfg.tolerance:.0%})")
    for prec, tm in res["times"].items():
        label = "fp32" if prec == Precision.FP32 else "bf16 autocast"
        print(f"forward {label:<14} DFGN {tm['dfgn'] * 1e3:9.1f} ms   UNet3DConditionModel {tm['unet3d'] * 1e3:9.1f} ms"
              f"   (median of {cfg.reps})")
    for prec, tm in res["times"].items():
        print(f"RATIO DFGN/UNet3D {prec}: {tm['dfgn'] / tm['unet3d']:.3f} (< 1 = DFGN faster; paper Table 8, not "
              f"parameter-matched: 0.39 s / 0.42-0.43 s = 0.91-0.93)")
    print(f"total {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
