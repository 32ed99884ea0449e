"""``python -m benchmarks.capacity --measure / --measure-gpu``: the measured rates the capacity plan is built from
(FLOP counts, CPU stage rates on a small synthetic drop, GPU probes of the DFGN, VAE and CLIP)."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.capacity import BYTES, FLOPS, PEAK_BF16, RECORDED
from data.lake import Lake


def count_flops() -> dict[str, float]:
    """FLOPs of the modules behind the projection, counted on the meta device (no weights, no compute)."""
    from dataclasses import replace

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from model.unet import DFGN, paper

    def count(fn) -> float:
        with FlopCounterMode(display=False) as fc:
            fn()
        return float(fc.get_total_flops())

    out: dict[str, float] = {}
    with torch.device("meta"):
        big = DFGN.from_dataclass(paper())
        small = DFGN.from_dataclass(replace(paper(), block_out_channels=(64, 128, 192, 256), cross_attention_dim=256))
        x, t = torch.empty(1, 8, 8, 32, 32), torch.full((1,), 500)
        ctx, ctx_s = torch.empty(1, 77, 1024), torch.empty(1, 77, 256)
        x3, t3, ctx3 = torch.empty(3, 8, 8, 32, 32), torch.full((3,), 500), torch.empty(3, 77, 256)
        out["params"] = float(sum(q.numel() for q in big.parameters()))
        out["dfgn_fwd"] = count(lambda: big(x, t, ctx))
        out["dfgn_train"] = count(lambda: big(x, t, ctx).float().square().mean().backward())
        out["dfgn39m_train"] = count(lambda: small(x, t, ctx_s).float().square().mean().backward())
        with torch.no_grad():
            out["dfgn39m_fwd3"] = count(lambda: small(x3, t3, ctx3))
        vae = sd_vae()
        with torch.no_grad():
            out["vae_enc_frame"] = count(lambda: vae.encode(torch.empty(1, 3, 256, 256)))
            out["vae_dec_frame"] = count(lambda: vae.decode(torch.empty(1, 4, 32, 32)))
    try:
        import open_clip

        clip = open_clip.create_model("ViT-B-32", pretrained=None)  # open_clip moves to a device: build on CPU
        with torch.no_grad():
            out["clip_b32_frame"] = count(lambda: clip.encode_image(torch.zeros(1, 3, 224, 224)))
    except Exception as e:  # noqa: BLE001 - open_clip is optional for the count
        print(f"(CLIP FLOPs not counted: {e})")
    return out


def sd_vae():
    """A random-init AutoencoderKL with Stable Diffusion's VAE configuration (f = 8, 4 latent channels)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, latent_channels=4, sample_size=256)


def _dir_bytes(path: Path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in Path(path).rglob(pattern) if f.is_file())


