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
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from model import checkpoints as ck
from model.autoencoder import AutoencoderConfig, AutoencoderKind, load_autoencoder, tiny_kl_config
from model.diffusion import DiffusionConfig, make_ddim_scheduler
from model.masks import SamplingTask
from model.text_encoder import TextEncoder, text_config_for
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
    progress: bool = False,
) -> torch.Tensor:
    """cond_latents (B, F, C, h, w), cond_mask (B, F) bool, text/null embeddings (B, L, D) -> latents (B, F, C, h, w)."""
    B, F, C, h, w = cond_latents.shape
    sched = make_ddim_scheduler(diffusion)
    sched.set_timesteps(steps)
    dev, dtype = cond_latents.device, cond_latents.dtype
    cond = cond_latents * cond_mask[:, :, None, None, None].to(dtype)  # (B, F, C, h, w)
    zeros = torch.zeros_like(cond)
    x = torch.randn(cond.shape, generator=generator, device=dev, dtype=dtype) * sched.init_noise_sigma
    # the guidance passes (visual condition, text): unconditional, image only, image + text; with no text guidance
    # (image-only generation) the s_txt term is exactly 0, so its pass is skipped
    passes = [(zeros, null_emb), (cond, null_emb)] + ([(cond, text_emb)] if text_scale != 0 else [])
    for t in tqdm(sched.timesteps, desc="DDIM", disable=not progress, leave=False):
        if batched:
            inp = torch.cat([torch.cat([x, c], 2) for c, _ in passes], 0)  # (P·B, F, 2C, h, w)
            eps_all = model(inp, t, torch.cat([e for _, e in passes], 0)).chunk(len(passes))
        else:
            eps_all = [model(torch.cat([x, c], 2), t, e) for c, e in passes]
        eps_u, eps_i = eps_all[0], eps_all[1]
        eps_f = eps_all[2] if len(passes) == 3 else eps_i
        eps = guided_epsilon(eps_u, eps_i, eps_f, text_scale, image_scale)
        x = sched.step(eps, t, x, eta=eta, generator=generator).prev_sample
    if paste_known:
        x = torch.where(cond_mask[:, :, None, None, None], cond_latents, x)
    return x


@dataclass
class StickerResult:
    frames: np.ndarray  # (F, H, W, 3) uint8
    durations_ms: list[int]
    task: str
    prompt: str


