"""The portable model: ``RDTFPipeline``, a diffusers ``DiffusionPipeline`` (checkpoint -> animated stickers).

Components (``model_index.json``): ``unet`` (:class:`model.unet.DFGN`), ``scheduler`` (``DDIMScheduler`` on the
training betas, Table 6), ``text_encoder`` (:class:`model.pipeline_text_encoder.RDTFTextEncoder`: CLIP + T5 +
projections), ``tokenizer`` (the T5 tokenizer; CLIP's BPE ships with open_clip) and ``vae`` (``AutoencoderKL``, or
none for the pixel-space tiny preset). ``save_pretrained`` writes a folder with relative paths only and weights in
safetensors; ``from_pretrained`` reads such a folder *or* a training checkpoint / run folder (``from_checkpoint``),
so every caller (``rdtf generate``, evaluation, the gallery, the MLflow model) opens models the same way.

Loading a package never imports code the folder names: ``model_index.json`` must list exactly the classes above
(:data:`PACKAGE_CLASSES`), weights load with ``use_safetensors=True``; anything else is a ``CheckpointError``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DiffusionPipeline
from safetensors.torch import load_file

from model import checkpoints as ck
from model.autoencoder import (
    Autoencoder,
    AutoencoderConfig,
    AutoencoderKind,
    load_autoencoder,
    tiny_kl_config,
)
from model.diffusion import DiffusionConfig, make_ddim_scheduler
from model.masks import SamplingTask
from model.performance import PerfConfig, apply_performance
from model.pipeline_text_encoder import RDTFTextEncoder
from model.sampling import StickerResult, condition_positions, sample_latents
from model.text_encoder import TextEncoder, text_config_for
from model.unet import DFGN

PACKAGE_INDEX = "model_index.json"
SAMPLE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}  # RDTFPipeline.optimize(dtype=...)
# what a package's model_index.json may name, per component: (library, class) pairs; anything else is refused
PACKAGE_CLASSES = {
    "unet": {("model.unet", "DFGN")},
    "scheduler": {("diffusers", "DDIMScheduler")},
    "text_encoder": {("model.pipeline_text_encoder", "RDTFTextEncoder")},
    "tokenizer": {("transformers", c) for c in ("ByT5Tokenizer", "T5Tokenizer", "T5TokenizerFast")},
    "vae": {("diffusers", "AutoencoderKL"), (None, None)},
}


class RDTFPipeline(DiffusionPipeline):
    """text->GIF, image&text->GIF, image->GIF, interpolation, pre/post prediction (``model.masks.SamplingTask``)."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _optional_components = ["vae"]

    def __init__(self, unet: DFGN, scheduler: DDIMScheduler, text_encoder: RDTFTextEncoder, tokenizer, vae=None,
                 default_duration_ms: int = 100, weights: str = "random"):
        super().__init__()
        if int(default_duration_ms) <= 0:
            raise ValueError(f"default_duration_ms must be a positive int, got {default_duration_ms!r}")
        if weights not in ("random", "pretrained"):
            raise ValueError(f"weights must be 'random' or 'pretrained', got {weights!r}")
        self.register_modules(unet=unet.eval(), scheduler=scheduler, text_encoder=text_encoder.eval(), tokenizer=tokenizer,
                              vae=vae)
        # weights: "random" when any pretrained part (CLIP, T5, VAE) is a random-init preset (never pass it off as real)
        self.register_to_config(default_duration_ms=int(default_duration_ms), weights=weights)
        ae = self.autoencoder
        if ae.latent_channels * 2 != unet.cfg.in_channels:
            raise ValueError(f"the autoencoder's {ae.latent_channels} latent channels do not fit the U-Net's "
                             f"{unet.cfg.in_channels} input channels (latents + condition latents)")

    # ------------------------------------------------------------------------------------------ properties

    @property
    def autoencoder(self) -> Autoencoder:
        """The frame <-> latent map (identity for the pixel-space preset), see ``model.autoencoder``."""
        return Autoencoder(self.vae, {"kind": "kl" if self.vae is not None else "pixel"})

    @property
    def num_frames(self) -> int:
        return int(self.unet.cfg.num_frames)

    @property
    def image_size(self) -> int:
        return int(self.unet.cfg.sample_size) * self.autoencoder.downsample

    @property
    def default_duration_ms(self) -> int:
        return int(self.config.default_duration_ms)

    @property
    def weights(self) -> str:
        return str(self.config.weights)

    # ------------------------------------------------------------------------------------------ speed

    def optimize(self, perf: PerfConfig | None = None, *, dtype: str = "fp32") -> RDTFPipeline:
        """Sampling speed levers (model/performance.py); returns self.

        ``perf``: the U-Net's compile / layout / SDPA kernel (checkpointing does not apply: no gradients).
        ``dtype``: ``bf16`` runs the U-Net and the VAE decoder with bf16 weights (the DDIM update, the guidance
        combination and the text towers stay fp32: the noise estimate is cast back before the scheduler step).
        """
        if dtype not in SAMPLE_DTYPES:
            raise ValueError(f"dtype must be one of {sorted(SAMPLE_DTYPES)}, got {dtype!r}")
        # nn.Module.to, not ModelMixin.to: the latter warns about fp32-only modules, which the DFGN does not have
        torch.nn.Module.to(self.unet, SAMPLE_DTYPES[dtype])
        if self.vae is not None:
            torch.nn.Module.to(self.vae, SAMPLE_DTYPES[dtype])
        if perf is not None:
            apply_performance(self.unet, perf)
        return self

    # ------------------------------------------------------------------------------------------ loading

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, use_ema: bool = True, device: str = "cpu", **kwargs) -> RDTFPipeline:
        """A package folder (``model_index.json``) or a training checkpoint / run folder (``use_ema`` applies there).

        Every unusable folder raises ``model.checkpoints.CheckpointError`` (a ValueError naming the file and the
        problem in one line) before or instead of a loader's own exception.
        """
        p = Path(path)
        if not (p / PACKAGE_INDEX).is_file():
            return cls.from_checkpoint(p, use_ema=use_ema, device=device)
        _check_index(p)
        with ck.converting_errors(p, "cannot be loaded as an RDTF model package"):
            # low_cpu_mem_usage=False: the default asks for `accelerate` (not a dependency) with a warning per load
            pipe = super().from_pretrained(str(p), use_safetensors=True, low_cpu_mem_usage=False, local_files_only=True,
                                           **kwargs)
        return pipe.to(device)

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str | Path, *, use_ema: bool = True, device: str = "cpu") -> RDTFPipeline:
        """A training checkpoint (``…/checkpoints/step-N``) or run folder (its ``latest``) as a pipeline."""
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
        with ck.converting_errors(ckpt, f"{ck.TRAINER}: train_config.diffusion is not a DiffusionConfig"):
            diffusion = DiffusionConfig(**(tcfg.get("diffusion") or {}))  # sample on exactly the training betas
        weights = "random" if "random" in (text.info["weights"], vae.info.get("weights")) else "pretrained"
        pipe = cls(unet=model, scheduler=make_ddim_scheduler(diffusion), text_encoder=RDTFTextEncoder.from_encoder(text),
                   tokenizer=text._t5_tok, vae=vae.vae, default_duration_ms=duration, weights=weights)
        return pipe.to(device)

    # ------------------------------------------------------------------------------------------ text

    def encode_prompt(self, captions: list[str]) -> torch.Tensor:
        """Captions -> text embedding (B, L, D), exactly as in training."""
        return self.text_encoder(*self.text_encoder.tokenize(captions, self.tokenizer))

    def null_embedding(self, batch: int) -> torch.Tensor:
        """Embedding of the empty caption (batch, L, D): the "drop text" input of classifier-free guidance."""
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        return self.encode_prompt([""]).repeat(batch, 1, 1)  # (batch, L, D)

    # ------------------------------------------------------------------------------------------ sampling

    @torch.no_grad()
    def __call__(self, prompt: str, images: list[np.ndarray] | None = None, task: SamplingTask | str = SamplingTask.GENERATE,
                 frame_positions: list[int] | None = None, num_inference_steps: int = 50, text_guidance_scale: float = 7.5,
                 image_guidance_scale: float = 7.5, eta: float = 1.0, seed: int | None = 0, paste_known: bool = True,
                 progress: bool = True) -> StickerResult:
        """One sticker; the defaults are Table 6's sampling parameters (DDIM, 50 steps, η = 1, guidance 7.5 / 7.5)."""
        images = images or []
        F, S = self.num_frames, self.image_size
        task = SamplingTask.parse(task)
        pos = condition_positions(task, len(images), F, frame_positions)
        if not task.uses_text:  # image-only: the caption is not a condition (model.sampling docstring)
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
                     eta: float = 1.0, seed: int | None = 0, paste_known: bool = True, progress: bool = False,
                     on_step=None) -> np.ndarray:
        """B prompts with the same known-frame positions -> uint8 frames (B, F, S, S, 3).

        ``known`` (B, F, S, S, 3) uint8 holds the condition frames at ``positions`` (other frames are ignored;
        None when ``positions`` is empty). One generator seeded with ``seed`` draws the noise of the whole
        batch, so results are reproducible for the same batch composition.
        """
        B, F, S = len(prompts), self.num_frames, self.image_size
        ae = self.autoencoder
        C, s = ae.latent_channels, self.unet.cfg.sample_size
        if positions and (known is None or known.shape != (B, F, S, S, 3)):
            raise ValueError(f"known frames must be uint8 ({B}, {F}, {S}, {S}, 3), got "
                             f"{None if known is None else known.shape}")
        dev = self.device
        cond = torch.zeros(B, F, C, s, s, device=dev)  # (B, F, C, h, w)
        mask = torch.zeros(B, F, dtype=torch.bool, device=dev)  # (B, F)
        if positions:
            imgs = torch.from_numpy(np.ascontiguousarray(known[:, positions]))  # (B, P, S, S, 3)
            x = imgs.reshape(-1, S, S, 3).permute(0, 3, 1, 2).float().div(255).to(dev)  # (B*P, 3, S, S)
            lat = ae.encode(x).reshape(B, len(positions), C, s, s)  # (B, P, C, h, w)
            cond[:, positions], mask[:, positions] = lat.to(dev), True
        gen = torch.Generator(device=dev)
        gen.manual_seed(seed if seed is not None else int(torch.seed() % 2**62))
        lat = sample_latents(self.unet, cond, mask, self.encode_prompt(list(prompts)), self.null_embedding(B),
                             steps=num_inference_steps, eta=eta, text_scale=text_guidance_scale,
                             image_scale=image_guidance_scale, generator=gen, paste_known=paste_known,
                             scheduler=self.scheduler, progress=progress, on_step=on_step)
        frames = ae.decode(lat.reshape(B * F, C, s, s))  # (B*F, 3, S, S) in [-1, 1]
        out = ((frames.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1)  # (B*F, S, S, 3)
        return out.reshape(B, F, S, S, 3).cpu().numpy()  # (B, F, S, S, 3)


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, *, use_ema: bool = True) -> Path:
    """Training checkpoint / run folder -> a package folder (atomic: a complete folder appears, or none)."""
    out = Path(out_dir)
    pipe = RDTFPipeline.from_checkpoint(checkpoint_dir, use_ema=use_ema)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        pipe.save_pretrained(tmp, safe_serialization=True)
        _drop_source_paths(tmp)
        if out.exists():  # re-export replaces the old package (rename it away first: os.replace needs an empty target)
            old = tmp.with_name(tmp.name + ".old")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _drop_source_paths(folder: Path) -> None:
    """diffusers records where each component was loaded from (``_name_or_path``: an absolute checkpoint path);
    a package is portable, so the key goes."""
    for cfg in folder.glob("*/*config.json"):
        doc = json.loads(cfg.read_text())
        if isinstance(doc, dict) and doc.pop("_name_or_path", None) is not None:
            cfg.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


