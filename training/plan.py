"""``python -m training --config FILE --dry-run``: validate a training config and print what it would do.

Why: a recipe such as ``configs/paper.yaml`` (Table 6: 50K steps, batch 1 per GPU x 16 GPUs, lr 1e-5) costs
thousands of GPU hours; a typo or a path that the pods do not mount must show up before the launch, and a
person should see in one screen what will run: the network and its size, the latent space and encoders, the
global batch and the ``grad_accum`` it takes on each cluster size, the curriculum and the loss mask.

Nothing is loaded or written: the model is built on the meta device (parameter count only), files are only
checked for existence — a missing one is a warning, not an error, because the machine that plans is often
not the one that trains (the training pods mount ``/models`` and the lake).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from training.config import NAMED_AUTOENCODERS, TrainConfig, resolve_grad_accum

__all__ = ["plan_lines", "world_sizes"]


def world_sizes(cfg: TrainConfig, largest: int = 64) -> dict[int, int]:
    """World sizes up to ``largest`` on which the config runs -> the grad_accum each takes (powers of two and 16)."""
    out = {}
    for world in sorted({1, 2, 4, 8, 16, 32, 64} | ({cfg.global_batch} if cfg.global_batch else set())):
        if world > largest:
            continue
        try:
            out[world] = resolve_grad_accum(cfg, world)
        except ValueError:
            continue
    return out


def _exists(path: str) -> str:
    return "found" if Path(path).exists() else "NOT FOUND on this machine (fine if the training pods mount it)"


def _model_size(cfg: TrainConfig) -> tuple[object, int]:
    import torch

    from model.unet import DFGN, preset

    mcfg = preset(cfg.preset)
    if cfg.temporal_layer is not None:
        mcfg = dataclasses.replace(mcfg, temporal_layer=cfg.temporal_layer)
    with torch.device("meta"):  # shapes only: no memory, no init cost
        n = sum(p.numel() for p in DFGN.from_dataclass(mcfg).parameters())
    return mcfg, n


def plan_lines(cfg: TrainConfig, *, source: str, world: int | None = None) -> list[str]:
    """The plan as printable lines; raises ``ValueError`` if the config cannot run on ``world`` ranks."""
    from data.loader import DataConfig
    from model.diffusion import DiffusionConfig
    from training.curriculum import CurriculumConfig

    world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
    accum = resolve_grad_accum(cfg, world)
    mcfg, n_params = _model_size(cfg)
    diff = DiffusionConfig(**cfg.diffusion)
    cur = CurriculumConfig(**{**cfg.curriculum, "total_steps": cfg.steps, "k_max": mcfg.num_frames})
    data = DataConfig(index_paths=tuple(cfg.index_paths), num_frames=mcfg.num_frames)
    k_lo, k_hi = (data.k_min, data.k_max) if cfg.dual_mask else (mcfg.num_frames, mcfg.num_frames)
    latent = "RGB pixels" if cfg.autoencoder == "pixel" else (
        "tiny random KL autoencoder (tests)" if cfg.autoencoder == "tiny_kl" else f"AutoencoderKL folder {cfg.autoencoder}")
    per_step = cfg.batch_size * accum * world
    lines = [
        f"RDTF training plan — {source} (dry run: nothing loaded or written)",
        f"model        preset {cfg.preset}: DFGN {n_params / 1e9:.3f} B parameters, temporal layer {mcfg.temporal_layer}"
        f" (STI: {mcfg.sti_attention_layers} attention layer(s), {mcfg.sti_heads} heads x {mcfg.sti_head_dim}, kernel "
        f"{mcfg.sti_kernel},1,1 x {mcfg.sti_conv_layers}), widths {list(mcfg.block_out_channels)}, "
        f"{mcfg.layers_per_block} layers/block, head channels {mcfg.attention_head_dim}",
        f"input        {mcfg.num_frames} frames x {mcfg.sample_size}x{mcfg.sample_size} x {mcfg.out_channels} channels, "
        f"in {mcfg.in_channels} (noisy + condition latents); latent space: {latent}",
    ]
    if cfg.autoencoder not in NAMED_AUTOENCODERS:
        lines.append(f"             autoencoder {cfg.autoencoder}: {_exists(cfg.autoencoder)}")
    if cfg.text_clip_pretrained is None and cfg.text_t5_path is None:
        lines.append("text         RANDOM tiny towers (weights=random): results are not comparable with the paper")
    else:
        lines.append(f"text         CLIP {cfg.text_clip_model or 'ViT-H-14'} from {cfg.text_clip_pretrained}"
                     + (f" ({_exists(cfg.text_clip_pretrained)})" if cfg.text_clip_pretrained else " (none)")
                     + f"; T5 from {cfg.text_t5_path}" + (f" ({_exists(cfg.text_t5_path)})" if cfg.text_t5_path else " (none)")
                     + f"; embedding dim {mcfg.cross_attention_dim}")
    lines += [
        f"diffusion    {diff.num_train_timesteps} steps, {diff.beta_schedule} betas {diff.beta_start}..{diff.beta_end}, "
        f"{diff.prediction_type}-prediction",
        f"masks        dual mask {'on' if cfg.dual_mask else 'off (fixed I&T->V)'}, k in [{k_lo}, {k_hi}] ({cfg.frame_extraction} "
        f"frames), loss mask {cfg.loss_mask}, image-only share of one-frame GRT {cfg.p_image_only}, CFG dropout "
        f"text/image/both {cfg.p_drop_text}/{cfg.p_drop_image}/{cfg.p_drop_both}",
        f"curriculum   {cur.mode.value}" + ("" if cur.mode.value != "adaptive" else
                                           f" ({cur.adaptive_map.value} map, Kp {cur.kp} Ki {cur.ki} Kd {cur.kd}, alpha {cur.alpha})")
        + f", static (IPT, PDT, GRT) {cur.start} -> {cur.mid} at {cur.mid_at:.0%} -> {cur.end}",
        f"optimizer    AdamW lr {cfg.lr:g}, warm-up {cfg.warmup_steps} steps, weight decay {cfg.weight_decay}, grad clip "
        f"{cfg.grad_clip}, EMA {cfg.ema_decay}" + (" (none: samples use the trained weights)" if cfg.ema_decay == 0 else ""),
        f"steps        {cfg.steps}; per optimizer step {per_step} clips = batch {cfg.batch_size} x grad_accum {accum} x "
        f"{world} rank(s) -> {cfg.steps * per_step:,} clips in total",
        "cluster      ranks -> grad_accum: " + ", ".join(f"{w} -> {a}" for w, a in world_sizes(cfg).items())
        + ("" if cfg.global_batch else "  (grad_accum fixed: the global batch grows with the ranks; set global_batch "
           "to keep it)"),
        f"precision    {cfg.precision}; {'FSDP2 (params ' + cfg.fsdp_param_dtype + ')' if cfg.fsdp else 'DDP'} when "
        f"ranks > 1; activation checkpointing {cfg.checkpoint_granularity if cfg.grad_checkpointing else 'off'}",
        f"speed        compile {cfg.compile}" + (f" ({cfg.compile_backend}, mode {cfg.compile_mode})" if cfg.compile != "none"
                                                 else "") + f", attention {cfg.attention_backend}, layout "
        f"{cfg.memory_format}, AdamW {cfg.optimizer_impl}, EMA {cfg.ema_impl}",
        f"output       {cfg.out_dir}: checkpoint every {cfg.ckpt_every} steps, keep {cfg.keep_ckpts}; MLflow "
        + (f"{cfg.mlflow_experiment!r} at {cfg.mlflow_uri}" if cfg.mlflow_uri else "off"),
    ]
    lines += [f"shards       {p}: {_exists(p)}" for p in cfg.index_paths]
    return lines
