"""Capacity plan for the paper's corpus: wall time, storage and cost of every stage for 1.8 M stickers.

Every projection starts from a per-worker throughput that was *measured* — on the 2-core CPU machine
(README benchmark tables, or this script's ``--measure``) or on one NVIDIA H200 (this script's
``--measure-gpu``) — and scales it linearly to the corpus and the workers you assume
(``wall = work / (rate per worker x workers)``, ``cost = wall x workers x price``). Where a stage was
never timed on a device, the rate comes from a FLOP count (``torch.utils.flop_counter`` on the real
modules, on the meta device) divided by an achieved FLOP rate that *was* measured; every row names its
source. The default run prints the plan from the recorded numbers (below, with their sources) in about a
second and imports no torch.

    .venv/bin/python -m benchmarks.capacity [--markdown] [--cpu-workers 64] [--gpus 8] [--core-hour 0.04]
                                            [--gpu-hour 4.0] [--frames-per-sticker F] [--drop-size 20000]
    .venv/bin/python -m benchmarks.capacity --measure      # < 2 min: re-measure the CPU inputs and the FLOP
                                                           # counts here; prints measured / recorded ratios
    python3 -m benchmarks.capacity --measure-gpu --json-out gpu.json   # on a CUDA machine: the H200 inputs

Ratios printed against a baseline measured in the same run: ``--measure`` prints every re-measured input
divided by its recorded value (1.0 = the projection's inputs hold on this machine); ``--measure-gpu``
prints the achieved TFLOP/s of each model as a fraction of a bf16 8192^3 matmul timed in the same run.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

# ------------------------------------------------------------------------------------------- the corpus

CORPUS_STICKERS = 1_800_000  # paper, Experiments: "We collect 1.8 M animated stickers as training data"
TEST_STICKERS = 500  # paper: 500 test samples
EVAL_TASKS = 4  # t2v, i2v, interpolation, prediction (evaluation_samples)
EVAL_DDIM_STEPS = 25  # paper, Models & Training: 25 DDIM steps at evaluation
CLIP_FRAMES = 8  # frames per clip (paper, Table 6 / DFGN)
PAPER_TRAIN = {"steps": 50_000, "batch_per_gpu": 1, "gpus": 16, "gpu": "A100-40GB"}  # paper, Table 6
PEAK_BF16 = {"H200": 989e12, "A100": 312e12}  # dense bf16 tensor-core peaks (vendor datasheets), FLOP/s
TEXT_TOWER_PARAMS = 354e6 + 335e6  # frozen: OpenCLIP ViT-H-14 text tower + a T5-large-size encoder (assumed)
TEXT_TOKENS = 77  # Table 6


@dataclass(frozen=True)
class Rec:
    """A recorded input: value, unit and where it was measured."""

    value: float
    unit: str
    source: str


README_CPU = "README benchmark table, 2-core CPU"
MEASURED_HERE = "capacity.py --measure, 2-core CPU (shared, loaded)"
H200_PROBE = "capacity.py --measure-gpu, 1x H200, bf16"
H200_EVAL = "benchmarks/evaluate.py --device cuda --n 64, 1x H200"

# Per-worker throughputs. CPU rates are per core (2-core measurements divided by 2: both cores were busy).
RECORDED: dict[str, Rec] = {
    # --- CPU, from the README benchmark tables
    "ingest_fps_core": Rec(709 / 2, "frames/s/core", f"{README_CPU}: ingest 709 frames/s with 2 workers"),
    "embed_cpu_fps_core": Rec(7.0 / 2, "frames/s/core", f"{README_CPU}: ViT-B-32 embedding stage 7.0 frames/s"),
    "cluster_sps_core": Rec(1281 / 2, "stickers/s/core", f"{README_CPU}: k-means k=3..8 + split 1281 stickers/s"),
    "shard_read_sps_proc": Rec(221.0, "samples/s/process", f"{README_CPU}: shard read 221 samples/s"),
    "dfgn39m_train_s": Rec(2.618, "s/step", f"{README_CPU}: DFGN 39 M fwd+bwd 2618 ms at 1x8x8x32x32"),
    "dfgn39m_sample_s": Rec(2.154, "s/DDIM step", f"{README_CPU}: DFGN 39 M batched dual-guidance step 2154 ms"),
    "fvd_cpu_vps_core": Rec(1.56 / 2, "videos/s/core", f"{README_CPU}: FVD 1.56 videos/s"),
    "vqa_cpu_vps_core": Rec(0.07 / 2, "videos/s/core", f"{README_CPU}: FAST-VQA 4 clips 0.07 videos/s"),
    "clipsim_cpu_vps_core": Rec(2.11 / 2, "videos/s/core", f"{README_CPU}: CLIP similarity (ViT-B-32) 2.11 videos/s"),
    "recon_cpu_vps_core": Rec(20.5 / 2, "videos/s/core", f"{README_CPU}: PSNR + SSIM 20.5 videos/s"),
    # --- CPU, measured by --measure on the same machine while other jobs shared its 2 cores (lower bounds)
    "shard_write_fps_core": Rec(73.1, "frames/s/core", f"{MEASURED_HERE}: build_shards (lossless WebP), 1 process"),
    "clip_prep_fps_core": Rec(400.0, "frames/s/core", f"{MEASURED_HERE}: lake read + CLIP resize/normalise, 1 thread"),
    "cpu_matmul_flops_core": Rec(38.9e9, "FLOP/s/core", f"{MEASURED_HERE}: float32 numpy 2048x512 @ 512x2048"),
    # --- GPU: one H200 (torch 2.11, bf16 autocast as in training/trainer.py; random init = the trained model's FLOPs)
    "h200_matmul_flops": Rec(812e12, "FLOP/s", f"{H200_PROBE}: 8192^3 torch.matmul, the same-run baseline"),
    "h200_vae_enc_fps": Rec(594.0, "frames/s/GPU", f"{H200_PROBE}: SD-config AutoencoderKL encode, 256 px"),
    "h200_vae_dec_fps": Rec(312.0, "frames/s/GPU", f"{H200_PROBE}: SD-config AutoencoderKL decode, 256 px"),
    "h200_sample_cps": Rec(43.3, "clip-steps/s/GPU", f"{H200_PROBE}: DFGN paper preset forward, 3 x 16 clips (dual guidance)"),
    "h200_embed_fps": Rec(22339.0, "frames/s/GPU", f"{H200_PROBE}: open_clip ViT-B-32 image tower, batch 512"),
    "h200_fvd_vps": Rec(76.7, "videos/s/GPU", f"{H200_EVAL}: FVD (I3D + stats)"),
    "h200_vqa_vps": Rec(8.09, "videos/s/GPU", f"{H200_EVAL}: FAST-VQA 4 clips x 32 frames"),
    "h200_clipsim_vps": Rec(161.7, "videos/s/GPU", f"{H200_EVAL}: CLIP similarity ViT-B-32"),
    "h200_recon_vps": Rec(64.7, "videos/s/GPU", f"{H200_EVAL}: PSNR + SSIM"),
}

# DFGN paper preset training step on one H200 (fwd + bwd + grad clip + AdamW + EMA), per batch size per GPU:
# samples/s and peak allocated GiB (batch 64 ran out of the 141 GB).
H200_TRAIN: dict[int, tuple[float, float]] = {1: (3.517, 21.2), 4: (14.50, 27.9), 16: (39.17, 64.0), 32: (44.18, 112.1)}

# Forward FLOPs counted with torch.utils.flop_counter (matmuls, convolutions, attention; `--measure` recounts).
FLOPS: dict[str, Rec] = {
    "dfgn_fwd": Rec(1.5008e12, "FLOP/clip", "DFGN paper preset (0.936 B), 1x8x8x32x32 + 77x1024 text, forward"),
    "dfgn_train": Rec(4.4738e12, "FLOP/clip", "DFGN paper preset, forward + backward"),
    "dfgn39m_train": Rec(2.7929e11, "FLOP/clip", "benchmarks/model.py DFGN (widths 64-256), forward + backward"),
    "dfgn39m_fwd3": Rec(2.8074e11, "FLOP/step", "benchmarks/sample.py DFGN, one batched dual-guidance forward"),
    "vae_enc_frame": Rec(2.7272e11, "FLOP/frame", "SD-config AutoencoderKL encoder, 256x256"),
    "vae_dec_frame": Rec(6.2219e11, "FLOP/frame", "SD-config AutoencoderKL decoder, 32x32x4 -> 256x256"),
    "clip_b32_frame": Rec(8.7255e9, "FLOP/frame", "open_clip ViT-B-32 image tower, 224x224"),
}

# Bytes, measured by --measure on a 48-sticker synthetic drop at 256 px.
BYTES: dict[str, Rec] = {
    "source_sticker": Rec(9.37e3, "B/sticker", f"{MEASURED_HERE}: synthetic drop files (flat colours; real GIFs are larger)"),
    "lake_frame": Rec(11.3e3, "B/frame", f"{MEASURED_HERE}: ingest frames parquet (raw RGB, zstd)"),
    "embedding_frame": Rec(1.01e3, "B/frame", f"{MEASURED_HERE}: embeddings parquet, scaled to 512 x fp16"),
    "cluster_sticker": Rec(193.0, "B/sticker", f"{MEASURED_HERE}: clusters.parquet"),
    "shard_frame": Rec(7.43e3, "B/frame", f"{MEASURED_HERE}: WebDataset tars (WebP strips + txt/json + tar headers)"),
    "frames_per_sticker": Rec(7.81, "frames/sticker", f"{MEASURED_HERE}: after ingest (equal frames merged)"),
}


@functools.lru_cache(maxsize=4)
def synthetic_frames_mean(samples: int = 200_000, seed: int = 0) -> float:
    """Mean frame count of the synthetic generator's long tail (paper Fig. 2): min + floor(lognormal), capped."""
    import numpy as np

    from data.synthetic import SyntheticConfig

    cfg = SyntheticConfig()
    tail = np.floor(np.random.default_rng(seed).lognormal(cfg.frames_log_mu, cfg.frames_log_sigma, samples))
    return float(np.minimum(cfg.max_frames, cfg.min_frames + tail).mean())