class RDTFPipeline:
    """Checkpoint -> animated stickers (text->GIF, image&text->GIF, image->GIF, interpolation, pre/post prediction)."""

    def __init__(self, model: DFGN, text: TextEncoder, vae, *, image_size: int, default_duration_ms: int = 100,
                 device: str = "cpu"):
        self.model, self.text, self.vae = model.eval(), text.eval(), vae
        self.image_size, self.num_frames = image_size, model.cfg.num_frames
        self.default_duration_ms, self.device = default_duration_ms, torch.device(device)

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path, *, use_ema: bool = True, device: str = "cpu") -> RDTFPipeline:
        """Every unusable checkpoint (missing/truncated/garbage files, bad JSON, shapes that do not fit, a file
        instead of a folder) raises ``model.checkpoints.CheckpointError`` — a ValueError naming the file and the
        problem in one line — before or instead of a loader's own exception."""
        ckpt = _resolve_checkpoint(Path(checkpoint_dir))
        files = (ck.MODEL_CONFIG, ck.MODEL_WEIGHTS, ck.TEXT, ck.TRAINER) + ((ck.EMA,) if use_ema else ())
        ck.check_files(ckpt, files)
        meta = ck.read_json(ckpt, ck.TRAINER)
        tcfg = meta.get("train_config", {})
        if not isinstance(tcfg, dict):
            raise ck.CheckpointError(ckpt, f"{ck.TRAINER}: train_config must be a JSON object")
        ck.read_json(ckpt, ck.MODEL_CONFIG)
        ck.header_shapes(ckpt, ck.MODEL_WEIGHTS)  # truncated/garbage weights: a clear message, not a loader's
        ema_shapes = ck.header_shapes(ckpt, ck.EMA) if use_ema else None
        text_shapes = ck.header_shapes(ckpt, ck.TEXT)
        with ck.converting_errors(ckpt, "model/ cannot be loaded as a DFGN"):
            # low_cpu_mem_usage=False: the default asks for `accelerate` (not a dependency) with a warning on every load
            model = DFGN.from_pretrained(ckpt / "model", low_cpu_mem_usage=False)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        if use_ema:
            ck.compare_shapes(ckpt, ck.EMA, ema_shapes, expected)
            with ck.converting_errors(ckpt, f"{ck.EMA} cannot be loaded"):
                model.load_state_dict(load_file(ckpt / ck.EMA))
        with ck.converting_errors(ckpt, f"{ck.TRAINER}: the text encoder of train_config cannot be built"):
            text = TextEncoder(text_config_for_model(model, tcfg))
        ck.compare_shapes(ckpt, ck.TEXT, text_shapes, {k: tuple(v.shape) for k, v in text.state_dict().items()})
        with ck.converting_errors(ckpt, f"{ck.TEXT} cannot be loaded"):
            text.load_state_dict(load_file(ckpt / ck.TEXT))
        ae = tcfg.get("autoencoder", "pixel")
        with ck.converting_errors(ckpt, f"{ck.TRAINER}: train_config.autoencoder {ae!r} cannot be loaded"):
            vae = load_autoencoder(AutoencoderConfig(kind=AutoencoderKind.PIXEL) if ae == "pixel" else
                                   tiny_kl_config(tcfg.get("seed", 0)) if ae == "tiny_kl" else
                                   AutoencoderConfig(kind=AutoencoderKind.KL, path=ae))
        if vae.latent_channels * 2 != model.cfg.in_channels:
            raise ck.CheckpointError(ckpt, f"autoencoder {ae!r} does not fit the model's {model.cfg.in_channels} input channels")
        with ck.converting_errors(ckpt, f"{ck.TRAINER}: typical_duration_ms must be a positive int"):
            duration = int(meta.get("typical_duration_ms", 100))
            if duration <= 0:
                raise ValueError(duration)
        size = model.cfg.sample_size * vae.downsample
        return cls(model.to(device), text.to(device), vae.to(device), image_size=size,
                   default_duration_ms=duration, device=device)

    @torch.no_grad()
    def __call__(self, prompt: str, images: list[np.ndarray] | None = None, task: SamplingTask | str = SamplingTask.GENERATE,
                 frame_positions: list[int] | None = None, num_inference_steps: int = 50, text_guidance_scale: float = 7.5,
                 image_guidance_scale: float = 7.5, eta: float = 1.0, seed: int | None = 0, paste_known: bool = True,
                 progress: bool = True) -> StickerResult:
        images = images or []
        F, S = self.num_frames, self.image_size
        task = SamplingTask.parse(task)
        pos = condition_positions(task, len(images), F, frame_positions)
        if not task.uses_text:  # image-only: the caption is not a condition (module docstring)
            prompt, text_guidance_scale = "", 0.0
        known = np.zeros((1, F, S, S, 3), np.uint8)  # (1, F, S, S, 3)
        for p, im in zip(pos, images):
            known[0, p] = self._check_image(im)
        out = self.sample_batch([prompt], known, pos, num_inference_steps=num_inference_steps,
                                text_guidance_scale=text_guidance_scale, image_guidance_scale=image_guidance_scale,
                                eta=eta, seed=seed, paste_known=paste_known, progress=progress)
        return StickerResult(out[0], [self.default_duration_ms] * F, task, prompt)

    def _check_image(self, im: np.ndarray) -> np.ndarray:
        arr = np.asarray(im, np.uint8)
        if arr.shape != (self.image_size, self.image_size, 3):
            raise ValueError(f"images must be {self.image_size}x{self.image_size} RGB uint8, got {arr.shape}")
        return arr

    @torch.no_grad()
    def sample_batch(self, prompts: list[str], known: np.ndarray | None, positions: list[int], *,
                     num_inference_steps: int = 50, text_guidance_scale: float = 7.5, image_guidance_scale: float = 7.5,
                     eta: float = 1.0, seed: int | None = 0, paste_known: bool = True, progress: bool = False) -> np.ndarray:
        """B prompts with the same known-frame positions -> uint8 frames (B, F, S, S, 3).

        ``known`` (B, F, S, S, 3) uint8 holds the condition frames at ``positions`` (other frames are ignored;
        None when ``positions`` is empty). One generator seeded with ``seed`` draws the noise of the whole
        batch, so results are reproducible for the same batch composition.
        """
        B, F, S = len(prompts), self.num_frames, self.image_size
        C, s = self.vae.latent_channels, self.model.cfg.sample_size
        if positions and (known is None or known.shape != (B, F, S, S, 3)):
            raise ValueError(f"known frames must be uint8 ({B}, {F}, {S}, {S}, 3), got "
                             f"{None if known is None else known.shape}")
        cond = torch.zeros(B, F, C, s, s, device=self.device)  # (B, F, C, h, w)
        mask = torch.zeros(B, F, dtype=torch.bool, device=self.device)  # (B, F)
        if positions:
            imgs = torch.from_numpy(np.ascontiguousarray(known[:, positions]))  # (B, P, S, S, 3)
            x = imgs.reshape(-1, S, S, 3).permute(0, 3, 1, 2).float().div(255).to(self.device)  # (B*P, 3, S, S)
            lat = self.vae.encode(x).reshape(B, len(positions), C, s, s)  # (B, P, C, h, w)
            cond[:, positions], mask[:, positions] = lat, True
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**62))
        lat = sample_latents(self.model, cond, mask, self.text(list(prompts)), self.text.null_embedding(B),
                             steps=num_inference_steps, eta=eta, text_scale=text_guidance_scale,
                             image_scale=image_guidance_scale, generator=gen, paste_known=paste_known, progress=progress)
        frames = self.vae.decode(lat.reshape(B * F, C, s, s))  # (B*F, 3, S, S) in [-1, 1]
        out = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)  # (B*F, S, S, 3)
        return out.reshape(B, F, S, S, 3).cpu().numpy()  # (B, F, S, S, 3)


