"""Speed levers, each on/off in ONE run: training step, sampling, embedding — ratios, MFU, peak memory, compile time.

Baselines, measured in the same run: the training step as the trainer ran it before the levers (eager, NCHW,
torch's default AdamW, a per-tensor EMA loop), sampling with three sequential fp32 forwards per DDIM step, the
embedding tower in lock-step with its result fetch; and the device's dense matmul peak (bf16 8192³ on a GPU,
fp32 on a CPU) for MFU. MFU counts *model* FLOPs (``torch.utils.flop_counter`` on one eager fwd + bwd:
matmuls, convolutions, attention), so recomputation under activation checkpointing lowers it, as it should.

    bash scripts/dev.sh bench levers                                  # CPU smoke: tiny preset, every lever
    python -m benchmarks.levers --device cuda --preset paper --out levers.json   # one GPU (scripts/gpu_levers.sh)

Sections run in priority order and stop starting new variants once ``--budget-s`` is spent (the lent GPU's
time is short); what was skipped is printed. Random-init weights throughout: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from model.performance import PerfConfig, apply_performance, attention_context
from model.unet import DFGN, preset
from training.optim import ema_update, make_adamw

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class TrainVariant:
    name: str
    perf: PerfConfig = PerfConfig()
    optimizer: str = "default"  # "default" = torch's own choice (the trainer before the levers), else OptimizerImpl
    ema: str = "loop"
    batch: int | None = None  # None: --batch


class Budget:
    def __init__(self, seconds: float):
        self.t0, self.seconds, self.skipped = time.monotonic(), seconds, []

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)

    def allow(self, name: str) -> bool:
        if self.left() > 0:
            return True
        self.skipped.append(name)
        return False


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device, reps: int) -> float:
    _sync(dev)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    _sync(dev)
    return (time.perf_counter() - t0) / reps


def matmul_peak(dev: torch.device) -> tuple[float, str]:
    """Dense matmul FLOP/s measured now: the MFU denominator of this run."""
    if dev.type == "cuda":
        n, dtype = 8192, torch.bfloat16
    else:
        n, dtype = 2048, torch.float32
    a = torch.randn(n, n, device=dev, dtype=dtype)
    a @ a
    sec = _timed(lambda: a @ a, dev, 10 if dev.type == "cuda" else 3)
    return 2 * n ** 3 / sec, f"{str(dtype).removeprefix('torch.')} {n}^3 matmul"


def _autocast(dev: torch.device):
    return torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")


def _train_inputs(model: DFGN, batch: int, dev: torch.device):
    c = model.cfg
    g = torch.Generator(device=dev).manual_seed(0)
    x = torch.randn(batch, c.num_frames, c.in_channels, c.sample_size, c.sample_size, device=dev, generator=g)
    noise = torch.randn(batch, c.num_frames, c.out_channels, c.sample_size, c.sample_size, device=dev, generator=g)
    ctx = torch.randn(batch, 77, c.cross_attention_dim, device=dev, generator=g)
    t = torch.randint(0, 1000, (batch,), device=dev, generator=g)
    return x, noise, ctx, t


def step_flops(preset_name: str, batch: int, dev: torch.device) -> float:
    """Model FLOPs of one training step (fwd + bwd), counted on an eager model."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    model = DFGN.from_dataclass(preset(preset_name)).to(dev)
    x, noise, ctx, t = _train_inputs(model, batch, dev)
    with FlopCounterMode(display=False) as fc, _autocast(dev):
        (model(x, t, ctx).float() - noise).square().mean().backward()
    return float(fc.get_total_flops())


