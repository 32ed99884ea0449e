"""Sampling: DDIM with dual classifier-free guidance over text and image conditions (paper Table 6).

Table 6 sampling parameters: DDIM, 50 steps, η = 1.0, text guidance 7.5, image guidance 7.5 (the
experiments section reports 25 steps; 50 is the default here, configurable). The scheduler is built by
``model.diffusion.make_ddim_scheduler`` on exactly the training betas.

Dual guidance (the InstructPix2Pix-style decomposition, matching the three condition-dropout cases used
in training — drop both, drop text only, keep both)::

    ε = ε(∅, ∅) + s_img · (ε(∅, img) − ε(∅, ∅)) + s_txt · (ε(txt, img) − ε(∅, img))

With s_img = s_txt = 0 this is the unconditional prediction; with s_img = 1, s_txt = 1 the fully
conditional one. The three predictions come from ONE batched forward pass per step (3·B clips).
Known frames enter as condition latents at their positions (concatenated channels, like training);
``paste_known`` replaces them in the output by their exact latents.

Image-only generation (task ``generate_image``, Table 7's generation rows without text guidance, trained as
the "gen-image-only@i" mask family): one known frame, no caption, s_txt = 0. The text term then vanishes
exactly, so that pass is skipped (2·B clips per step).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler
from tqdm.auto import tqdm

from model.diffusion import DiffusionConfig, make_ddim_scheduler
from model.masks import SamplingTask
from model.performance import attention_context
from model.unet import DFGN


def guided_epsilon(eps_uncond: torch.Tensor, eps_image: torch.Tensor, eps_full: torch.Tensor,
                   text_scale: float, image_scale: float) -> torch.Tensor:
    """Dual classifier-free guidance (see module docstring)."""
    return eps_uncond + image_scale * (eps_image - eps_uncond) + text_scale * (eps_full - eps_image)


def condition_positions(task: SamplingTask | str, n_images: int, num_frames: int, positions: list[int] | None) -> list[int]:
    """Frame positions of the given images for a task (explicit ``positions`` win)."""
    task = SamplingTask.parse(task)
    if task is SamplingTask.GENERATE_IMAGE and n_images != 1:
        raise ValueError(f"generate_image (image-only, no text) needs exactly one image, got {n_images}")
    if positions is not None:
        if len(positions) != n_images or len(set(positions)) != n_images or not all(0 <= p < num_frames for p in positions):
            raise ValueError(f"positions {positions} must be {n_images} distinct frame indices in [0, {num_frames})")
        return list(positions)
    if task is SamplingTask.GENERATE:
        if n_images > 1:
            raise ValueError("generate takes at most one image (its position defaults to frame 0)")
        return [0] * n_images
    if task is SamplingTask.GENERATE_IMAGE:  # exactly one image: checked above
        return [0]
    if n_images < 1 or n_images >= num_frames:
        raise ValueError(f"{task} needs between 1 and {num_frames - 1} known frames, got {n_images}")
    if task is SamplingTask.INTERPOLATE:
        if n_images < 2:
            raise ValueError("interpolate needs at least 2 known frames")
        return [int(round(x)) for x in np.linspace(0, num_frames - 1, n_images)]
    if task is SamplingTask.PREDICT_FORWARD:
        return list(range(n_images))
    return list(range(num_frames - n_images, num_frames))  # predict_backward: known frames at the end


@torch.no_grad()
def sample_latents(
    model: DFGN,
    cond_latents: torch.Tensor,
    cond_mask: torch.Tensor,
    text_emb: torch.Tensor,
    null_emb: torch.Tensor,
    *,
    steps: int = 50,
    eta: float = 1.0,
    text_scale: float = 7.5,
    image_scale: float = 7.5,
    generator: torch.Generator | None = None,
    paste_known: bool = True,
    batched: bool = True,
    diffusion: DiffusionConfig = DiffusionConfig(),
    scheduler: DDIMScheduler | None = None,
    progress: bool = False,
    on_step=None,
) -> torch.Tensor:
    """cond_latents (B, F, C, h, w), cond_mask (B, F) bool, text/null embeddings (B, L, D) -> latents (B, F, C, h, w).

    ``scheduler``: a DDIM scheduler to copy the configuration of (a packaged pipeline's); default: built from
    ``diffusion``. A fresh instance is used per call, so concurrent calls never share timestep state.
    ``on_step``: called after each DDIM step (progress bars of callers that sample many batches).
    """
    B, F, C, h, w = cond_latents.shape
    sched = DDIMScheduler.from_config(scheduler.config) if scheduler is not None else make_ddim_scheduler(diffusion)
    sched.set_timesteps(steps)
    dev, dtype = cond_latents.device, cond_latents.dtype
    cond = cond_latents * cond_mask[:, :, None, None, None].to(dtype)  # (B, F, C, h, w)
    zeros = torch.zeros_like(cond)
    x = torch.randn(cond.shape, generator=generator, device=dev, dtype=dtype) * sched.init_noise_sigma
    # the guidance passes (visual condition, text): unconditional, image only, image + text; with no text guidance
    # (image-only generation) the s_txt term is exactly 0, so its pass is skipped
    passes = [(zeros, null_emb), (cond, null_emb)] + ([(cond, text_emb)] if text_scale != 0 else [])
    # the U-Net may hold bf16 weights (RDTFPipeline.optimize): its inputs follow them, its noise estimate comes
    # back as fp32 for the guidance combination and the DDIM update
    mdt = next(model.parameters()).dtype
    ctx_all = torch.cat([e for _, e in passes], 0).to(mdt)  # (P·B, L, D), the same at every step
    for t in tqdm(sched.timesteps, desc="DDIM", disable=not progress, leave=False):
        with attention_context(model.perf):
            if batched:
                inp = torch.cat([torch.cat([x, c], 2) for c, _ in passes], 0).to(mdt)  # (P·B, F, 2C, h, w)
                eps_all = model(inp, t, ctx_all).float().chunk(len(passes))
            else:
                eps_all = [model(torch.cat([x, c], 2).to(mdt), t, e.to(mdt)).float() for c, e in passes]
        eps_u, eps_i = eps_all[0], eps_all[1]
        eps_f = eps_all[2] if len(passes) == 3 else eps_i
        eps = guided_epsilon(eps_u, eps_i, eps_f, text_scale, image_scale)
        x = sched.step(eps, t, x, eta=eta, generator=generator).prev_sample
        if on_step is not None:
            on_step()
    if paste_known:
        x = torch.where(cond_mask[:, :, None, None, None], cond_latents, x)
    return x


@dataclass
class StickerResult:
    frames: np.ndarray  # (F, H, W, 3) uint8
    durations_ms: list[int]
    task: str
    prompt: str