def measure_cpu(n: int = 48, seed: int = 0) -> dict[str, float]:
    """Re-measure the CPU inputs on a small synthetic drop (about a minute on 2 cores)."""
    import numpy as np
    import torch

    from data import lake
    from data.ingest import IngestSettings, ingest_drop
    from data.shard_reader import make_dataset
    from data.sharding import build_shards
    from data.shards import FrameEncoding, shard_urls
    from data.synthetic import make_drop
    from model.clip import preprocess_frames

    out: dict[str, float] = {}
    workers = min(2, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        drop = tmp / "drops" / "cap"
        make_drop(str(drop), n=n, seed=seed, progress=False, workers=workers)
        out["source_sticker"] = sum(f.stat().st_size for f in drop.rglob("*") if f.is_file()
                                    and not f.name.startswith("captions")) / n
        t0 = time.perf_counter()
        ingest_drop(str(drop), Lake(tmp / "lake").partition(lake.Stage.INGEST, "cap"), IngestSettings(size=256, workers=1),
                    progress=False)
        ingest_s = time.perf_counter() - t0
        man = Lake(tmp / "lake").manifest("cap")
        frames = int(man.n_frames.sum())
        out["frames_per_sticker"] = frames / len(man)
        out["ingest_fps_core"] = frames / ingest_s  # decoded in this process: one core
        out["lake_frame"] = _dir_bytes(Lake(tmp / "lake").ingest("cap") / "frames") / frames

        # CLIP preprocessing on the host (what feeds a GPU image tower), one thread
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        t0, done = time.perf_counter(), 0
        for _, fr, _ in Lake(tmp / "lake").sticker_frames("cap"):
            preprocess_frames(torch.from_numpy(fr.copy()), 224, (0.48, 0.46, 0.41), (0.27, 0.26, 0.28))
            done += len(fr)
        out["clip_prep_fps_core"] = done / (time.perf_counter() - t0)
        a = np.random.default_rng(0).standard_normal((2048, 512), dtype=np.float32)
        t0 = time.perf_counter()
        for _ in range(3):
            a @ a.T
        out["cpu_matmul_flops_core"] = 3 * 2 * 2048 * 2048 * 512 / (time.perf_counter() - t0) / threads
        torch.set_num_threads(threads)

        # clusters need embeddings: a tiny random CLIP is enough for the bytes of clusters.parquet
        from data.clustering import cluster_drop
        from data.embed import EmbedSettings, embed_drop
        from data.kmeans import KMeansConfig
        from data.splits import SplitConfig
        from model.clip import ClipSpec

        embed_drop(tmp / "lake", "cap", EmbedSettings(clip=ClipSpec(), num_workers=0), progress=False)
        cluster_drop(tmp / "lake", "cap", KMeansConfig(), SplitConfig(), progress=False)
        emb_dir = Lake(tmp / "lake").published(lake.Stage.EMBEDDINGS, "cap")
        dim = 64  # rdtf-tiny-clip; scale the vector bytes to ViT-B-32's 512
        emb_bytes = _dir_bytes(emb_dir, "*.parquet") / frames
        out["embedding_frame"] = emb_bytes + (512 - dim) * 2
        out["cluster_sticker"] = _dir_bytes(Lake(tmp / "lake").published(lake.Stage.CLUSTERS, "cap"), "*.parquet") / len(man)

        t0 = time.perf_counter()
        build_shards(tmp / "lake", "cap", encoding=FrameEncoding.WEBP, max_count=1000, max_bytes=512 << 20)
        out["shard_write_fps_core"] = frames / (time.perf_counter() - t0)
        index = Lake(tmp / "lake").shards("cap") / "index.json"
        out["shard_frame"] = _dir_bytes(index.parent, "*.tar") / frames
        urls = shard_urls([index], "train") + shard_urls([index], "test")
        list(make_dataset(urls))
        t0 = time.perf_counter()
        n_read = sum(1 for _ in make_dataset(urls))
        out["shard_read_sps_proc"] = n_read / (time.perf_counter() - t0)
    try:
        from benchmarks.embed_cluster_shard import pure_model_fps
        from model.clip import ClipSpec, load_clip

        clip = load_clip(ClipSpec(model="ViT-B-32", batch_size=16))
        out["embed_cpu_fps_core"] = pure_model_fps(clip, 32, 16) / (os.cpu_count() or 1)
    except Exception as e:  # noqa: BLE001
        print(f"(ViT-B-32 not measured: {e})")
    return out


def _cuda_time(fn, reps: int, warmup: int = 2) -> float:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / reps


def _gpu_dfgn(batches: tuple[int, ...], reps: int) -> dict:
    import torch

    from model.unet import DFGN, paper

    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = DFGN.from_dataclass(paper()).to(dev)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5)  # as training/trainer.py: AdamW, grad clipping, EMA in fp32
    ema = [q.detach().clone().float() for q in params]
    res: dict = {"train": {}, "sample": {}}
    for b in batches:
        x, noise = torch.randn(b, 8, 8, 32, 32, device=dev), torch.randn(b, 8, 4, 32, 32, device=dev)
        ctx, t = torch.randn(b, 77, 1024, device=dev), torch.randint(0, 1000, (b,), device=dev)

        def step(x=x, noise=noise, ctx=ctx, t=t):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = (model(x, t, ctx).float() - noise).square().mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                torch._foreach_lerp_(ema, params, 1e-3)
        try:
            torch.cuda.reset_peak_memory_stats()
            sec = _cuda_time(step, reps, 3)
        except torch.OutOfMemoryError:
            res["train"][b] = "oom"
            torch.cuda.empty_cache()
            break
        res["train"][b] = {"samples_per_s": b / sec, "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30}
        print(f"train batch {b:3d}: {b / sec:7.1f} samples/s, peak {res['train'][b]['peak_gib']:.1f} GiB", flush=True)
    opt.state.clear()
    model.eval()
    for b in (1, 16):
        x, ctx = torch.randn(3 * b, 8, 8, 32, 32, device=dev), torch.randn(3 * b, 77, 1024, device=dev)
        t = torch.full((3 * b,), 500, device=dev)

        def fwd(x=x, ctx=ctx, t=t):
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                model(x, t, ctx)
        res["sample"][b] = {"clip_steps_per_s": b / _cuda_time(fwd, reps, 2)}
        print(f"sampling forward, 3 x {b} clips: {res['sample'][b]['clip_steps_per_s']:.1f} clip-steps/s", flush=True)
    return res


def _gpu_vae(reps: int) -> dict:
    import torch

    vae = sd_vae().to("cuda").eval()
    img, lat = torch.randn(64, 3, 256, 256, device="cuda"), torch.randn(64, 4, 32, 32, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        res = {"vae_enc_fps": 64 / _cuda_time(lambda: vae.encode(img), reps, 2),
               "vae_dec_fps": 64 / _cuda_time(lambda: vae.decode(lat), reps, 2)}
    print(f"VAE encode {res['vae_enc_fps']:.0f} frames/s, decode {res['vae_dec_fps']:.0f} frames/s", flush=True)
    return res


def _gpu_clip(reps: int) -> dict:
    import open_clip
    import torch

    clip = open_clip.create_model("ViT-B-32", pretrained=None).to("cuda").eval()
    px = torch.randn(512, 3, 224, 224, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        res = {"embed_fps": 512 / _cuda_time(lambda: clip.encode_image(px), reps, 2)}
    print(f"ViT-B-32 image tower {res['embed_fps']:.0f} frames/s", flush=True)
    return res


def measure_gpu(batches: tuple[int, ...] = (1, 4, 16, 32, 64), reps: int = 8) -> dict:
    """The H200 inputs: a bf16 matmul (the same-run baseline), the DFGN paper preset's training step and sampling
    forward, the SD VAE and the ViT-B-32 tower. Random init, bf16 autocast as in training/trainer.py."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    res: dict = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
                 "matmul_flops": 2 * 8192 ** 3 / _cuda_time(lambda: a @ a, 10, 3)}
    a = None
    for part in (lambda: _gpu_dfgn(batches, reps), lambda: _gpu_vae(reps), lambda: _gpu_clip(reps)):
        try:
            res.update(part())
        except Exception as e:  # noqa: BLE001 - report what could be measured
            print(f"(not measured: {type(e).__name__}: {e})")
        torch.cuda.empty_cache()
    return res


def print_measure(cpu: dict[str, float], flops: dict[str, float]) -> None:
    print(f"{'input':<24} {'recorded':>12} {'measured now':>13} {'ratio':>7}  unit")
    for key, val in cpu.items():
        rec = RECORDED.get(key) or BYTES.get(key)
        if rec is None:
            continue
        print(f"{key:<24} {rec.value:>12.4g} {val:>13.4g} {val / rec.value:>7.2f}  {rec.unit}")
    for key, val in flops.items():
        rec = FLOPS.get(key)
        if rec is None or not rec.value:
            print(f"{key:<24} {'-':>12} {val:>13.4g} {'-':>7}  FLOP")
            continue
        print(f"{key:<24} {rec.value:>12.4g} {val:>13.4g} {val / rec.value:>7.2f}  {rec.unit}")
    print("RATIO = measured now / recorded (1.00: the projection's inputs hold on this machine)")


def print_gpu(res: dict) -> None:
    base = res["matmul_flops"]
    print(f"\n{res['device']}, torch {res['torch']}: bf16 8192^3 matmul {base / 1e12:.0f} TFLOP/s (baseline)")
    f = count_flops()
    for b, r in res["train"].items():
        if isinstance(r, dict):
            ach = r["samples_per_s"] * f["dfgn_train"]
            print(f"DFGN train step, batch {b:>3}: {r['samples_per_s']:7.1f} samples/s = {ach / 1e12:5.0f} TFLOP/s "
                  f"-> RATIO vs matmul {ach / base:.2f}, MFU {ach / PEAK_BF16['H200']:.0%}")
    for b, r in res["sample"].items():
        ach = r["clip_steps_per_s"] * 3 * f["dfgn_fwd"]
        print(f"DFGN sampling forward 3x{b:<3}: {r['clip_steps_per_s']:7.1f} clip-steps/s = {ach / 1e12:5.0f} TFLOP/s "
              f"-> RATIO vs matmul {ach / base:.2f}")
    for key, fk in (("vae_enc_fps", "vae_enc_frame"), ("vae_dec_fps", "vae_dec_frame"), ("embed_fps", "clip_b32_frame")):
        if key in res and f.get(fk):
            ach = res[key] * f[fk]
            print(f"{key:<28}: {res[key]:9.0f} frames/s = {ach / 1e12:5.0f} TFLOP/s -> RATIO vs matmul {ach / base:.2f}")