def train_variant(preset_name: str, v: TrainVariant, batch: int, dev: torch.device, steps: int, flops: float,
                  peak: float) -> dict:
    """Build a fresh model with the variant's levers and time its training step (the trainer's: fwd, masked-MSE
    stand-in, bwd, global-norm clip, AdamW, EMA)."""
    torch.manual_seed(0)
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    model = DFGN.from_dataclass(preset(preset_name)).to(dev)
    apply_performance(model, v.perf)
    params = [p for p in model.parameters() if p.requires_grad]
    if v.optimizer == "default":
        opt = torch.optim.AdamW(params, lr=1e-5)
    else:
        opt = make_adamw(params, lr=1e-5, weight_decay=0.0, impl=v.optimizer, device=dev)
    ema = [p.detach().clone().float() for p in params]
    x, noise, ctx, t = _train_inputs(model, batch, dev)

    def step():
        with _autocast(dev), attention_context(v.perf):
            loss = (model(x, t, ctx).float() - noise).square().mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ema_update(ema, params, 0.999, v.ema)

    try:
        first = _timed(step, dev, 2)  # includes compilation (and CUDA-graph recording)
        sec = _timed(step, dev, steps)
    except torch.OutOfMemoryError:
        return {"variant": v.name, "batch": batch, "oom": True}
    compile_s = max(0.0, 2 * (first - sec)) if v.perf.compile != "none" else 0.0  # the first 2 steps' excess
    opt.state.clear()  # free the optimizer state before the next variant builds its model
    out = {"variant": v.name, "batch": batch, "step_ms": sec * 1e3, "samples_per_s": batch / sec,
           "mfu": flops / sec / peak if flops else None, "compile_s": compile_s,
           "peak_gib": torch.cuda.max_memory_allocated(dev) / GIB if dev.type == "cuda" else None}
    return out


def train_section(args, dev: torch.device, peak: float, budget: Budget) -> dict:
    b = args.batch
    cl = "channels_last"
    best = PerfConfig(compile="regional", memory_format=cl)
    variants = [
        TrainVariant("baseline: eager, NCHW, default AdamW, EMA loop"),
        TrainVariant("+ fused AdamW, foreach EMA", optimizer="auto", ema="foreach"),
        TrainVariant("+ channels_last", PerfConfig(memory_format=cl)),
        TrainVariant("+ regional compile", PerfConfig(compile="regional")),
        TrainVariant("all: compile + channels_last + fused", best, optimizer="auto", ema="foreach"),
        TrainVariant("all + checkpointing (stage)", dataclasses.replace(best, checkpointing="stage"), "auto", "foreach"),
        TrainVariant("all + checkpointing (attention)", dataclasses.replace(best, checkpointing="attention"), "auto",
                     "foreach"),
    ]
    for backend in ("flash", "efficient", "cudnn", "math") if dev.type == "cuda" else ("math",):
        variants.append(TrainVariant(f"all, SDPA {backend}", dataclasses.replace(best, attention_backend=backend),
                                     "auto", "foreach"))
    variants += [TrainVariant("batch 1: eager (paper's per-GPU batch)", batch=1),
                 TrainVariant("batch 1: all + CUDA graphs (reduce-overhead)",
                              dataclasses.replace(best, compile_mode="reduce-overhead"), "auto", "foreach", batch=1)]
    if args.full_compile:
        variants.append(TrainVariant("all, full-graph compile", dataclasses.replace(best, compile="full"), "auto",
                                     "foreach"))
    flops = {n: step_flops(args.preset, n, dev) for n in sorted({b, 1})}
    rows = []
    for v in variants:
        if args.no_compile and v.perf.compile != "none":
            continue
        if not budget.allow(f"train: {v.name}"):
            continue
        n = v.batch or b
        torch._dynamo.reset()
        row = train_variant(args.preset, v, n, dev, args.steps, flops[n], peak)
        rows.append(row)
        _print_train(row, next(r for r in rows if r["batch"] == n))  # ratio to the first row of the same batch
    capacity = _checkpoint_capacity(args.preset, dev, best, budget) if dev.type == "cuda" else None
    if capacity is not None:
        print("  (activation checkpointing granularity: 'stage' = each UNetStage, 'attention' = its spatial "
              "transformer and temporal layer)", flush=True)
    return {"flops_per_sample": flops[b] / b, "rows": rows, "clips_per_40gb": capacity}