def _resolve_checkpoint(path: Path) -> Path:
    """A checkpoint folder, or a training-run folder (its ``checkpoints/latest``), as a checkpoint folder path."""
    if path.is_file():
        raise ck.CheckpointError(path, "is a file, not a checkpoint folder (give …/checkpoints/step-N or the run folder)")
    marker = path / "checkpoints" / ck.LATEST
    if marker.exists():  # a training folder: take its latest checkpoint
        with ck.converting_errors(marker, "cannot be read"):
            name = marker.read_text().strip()
        if not name or "/" in name or not (marker.parent / name).is_dir():
            raise ck.CheckpointError(marker, f"names {name!r}, which is not a checkpoint folder next to it")
        path = marker.parent / name
    if not (path / ck.TRAINER).is_file() or not (path / ck.MODEL_CONFIG).is_file():
        raise ck.CheckpointError(path, "is not an RDTF checkpoint (expected trainer.json and model/config.json, "
                                 "e.g. lake/training/<run>/checkpoints/step-000200)")
    return path


def text_config_for_model(model: DFGN, tcfg: dict):
    """The text-encoder config the checkpoint was trained with (see model.text_encoder.text_config_for)."""
    return text_config_for(model.cfg.cross_attention_dim, seed=tcfg.get("seed", 0), clip_model=tcfg.get("text_clip_model"),
                           clip_pretrained=tcfg.get("text_clip_pretrained"), t5_path=tcfg.get("text_t5_path"))