# ----------------------------------------------------------------------------------------------- the plan


@dataclass
class Plan:
    stickers: int = CORPUS_STICKERS
    frames_per_sticker: float = 0.0  # 0 = the synthetic generator's long-tail mean
    size: int = 256  # training resolution (storage and ingest/shard work scale with its square)
    cpu_workers: int = 64  # cores across all CPU pods (per-drop partitions fan out over them)
    gpus: int = 8  # GPUs for embeddings and training (per-drop embedding pods, or torchrun ranks)
    eval_gpus: int = 1  # the evaluation assets run in one process: one GPU ...
    eval_cpu_cores: int = 16  # ... or one CPU pod
    gpu_scaling: float = 0.9  # data-parallel efficiency applied to multi-GPU rates (1 GPU: 1.0)
    host_cores_per_gpu: int = 12  # CPU cores feeding each GPU (frame decoding / preprocessing)
    core_hour: float = 0.04  # $ per core-hour (assumed list price)
    gpu_hour: float = 4.00  # $ per H200-hour (assumed list price)
    drop_size: int = 20_000  # stickers per drop (= per Dagster partition; near-duplicate search is O(N^2) per drop)
    train_samples: int = PAPER_TRAIN["steps"] * PAPER_TRAIN["batch_per_gpu"] * PAPER_TRAIN["gpus"]
    train_batch: int = 16  # clips per GPU per step (a batch measured on the H200: see H200_TRAIN)
    test_stickers: int = TEST_STICKERS
    embed_dim: int = 512
    ckpts_kept: int = 2
    params: float = 0.936e9
    rec: dict = field(default_factory=lambda: dict(RECORDED))
    flops: dict = field(default_factory=lambda: dict(FLOPS))
    bytes_: dict = field(default_factory=lambda: dict(BYTES))

    def __post_init__(self) -> None:
        for name in ("stickers", "size", "cpu_workers", "gpus", "eval_gpus", "eval_cpu_cores", "host_cores_per_gpu", "drop_size",
                     "test_stickers", "train_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.gpu_scaling <= 1:
            raise ValueError(f"gpu_scaling must be in (0, 1], got {self.gpu_scaling}")
        if self.train_batch not in H200_TRAIN:
            raise ValueError(f"train_batch must be a measured batch size {sorted(H200_TRAIN)}, got {self.train_batch}")
        if self.frames_per_sticker < 0:
            raise ValueError(f"frames_per_sticker must be >= 0 (0 = synthetic mean), got {self.frames_per_sticker}")

    @property
    def fps(self) -> float:
        return self.frames_per_sticker or synthetic_frames_mean()

    @property
    def frames_source(self) -> str:
        return "given" if self.frames_per_sticker else "mean of the synthetic generator's long-tail distribution"

    @property
    def frames(self) -> float:
        return self.stickers * self.fps

    @property
    def area(self) -> float:
        return (self.size / 256) ** 2

    @property
    def drops(self) -> int:
        return math.ceil(self.stickers / self.drop_size)

    def gpu_workers(self, n: int) -> float:
        """Effective GPUs: n x data-parallel efficiency (a single GPU scales perfectly)."""
        return n * (1.0 if n == 1 else self.gpu_scaling)

    def gpu_label(self, n: int, kind: str = "H200") -> str:
        return f"{n} {kind}" + (f" x {self.gpu_scaling:g}" if n > 1 else "")


@dataclass(frozen=True)
class Row:
    stage: str
    device: str
    work: float  # units of work for the whole corpus
    unit: str
    rate: float  # units per second per worker
    source: str
    workers: float  # effective workers (GPU rows: GPUs x scaling efficiency)
    workers_label: str
    price_hour: float  # $ per worker-hour
    storage: float = 0.0  # bytes written by the stage
    storage_note: str = ""
    in_plan: bool = True  # counted in the totals (False: an alternative shown for comparison)

    @property
    def wall_s(self) -> float:
        return self.work / (self.rate * self.workers)

    @property
    def worker_hours(self) -> float:
        return self.wall_s * self.workers / 3600

    @property
    def cost(self) -> float:
        return self.worker_hours * self.price_hour


def _f(p: Plan, key: str) -> float:
    return p.flops[key].value


def train_flops_per_sample(p: Plan) -> float:
    """DFGN fwd+bwd + VAE encoding of the 8 frames (training/trainer.py encodes every frame of the clip)."""
    return _f(p, "dfgn_train") + CLIP_FRAMES * _f(p, "vae_enc_frame")


def sample_flops_per_clip(p: Plan) -> float:
    """One evaluation clip: DDIM steps x a batched 3-way (dual guidance) forward + VAE encode/decode of 8 frames."""
    return EVAL_DDIM_STEPS * 3 * _f(p, "dfgn_fwd") + CLIP_FRAMES * (_f(p, "vae_enc_frame") + _f(p, "vae_dec_frame"))


def cpu_train_flops_core(p: Plan) -> float:
    """Achieved CPU FLOP/s per core in training: the measured 39 M DFGN step over its FLOP count."""
    return _f(p, "dfgn39m_train") / p.rec["dfgn39m_train_s"].value / 2


def cpu_infer_flops_core(p: Plan) -> float:
    return _f(p, "dfgn39m_fwd3") / p.rec["dfgn39m_sample_s"].value / 2


def h200_train_rate(p: Plan, batch: int) -> float:
    """Samples/s on one H200: the measured DFGN step at ``batch`` plus VAE-encoding each sample's 8 frames."""
    return 1 / (1 / H200_TRAIN[batch][0] + CLIP_FRAMES / p.rec["h200_vae_enc_fps"].value)


def h200_mfu(p: Plan, batch: int) -> float:
    """Model FLOPs utilisation of the measured DFGN step (vs the 989 TFLOP/s datasheet bf16 peak)."""
    return _f(p, "dfgn_train") * H200_TRAIN[batch][0] / PEAK_BF16["H200"]


def plan_rows(p: Plan) -> list[Row]:
    core, gpu = p.core_hour, p.gpu_hour
    cw, cl = float(p.cpu_workers), f"{p.cpu_workers} cores"
    gw, gl = p.gpu_workers(p.gpus), p.gpu_label(p.gpus)
    ew, el = p.gpu_workers(p.eval_gpus), p.gpu_label(p.eval_gpus)
    ecw, ecl = float(p.eval_cpu_cores), f"{p.eval_cpu_cores} cores"
    rec = p.rec
    rows: list[Row] = []

    # 1. ingest: decode + composite + resize + hash + lake write (CPU only)
    ing = rec["ingest_fps_core"]
    rows.append(Row("ingest", "CPU", p.frames, "frames", ing.value / p.area, ing.source, cw, cl, core,
                    p.frames * p.bytes_["lake_frame"].value * p.area, "lake frames"))

    # 2. CLIP frame embeddings (ViT-B-32): CPU measured; GPU = min(measured image tower, host preprocessing feed)
    emb_bytes = p.frames * p.bytes_["embedding_frame"].value * p.embed_dim / 512
    e = rec["embed_cpu_fps_core"]
    rows.append(Row("embeddings", "CPU", p.frames, "frames", e.value, e.source, cw, cl, core, emb_bytes, "fp16",
                    in_plan=False))
    tower, prep = rec["h200_embed_fps"], rec["clip_prep_fps_core"]
    feed = prep.value * p.host_cores_per_gpu
    src = (tower.source if tower.value <= feed else
           f"host-bound: {p.host_cores_per_gpu} cores x {prep.value:.0f} frames/s ({prep.source}); "
           f"the bare tower does {tower.value:,.0f}/s ({H200_PROBE})")
    rows.append(Row("embeddings", "GPU", p.frames, "frames", min(tower.value, feed), src, gw, gl, gpu, emb_bytes, "fp16"))

    # 3. frame clusters + split: per-sticker k-means (linear) + per-drop near-duplicate search (2 N^2 D FLOPs)
    km, mm = rec["cluster_sps_core"], rec["cpu_matmul_flops_core"]
    core_s = p.stickers / km.value + p.drops * 2.0 * p.drop_size ** 2 * p.embed_dim / mm.value
    rows.append(Row("clusters + split", "CPU", p.stickers, "stickers", p.stickers / core_s,
                    f"{km.source}; + near-duplicate search, {p.drops} drops x 2N^2D FLOPs at "
                    f"{mm.value / 1e9:.0f} GFLOP/s/core ({mm.source})", cw, cl, core,
                    p.stickers * p.bytes_["cluster_sticker"].value, "clusters.parquet"))

    # 4. WebDataset shards (lossless WebP strips)
    sw = rec["shard_write_fps_core"]
    rows.append(Row("shards", "CPU", p.frames, "frames", sw.value / p.area, sw.source, cw, cl, core,
                    p.frames * p.bytes_["shard_frame"].value * p.area, "tar shards"))

    # 5. training: the paper's sample budget (Table 6: 50 K steps x 16 GPUs x batch 1 = 800 K samples)
    ckpt = p.ckpts_kept * p.params * 16  # fp32 weights + EMA + AdamW m, v
    tf = train_flops_per_sample(p)
    b = p.train_batch
    vae = rec["h200_vae_enc_fps"]
    rows.append(Row("training", "GPU", p.train_samples, "samples", h200_train_rate(p, b),
                    f"{H200_PROBE}: DFGN step at batch {b}/GPU, {H200_TRAIN[b][0]:.1f} samples/s, MFU "
                    f"{h200_mfu(p, b):.0%}, peak {H200_TRAIN[b][1]:.0f} GiB; + 8 frames VAE-encoded per sample at "
                    f"{vae.value:.0f} frames/s", gw, gl, gpu, ckpt, f"{p.ckpts_kept} checkpoints"))
    rows.append(Row("training, paper recipe (batch 1/GPU)", "GPU", p.train_samples, "samples", h200_train_rate(p, 1),
                    f"{H200_PROBE}: batch 1/GPU as in Table 6, {H200_TRAIN[1][0]:.2f} samples/s (MFU {h200_mfu(p, 1):.0%}) "
                    "+ VAE; on the paper's A100s (312 vs 989 TFLOP/s peak) slower still",
                    p.gpu_workers(PAPER_TRAIN['gpus']), p.gpu_label(PAPER_TRAIN['gpus']), gpu, ckpt, in_plan=False))
    ct = cpu_train_flops_core(p)
    rows.append(Row("training", "CPU", p.train_samples, "samples", ct / tf,
                    f"{tf / 1e12:.2f} TFLOP/sample at {ct / 1e9:.0f} GFLOP/s/core, the rate the 39 M DFGN achieved "
                    f"({rec['dfgn39m_train_s'].source})", cw, cl, core, ckpt, in_plan=False))

    # 6. evaluation: 500 test stickers x 4 tasks
    clips = p.test_stickers * EVAL_TASKS
    npy = clips * 2 * CLIP_FRAMES * p.size ** 2 * 3  # generated + ground truth clips, uint8 .npy
    sc, vd = rec["h200_sample_cps"], rec["h200_vae_dec_fps"]
    t_clip = EVAL_DDIM_STEPS / sc.value + CLIP_FRAMES / vd.value + CLIP_FRAMES / vae.value
    rows.append(Row("eval: samples (DDIM 25, dual guidance)", "GPU", clips, "clips", 1 / t_clip,
                    f"{sc.source}; + VAE encode/decode of 8 frames", ew, el, gpu, npy, "samples .npy"))
    sf = sample_flops_per_clip(p)
    ci = cpu_infer_flops_core(p)
    rows.append(Row("eval: samples (DDIM 25, dual guidance)", "CPU", clips, "clips", ci / sf,
                    f"{sf / 1e12:.0f} TFLOP/clip at {ci / 1e9:.0f} GFLOP/s/core, the rate benchmarks/sample.py achieved",
                    ecw, ecl, core, npy, in_plan=False))
    real_and_fake = clips + p.test_stickers
    for name, cpu_key, gpu_key, n in (("eval: FVD", "fvd_cpu_vps_core", "h200_fvd_vps", real_and_fake),
                                      ("eval: VQA (4 clips)", "vqa_cpu_vps_core", "h200_vqa_vps", real_and_fake),
                                      ("eval: CLIP similarity", "clipsim_cpu_vps_core", "h200_clipsim_vps", clips),
                                      ("eval: PSNR/SSIM", "recon_cpu_vps_core", "h200_recon_vps", 2 * p.test_stickers)):
        c, g = rec[cpu_key], rec[gpu_key]
        rows.append(Row(name, "GPU", n, "videos", g.value, g.source, ew, el, gpu))
        rows.append(Row(name, "CPU", n, "videos", c.value, c.source, ecw, ecl, core, in_plan=False))
    return rows


STAGES = ("ingest", "embeddings", "clusters + split", "shards", "training", "eval: samples (DDIM 25, dual guidance)",
          "eval: FVD", "eval: VQA (4 clips)", "eval: CLIP similarity", "eval: PSNR/SSIM")


def totals(rows: list[Row]) -> dict:
    sel = [r for r in rows if r.in_plan]
    return {"wall_s": sum(r.wall_s for r in sel), "storage": sum(r.storage for r in sel), "cost": sum(r.cost for r in sel),
            "stages": len(sel)}


# ------------------------------------------------------------------------------------------- formatting


def fmt_time(s: float) -> str:
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 3 * 86400:
        return f"{s / 3600:.1f} h"
    if s < 730 * 86400:
        return f"{s / 86400:.0f} d"
    return f"{s / 86400 / 365:.0f} y"


def fmt_bytes(b: float) -> str:
    if b <= 0:
        return "-"
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if b >= k:
            return f"{b / k:.1f} {unit}"
    return f"{b:.0f} B"


def fmt_num(x: float) -> str:
    for suf, k in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(x) >= k:
            return f"{x / k:.1f} {suf}"
    return f"{x:.3g}"


def fmt_cost(x: float) -> str:
    return f"${x:,.2f}" if x < 10 else f"${x:,.0f}"


def fmt_rate(x: float) -> str:
    return f"{x:.3g}" if x < 1000 else f"{x:,.0f}"


HEADER = ("stage", "device", "work", "rate per worker", "workers", "wall time", "storage", "cost", "src")


def _sources(rows: list[Row]) -> dict[str, int]:
    ids: dict[str, int] = {}
    for r in rows:
        ids.setdefault(r.source, len(ids) + 1)
    return ids


def table_rows(rows: list[Row]) -> list[tuple[str, ...]]:
    ids = _sources(rows)
    out = []
    for r in rows:
        out.append((r.stage + ("" if r.in_plan else " (alt.)"), r.device, f"{fmt_num(r.work)} {r.unit}",
                    f"{fmt_rate(r.rate)} {r.unit}/s", r.workers_label, fmt_time(r.wall_s),
                    fmt_bytes(r.storage) + (f" {r.storage_note}" if r.storage and r.storage_note else ""),
                    fmt_cost(r.cost), f"[{ids[r.source]}]"))
    return out


def render_markdown(p: Plan, rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for t in table_rows(rows):
        lines.append("| " + " | ".join(c.replace("|", "/") for c in t) + " |")
    tot = totals(rows)
    lines.append(f"| **total** (rows without *alt.*, back to back) | | | | | **{fmt_time(tot['wall_s'])}** "
                 f"| **{fmt_bytes(tot['storage'])}** | **${tot['cost']:,.0f}** | |")
    lines.append("")
    lines += [f"[{i}] {src}  " for src, i in _sources(rows).items()]
    return "\n".join(lines) + "\n\n" + assumptions(p)


def render_text(p: Plan, rows: list[Row]) -> str:
    body = table_rows(rows)
    widths = [max(len(str(c)) for c in col) for col in zip(HEADER, *body)]
    fmt = "  ".join("{:<" + str(w) + "}" for w in widths)
    out = [fmt.format(*HEADER), fmt.format(*("-" * w for w in widths))]
    out += [fmt.format(*t) for t in body]
    tot = totals(rows)
    out.append(f"TOTAL (rows without 'alt.', back to back): wall {fmt_time(tot['wall_s'])}, storage "
               f"{fmt_bytes(tot['storage'])}, cost ${tot['cost']:,.0f}")
    out.append("")
    out += [f"[{i}] {src}" for src, i in _sources(rows).items()]
    return "\n".join(out) + "\n\n" + assumptions(p)


def assumptions(p: Plan) -> str:
    tf = train_flops_per_sample(p)
    text = 2 * TEXT_TOWER_PARAMS * TEXT_TOKENS
    b = p.train_batch
    vae_share = CLIP_FRAMES / p.rec["h200_vae_enc_fps"].value * h200_train_rate(p, b)
    src = p.bytes_["source_sticker"]
    return "\n".join([
        f"Corpus: {p.stickers:,} stickers x {p.fps:.2f} frames ({p.frames_source}) = {fmt_num(p.frames)} frames at "
        f"{p.size} px, in {p.drops} drops of {p.drop_size:,} (one Dagster partition each). Input drops: "
        f"{fmt_bytes(p.stickers * src.value)} at the synthetic {src.value / 1e3:.1f} KB/sticker (real GIFs are larger).",
        f"Training: {p.train_samples:,} samples (paper Table 6: 50 K steps x 16 GPUs x batch 1) at "
        f"{tf / 1e12:.2f} TFLOP/sample (DFGN fwd+bwd {_f(p, 'dfgn_train') / 1e12:.2f} + VAE-encoding 8 frames "
        f"{CLIP_FRAMES * _f(p, 'vae_enc_frame') / 1e12:.2f}; frozen text towers ~{text / 1e12:.2f}, not included). "
        f"On the H200 the VAE takes {vae_share:.0%} of a sample's time at batch {b}: precomputed latents or skipping "
        f"padded frames would cut it.",
        f"Scaling: wall = work / (rate x workers), linear; multi-GPU rows x {p.gpu_scaling:g} data-parallel efficiency; "
        f"{p.host_cores_per_gpu} host cores per GPU. Prices are assumptions (set yours): ${p.core_hour}/core-hour, "
        f"${p.gpu_hour}/H200-hour. Storage measured on synthetic flat-colour stickers at 256 px (x (size/256)^2); "
        f"real artwork compresses less. Totals run the stages back to back; per-drop fan-out overlaps them.",
    ])


# ----------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d = Plan.__dataclass_fields__
    ap.add_argument("--stickers", type=int, default=d["stickers"].default)
    ap.add_argument("--frames-per-sticker", type=float, default=0.0,
                    help="mean frames per sticker (default: the synthetic generator's long-tail mean)")
    ap.add_argument("--size", type=int, default=256, help="training resolution; storage scales with its square")
    ap.add_argument("--cpu-workers", type=int, default=d["cpu_workers"].default, help="CPU cores across all pods")
    ap.add_argument("--gpus", type=int, default=d["gpus"].default)
    ap.add_argument("--gpu-scaling", type=float, default=d["gpu_scaling"].default, help="data-parallel efficiency")
    ap.add_argument("--host-cores-per-gpu", type=int, default=d["host_cores_per_gpu"].default)
    ap.add_argument("--core-hour", type=float, default=d["core_hour"].default, help="$ per core-hour")
    ap.add_argument("--gpu-hour", type=float, default=d["gpu_hour"].default, help="$ per GPU-hour")
    ap.add_argument("--eval-gpus", type=int, default=d["eval_gpus"].default, help="GPUs of the evaluation process")
    ap.add_argument("--drop-size", type=int, default=d["drop_size"].default, help="stickers per drop (partition)")
    ap.add_argument("--train-samples", type=int, default=d["train_samples"].default,
                    help="training samples (default: paper Table 6, 50 K steps x 16 GPUs x batch 1)")
    ap.add_argument("--train-batch", type=int, default=d["train_batch"].default, choices=sorted(H200_TRAIN),
                    help="clips per GPU per step (one of the batch sizes measured on the H200)")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    ap.add_argument("--measure", action="store_true", help="re-measure the CPU inputs and FLOP counts (< 2 min)")
    ap.add_argument("--measure-gpu", action="store_true", help="measure the GPU inputs (CUDA machine)")
    ap.add_argument("--json-out", default=None, help="write --measure/--measure-gpu results here")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.measure or args.measure_gpu:
        from benchmarks.capacity_measure import (
            count_flops,
            measure_cpu,
            measure_gpu,
            print_gpu,
            print_measure,
        )

        result: dict = {}
        if args.measure:
            t0 = time.perf_counter()
            result["flops"] = count_flops()
            result["cpu"] = measure_cpu()
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            print(f"\nmachine: {os.cpu_count()} cores, load average {load:.1f} (other jobs make throughput ratios < 1); "
                  f"measured in {time.perf_counter() - t0:.0f} s")
            print_measure(result["cpu"], result["flops"])
        if args.measure_gpu:
            result["gpu"] = measure_gpu()
            print_gpu(result["gpu"])
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=2, default=str))
        return 0
    p = Plan(stickers=args.stickers, frames_per_sticker=args.frames_per_sticker, size=args.size,
             cpu_workers=args.cpu_workers, gpus=args.gpus, gpu_scaling=args.gpu_scaling,
             host_cores_per_gpu=args.host_cores_per_gpu, core_hour=args.core_hour, gpu_hour=args.gpu_hour,
             drop_size=args.drop_size, train_samples=args.train_samples, train_batch=args.train_batch,
             eval_gpus=args.eval_gpus)
    rows = plan_rows(p)
    if args.json:
        print(json.dumps([{**r.__dict__, "wall_s": r.wall_s, "cost": r.cost} for r in rows], indent=2))
    elif args.markdown:
        print(render_markdown(p, rows))
    else:
        print(render_text(p, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
