"""The frozen latent autoencoder of the DFGN (paper Table 6: LDM with f = 8, 32x32x4 latents for 256 px frames).

:meth:`Autoencoder.encode` uses the posterior *mean* of the KL VAE, not a sample: the VAE's posterior std is tiny,
the diffusion noise dominates anyway, and cached latents and tests stay reproducible. Weights load only from a local
path (safetensors); the seeded ``tiny_random`` preset is for demos/tests and reports ``weights=random``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import torch
from torch import nn

from model.clip import hub_offline
from model.hub import resolve_local

log = logging.getLogger(__name__)

class AutoencoderKind(StrEnum):
    KL = "kl"  # diffusers AutoencoderKL (the LDM VAE of Table 6)
    PIXEL = "pixel"  # identity: diffusion in pixel space (tiny preset)


@dataclass(frozen=True)
class AutoencoderConfig:
    kind: AutoencoderKind = AutoencoderKind.KL  # latent VAE or identity pixel space
    path: str | None = None  # local AutoencoderKL folder, a .safetensors file beside a config.json, or hf:<org>/<name>
    tiny_random: bool = False  # random small AutoencoderKL (f=2) for tests; never for real runs
    seed: int = 0  # seed of the random tiny VAE

    def __post_init__(self) -> None:
        kind = AutoencoderKind(self.kind)
        if kind is AutoencoderKind.KL and (self.path is None) == (not self.tiny_random):
            raise ValueError("a KL autoencoder needs exactly one of path=<local VAE> or tiny_random=True")
        if kind is AutoencoderKind.PIXEL and (self.path or self.tiny_random):
            raise ValueError("the pixel autoencoder takes neither path nor tiny_random")


def pixel_autoencoder_config() -> AutoencoderConfig:
    return AutoencoderConfig(kind=AutoencoderKind.PIXEL)


def tiny_kl_config(seed: int = 0) -> AutoencoderConfig:
    return AutoencoderConfig(kind=AutoencoderKind.KL, tiny_random=True, seed=seed)


def sd_vae_config(path: str) -> AutoencoderConfig:
    """The Stable Diffusion VAE (f = 8, 4 latent channels, scaling 0.18215) from a local folder/file."""
    return AutoencoderConfig(kind=AutoencoderKind.KL, path=path)


TINY_KL = dict(  # two resolution levels -> f = 2; 4 latent channels like the SD VAE
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    block_out_channels=(32, 64), layers_per_block=1, latent_channels=4, norm_num_groups=32, sample_size=64,
)
VAE_WEIGHTS = "diffusion_pytorch_model.safetensors"
VAE_LAYOUT = (
    f"a diffusers AutoencoderKL folder (config.json + {VAE_WEIGHTS}) or a single .safetensors file "
    "with a config.json beside it"
)


class Autoencoder(nn.Module):
    """Frozen frame <-> latent map. ``encode`` takes frames in [0, 1] (or uint8), ``decode`` gives [-1, 1]."""

    def __init__(self, vae: nn.Module | None, info: dict):
        super().__init__()
        self.vae = vae  # None = pixel space
        if vae is None:
            self.scaling_factor, self.shift_factor, self.latent_channels, self.downsample = 1.0, 0.0, 3, 1
        else:
            vae.eval().requires_grad_(False)
            c = vae.config
            self.scaling_factor = float(c.scaling_factor)
            self.shift_factor = float(getattr(c, "shift_factor", None) or 0.0)  # SD VAE: none
            self.latent_channels = int(c.latent_channels)
            self.downsample = 2 ** (len(c.block_out_channels) - 1)
        self.info = info | {
            "scaling_factor": self.scaling_factor,
            "latent_channels": self.latent_channels,
            "downsample": self.downsample,
        }

    def train(self, mode: bool = True):
        super().train(mode)
        if self.vae is not None:
            self.vae.eval()  # frozen: never in train mode
        return self

    def _device_dtype(self) -> tuple[torch.device, torch.dtype]:
        if self.vae is None:
            return torch.device("cpu"), torch.float32
        w = next(self.vae.parameters())
        return w.device, w.dtype

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (N, 3, H, W), uint8 in [0, 255] or float in [0, 1] -> scaled latents (N, C, H/f, W/f).

        Float input in [-1, 1] is rejected rather than guessed. KL: posterior mean (deterministic).
        """
        if frames.ndim != 4 or frames.shape[1] != 3:
            raise ValueError(f"frames must be (N, 3, H, W), got {tuple(frames.shape)}")
        N, _, H, W = frames.shape
        if H % self.downsample or W % self.downsample:
            raise ValueError(f"frame size {H}x{W} is not divisible by the autoencoder factor f={self.downsample}")
        if frames.dtype == torch.uint8:
            x = frames.float() / 255.0
        else:
            x = frames.float()
            lo, hi = float(x.min()), float(x.max())
            if lo < -1e-3 or hi > 1 + 1e-3:
                raise ValueError(f"float frames must be in [0, 1] (got [{lo:.3g}, {hi:.3g}]); map [-1, 1] input with (x + 1) / 2")
        x = x * 2.0 - 1.0  # [0, 1] -> [-1, 1], the VAE's input range
        if self.vae is None:
            return x
        device, dtype = self._device_dtype()
        mean = self.vae.encode(x.to(device, dtype)).latent_dist.mean  # (N, C, H/f, W/f)
        return ((mean - self.shift_factor) * self.scaling_factor).float()  # fp32 latents whatever the VAE's dtype

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents (N, C, h, w) -> float frames (N, 3, h*f, w*f) in [-1, 1] (not clamped)."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"latents must be (N, {self.latent_channels}, h, w), got {tuple(latents.shape)}")
        if self.vae is None:
            return latents.float()
        device, dtype = self._device_dtype()
        z = latents.to(device, dtype) / self.scaling_factor + self.shift_factor
        return self.vae.decode(z).sample.float()  # (N, 3, H, W)