def _check_index(folder: Path) -> None:
    """Refuse a model_index.json that names other classes than an RDTF package's (no arbitrary imports)."""
    idx = ck.read_json(folder, PACKAGE_INDEX)
    if idx.get("_class_name") != RDTFPipeline.__name__:
        raise ck.CheckpointError(folder, f"{PACKAGE_INDEX}: _class_name must be {RDTFPipeline.__name__!r}, "
                                 f"got {idx.get('_class_name')!r}")
    for name, allowed in PACKAGE_CLASSES.items():
        entry = idx.get(name, [None, None])
        if not (isinstance(entry, list) and len(entry) == 2 and tuple(entry) in allowed):
            raise ck.CheckpointError(folder, f"{PACKAGE_INDEX}: component {name!r} is {json.dumps(entry)}; allowed: "
                                     f"{sorted(map(list, allowed), key=str)}")
    extra = sorted(k for k, v in idx.items() if isinstance(v, list) and k not in PACKAGE_CLASSES)
    if extra:
        raise ck.CheckpointError(folder, f"{PACKAGE_INDEX}: unknown components {extra}; allowed: {sorted(PACKAGE_CLASSES)}")


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
                                 "e.g. lake/training/<run>/checkpoints/step-000200), nor a model package "
                                 f"({PACKAGE_INDEX})")
    return path


def text_config_for_model(model: DFGN, tcfg: dict):
    """The text-encoder config the checkpoint was trained with (see model.text_encoder.text_config_for)."""
    return text_config_for(model.cfg.cross_attention_dim, seed=tcfg.get("seed", 0), clip_model=tcfg.get("text_clip_model"),
                           clip_pretrained=tcfg.get("text_clip_pretrained"), t5_path=tcfg.get("text_t5_path"))