def _print_train(row: dict, base: dict) -> None:
    if row.get("oom"):
        print(f"  {row['variant']:<48} batch {row['batch']:>3}: out of memory", flush=True)
        return
    ratio = row["samples_per_s"] / base["samples_per_s"] if not base.get("oom") else float("nan")
    mem = f", peak {row['peak_gib']:.1f} GiB" if row["peak_gib"] is not None else ""
    comp = f", compile {row['compile_s']:.0f} s" if row["compile_s"] else ""
    print(f"  {row['variant']:<48} batch {row['batch']:>3}: {row['samples_per_s']:8.2f} samples/s  RATIO "
          f"{ratio:5.2f}x  MFU {row['mfu']:.1%}{mem}{comp}", flush=True)


def _checkpoint_capacity(preset_name: str, dev: torch.device, best: PerfConfig, budget: Budget) -> dict | None:
    """Clips per 40 GB at each checkpointing granularity: peak memory at two batches, a line through them."""
    out = {}
    for gran in ("stage", "attention"):
        if not budget.allow(f"capacity: checkpointing {gran}"):
            continue
        v = TrainVariant(f"capacity {gran}", dataclasses.replace(best, compile="none", checkpointing=gran), "auto",
                         "foreach")
        a, b = (train_variant(preset_name, v, n, dev, 1, 0.0, 1.0) for n in (4, 8))
        if a.get("oom") or b.get("oom"):
            continue
        per_clip = (b["peak_gib"] - a["peak_gib"]) / 4 * GIB
        fixed = a["peak_gib"] * GIB - 4 * per_clip
        out[gran] = {"per_clip_gib": per_clip / GIB, "fixed_gib": fixed / GIB,
                     "clips_per_40gb": int((40e9 - fixed) // per_clip) if per_clip > 0 else None}
        print(f"  checkpointing {gran:<9}: {per_clip / GIB:.2f} GiB per clip + {fixed / GIB:.1f} GiB fixed -> "
              f"{out[gran]['clips_per_40gb']} clips per 40 GB", flush=True)
    return out


# -------------------------------------------------------------------------------------------- sampling


def _pipeline(preset_name: str, dev: torch.device):
    """A random-init pipeline of the preset: the SD VAE shape for latent presets, none for pixel space."""
    from diffusers import AutoencoderKL

    from model.diffusion import DiffusionConfig, make_ddim_scheduler
    from model.pipeline import RDTFPipeline
    from model.pipeline_text_encoder import RDTFTextEncoder
    from model.text_encoder import TextEncoder, text_config_for

    torch.manual_seed(0)
    cfg = preset(preset_name)
    unet = DFGN.from_dataclass(cfg)
    vae = None
    if cfg.in_channels == 8:
        widths = (128, 256, 512, 512) if preset_name.startswith("paper") else (32, 64, 64, 64)
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=widths,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            layers_per_block=2, norm_num_groups=32, sample_size=cfg.sample_size * 8)
    text = TextEncoder(text_config_for(cfg.cross_attention_dim, seed=0))
    pipe = RDTFPipeline(unet=unet, scheduler=make_ddim_scheduler(DiffusionConfig()),
                        text_encoder=RDTFTextEncoder.from_encoder(text), tokenizer=text._t5_tok, vae=vae)
    return pipe.to(dev)


def sample_section(args, dev: torch.device, budget: Budget) -> dict:
    import numpy as np

    from model.sampling import sample_latents

    steps = args.sample_steps
    rows = []
    base = None
    variants = [("baseline: 3 sequential fp32 forwards per step", {"batched": False}, None, "fp32"),
                ("batched guidance (one 3x forward)", {}, None, "fp32"),
                ("+ bf16 U-Net and VAE decode", {}, None, "bf16"),
                ("+ channels_last", {}, PerfConfig(memory_format="channels_last"), "bf16"),
                ("+ regional compile", {}, PerfConfig(compile="regional", memory_format="channels_last"), "bf16")]
    if dev.type == "cuda":
        variants.append(("+ CUDA graphs (reduce-overhead)", {}, PerfConfig(
            compile="regional", compile_mode="reduce-overhead", memory_format="channels_last"), "bf16"))
    best = None
    for name, kw, perf, dtype in variants:
        if args.no_compile and perf is not None and perf.compile != "none":
            continue
        if not budget.allow(f"sample: {name}"):
            continue
        torch._dynamo.reset()
        pipe = _pipeline(args.preset, dev).optimize(perf, dtype=dtype)
        S, F = pipe.image_size, pipe.num_frames
        known = np.zeros((1, F, S, S, 3), np.uint8)

        def one(pipe=pipe, kw=kw, known=known, F=F):
            if kw:  # the sequential baseline goes through the sampler directly (the pipeline always batches)
                ae, C, s = pipe.autoencoder, pipe.autoencoder.latent_channels, pipe.unet.cfg.sample_size
                cond = torch.zeros(1, F, C, s, s, device=dev)
                mask = torch.zeros(1, F, dtype=torch.bool, device=dev)
                lat = sample_latents(pipe.unet, cond, mask, pipe.encode_prompt(["a cat"]), pipe.null_embedding(1),
                                     steps=steps, generator=torch.Generator(device=dev).manual_seed(0), **kw)
                return ae.decode(lat.reshape(F, C, s, s))
            return pipe.sample_batch(["a cat"], known, [0], num_inference_steps=steps, seed=0)

        t0 = time.perf_counter()
        one()
        first = time.perf_counter() - t0
        sec = _timed(one, dev, args.sample_reps)
        row = {"variant": name, "sticker_s": sec, "first_call_s": first}
        base = base or row
        print(f"  {name:<48}: {sec:7.3f} s per sticker ({steps} DDIM steps, dual guidance, incl. VAE decode)  RATIO "
              f"{base['sticker_s'] / sec:5.2f}x" + (f", first call {first:.0f} s" if perf and perf.compile != "none"
                                                       else ""), flush=True)
        rows.append(row)
        best = (name, perf, dtype)
        del pipe
    batch = None
    if best and budget.allow("sample: batch of 16"):
        torch._dynamo.reset()
        pipe = _pipeline(args.preset, dev).optimize(best[1], dtype=best[2])
        S, F = pipe.image_size, pipe.num_frames
        known = np.zeros((16, F, S, S, 3), np.uint8)
        run16 = lambda: pipe.sample_batch(["a cat"] * 16, known, [0], num_inference_steps=steps, seed=0)  # noqa: E731
        run16()
        sec = _timed(run16, dev, 1)
        batch = {"variant": best[0], "stickers_per_s": 16 / sec}
        print(f"  batch of 16 stickers ({best[0]}): {16 / sec:.2f} stickers/s", flush=True)
    return {"steps": steps, "rows": rows, "batch16": batch}


# -------------------------------------------------------------------------------------------- embedding


def embed_section(args, dev: torch.device, budget: Budget) -> dict | None:
    """The embedding stage on a synthetic drop (decode + preprocess in workers, the tower on the device), with
    the tower one batch ahead of the result fetch and in lock-step; and the bare tower's rate."""
    if not budget.allow("embed"):
        return None
    from data import lake
    from data.embed import EmbedSettings, embed_drop
    from data.ingest import IngestSettings, ingest_drop
    from data.lake import Lake
    from data.synthetic import make_drop
    from model.clip import ClipSpec, embed_pixels_on_device, load_clip

    model = "ViT-B-32" if dev.type == "cuda" else "rdtf-tiny-clip"
    spec = ClipSpec(model=model, device=dev.type, batch_size=args.embed_batch)
    clip = load_clip(spec)
    px = torch.randn(args.embed_batch, 3, clip.image_size, clip.image_size)
    embed_pixels_on_device(clip, px)
    bare = args.embed_batch / _timed(lambda: embed_pixels_on_device(clip, px.to(dev)), dev, 5)
    out = {"model": model, "bare_tower_fps": bare}
    with tempfile.TemporaryDirectory() as tmp:
        make_drop(f"{tmp}/drops/e", n=args.embed_stickers, seed=0, progress=False)
        ingest_drop(f"{tmp}/drops/e", Lake(f"{tmp}/lake").partition(lake.Stage.INGEST, "e"),
                    IngestSettings(workers=max(1, (os.cpu_count() or 2) - 1)), progress=False)
        workers = max(1, min(8, (os.cpu_count() or 2) - 1))
        for overlap in (False, True):
            rep = embed_drop(f"{tmp}/lake", "e", EmbedSettings(clip=spec, num_workers=workers, overlap=overlap),
                             progress=False)
            out["overlap" if overlap else "lockstep"] = rep.frames_per_s
    print(f"  {model} at {clip.image_size} px: bare tower {bare:,.0f} frames/s; stage (lake read, decode, resize in "
          f"{workers} workers) lock-step {out['lockstep']:,.0f} frames/s, one batch ahead {out['overlap']:,.0f} frames/s"
          f"  RATIO {out['overlap'] / out['lockstep']:.2f}x", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    ap.add_argument("--preset", default=None, help="DFGN preset (default: paper on a GPU, tiny on a CPU)")
    ap.add_argument("--batch", type=int, default=None, help="training batch (default: 16 on a GPU, 2 on a CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps per variant (default: 10 GPU, 2 CPU)")
    ap.add_argument("--sample-steps", type=int, default=None, help="DDIM steps per sticker (default: 50 GPU, 5 CPU)")
    ap.add_argument("--sample-reps", type=int, default=None, help="timed stickers per variant (default: 5 GPU, 1 CPU)")
    ap.add_argument("--embed-batch", type=int, default=None, help="frames per tower call (default: 256 GPU, 32 CPU)")
    ap.add_argument("--embed-stickers", type=int, default=None, help="synthetic stickers embedded (default: 600 / 24)")
    ap.add_argument("--sections", default="train,sample,embed", help="comma list of train, sample, embed")
    ap.add_argument("--full-compile", action="store_true", help="also time full-graph compile (long compile)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compiled variants (a quick smoke run)")
    ap.add_argument("--budget-s", type=float, default=1e9, help="stop starting new variants after this many seconds")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args(argv)
    dev = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                       ("cpu" if args.device == "auto" else args.device))
    gpu = dev.type == "cuda"
    for name, g, c in (("preset", "paper", "tiny"), ("batch", 16, 2), ("steps", 10, 2), ("sample_steps", 50, 5),
                       ("sample_reps", 5, 1), ("embed_batch", 256, 32), ("embed_stickers", 600, 24)):
        if getattr(args, name) is None:
            setattr(args, name, g if gpu else c)
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    sections = set(args.sections.split(","))
    unknown = sections - {"train", "sample", "embed"}
    if unknown:
        ap.error(f"unknown sections {sorted(unknown)}; allowed: train, sample, embed")
    budget = Budget(args.budget_s)
    peak, how = matmul_peak(dev)
    name = torch.cuda.get_device_name(dev) if gpu else f"CPU, {torch.get_num_threads()} threads"
    print(f"{time.strftime('%Y-%m-%d')} | {name} | torch {torch.__version__} | matmul peak {peak / 1e12:.2f} TFLOP/s "
          f"({how}, the MFU denominator) | preset {args.preset}", flush=True)
    res: dict = {"date": time.strftime("%Y-%m-%d"), "device": name, "torch": torch.__version__, "preset": args.preset,
                 "matmul_peak_flops": peak}
    if "train" in sections:
        print(f"training step (fwd + bwd + clip + AdamW + EMA, {'bf16 autocast' if gpu else 'fp32'}), batch "
              f"{args.batch}, 8 frames:", flush=True)
        res["train"] = train_section(args, dev, peak, budget)
    if "sample" in sections:
        print("sampling one sticker:", flush=True)
        res["sample"] = sample_section(args, dev, budget)
    if "embed" in sections:
        print("embedding stage:", flush=True)
        res["embed"] = embed_section(args, dev, budget)
    if budget.skipped:
        print(f"skipped (budget {args.budget_s:.0f} s spent): {budget.skipped}")
    res["skipped"] = budget.skipped
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2, default=str))
        print(f"results -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