def _check_report(report: dict, path: Path) -> None:
    bad = sorted(report.get("missing_keys", [])) + sorted(report.get("unexpected_keys", []))
    bad += [str(k) for k in report.get("mismatched_keys", [])]
    if bad:  # diffusers would silently random-init missing weights: refuse instead
        raise ValueError(f"VAE weights in {str(path)!r} do not match its config.json: {bad[:8]}")


def _load_vae_file(path: Path) -> nn.Module:
    """Single .safetensors file + sibling config.json; LDM (original SD) key names are converted."""
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    if path.suffix != ".safetensors":
        raise ValueError(f"VAE file {str(path)!r}: only .safetensors is loaded (never unpickled); expected {VAE_LAYOUT}")
    if not (path.parent / "config.json").is_file():
        raise ValueError(f"VAE file {str(path)!r} has no config.json beside it (configs are never downloaded); expected {VAE_LAYOUT}")
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(str(path.parent)))
    try:
        state = load_file(str(path))
    except Exception as e:  # safetensors' own error type: corrupt or truncated file
        raise ValueError(f"could not read VAE weights {str(path)!r} as safetensors: {e}") from e
    if not set(state) & set(vae.state_dict()):  # original LDM naming (encoder.down.0..., first_stage_model.)
        from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

        state = convert_ldm_vae_checkpoint(state, vae.config)
    try:
        vae.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"VAE weights {str(path)!r} do not match {str(path.parent / 'config.json')!r}: {e}") from e
    return vae


def downsample_factor(cfg: AutoencoderConfig) -> int:
    """Frame side / latent side without loading weights (Table 6: f = 8 for the SD VAE; 2 tiny; 1 pixel space)."""
    if AutoencoderKind(cfg.kind) is AutoencoderKind.PIXEL:
        return 1
    if cfg.tiny_random:
        return 2 ** (len(TINY_KL["block_out_channels"]) - 1)
    path = resolve_local(cfg.path)
    conf = (path if path.is_dir() else path.parent) / "config.json"
    try:
        return 2 ** (len(json.loads(conf.read_text())["block_out_channels"]) - 1)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"autoencoder {cfg.path}: cannot read block_out_channels from {conf} ({e}); expected "
                         f"{VAE_LAYOUT}") from None


def load_autoencoder(cfg: AutoencoderConfig) -> Autoencoder:
    """Build the frozen autoencoder described by ``cfg`` (paths validated first)."""
    kind = AutoencoderKind(cfg.kind)
    if kind is AutoencoderKind.PIXEL:
        return Autoencoder(None, {"kind": kind.value, "weights": "none", "path": None})
    from diffusers import AutoencoderKL

    if cfg.tiny_random:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            vae = AutoencoderKL(**TINY_KL)
        log.warning("tiny AutoencoderKL has RANDOM weights (weights=random): latents are not meaningful")
        return Autoencoder(vae, {"kind": kind.value, "weights": "random", "path": None, "seed": cfg.seed})
    path = resolve_local(cfg.path)  # a local folder/file, or hf:<org>/<name>[/vae] from the HF cache
    if not path.exists():
        raise ValueError(f"VAE path {str(path)!r} does not exist; expected {VAE_LAYOUT}")
    if path.is_file():
        vae = _load_vae_file(path)
    else:
        missing = [f for f in ("config.json", VAE_WEIGHTS) if not (path / f).is_file()]
        if missing:
            raise ValueError(f"VAE folder {str(path)!r} lacks {', '.join(missing)}; expected {VAE_LAYOUT}")
        with hub_offline():
            try:
                vae, report = AutoencoderKL.from_pretrained(
                    str(path), local_files_only=True, use_safetensors=True, low_cpu_mem_usage=False, output_loading_info=True
                )
            except (RuntimeError, ValueError, OSError) as e:
                raise ValueError(f"VAE weights in {str(path)!r} do not match its config.json: {e}") from e
        _check_report(report, path)
    params = sum(p.numel() for p in vae.parameters())
    return Autoencoder(vae, {"kind": kind.value, "weights": "file", "path": str(path), "params": params})
