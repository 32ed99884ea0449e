"""CLIP towers (open_clip) for frame embeddings, with real local-weight loading and a random-init preset.

Model weights cannot be downloaded at run time, so every use goes through a :class:`ClipSpec`:

- ``pretrained=None``: random initialisation, seeded (``init_seed``) so embeddings are reproducible.
  Results computed this way are tagged ``weights=random`` by callers — they exercise the pipeline, not
  CLIP semantics. ``rdtf-tiny-clip`` (``model/configs/rdtf-tiny-clip.json``, 64 px, 2 layers) is the
  preset the demo and tests use.
- ``pretrained=/path/to/open_clip_model.{pt,pth,bin,safetensors}``: a local checkpoint, loaded by
  open_clip with ``weights_only=True`` (never unpickles arbitrary objects).
- ``pretrained=<tag>`` (e.g. ``laion2b_s34b_b79k`` for ``ViT-B-32``): resolved from ``cache_dir`` with
  the Hugging Face hub forced offline; a tag that is not cached fails with a clear error.

``validate_spec`` checks all of this *before* any work starts (wrong path -> ValueError naming the
path and the expected formats).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TINY_MODEL = "rdtf-tiny-clip"
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")


class Precision(StrEnum):
    AUTO = "auto"  # bf16 on a CUDA device that supports it, else fp32
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class WeightsSource(StrEnum):
    RANDOM = "random"
    FILE = "file"
    TAG = "tag"


@dataclass(frozen=True)
class ClipSpec:
    model: str = TINY_MODEL  # open_clip model name (any of open_clip.list_models(), or the tiny preset)
    pretrained: str | None = None  # None = random init; a local weights file; or a tag cached in cache_dir
    cache_dir: str | None = None  # where tagged weights were downloaded beforehand (open_clip/HF cache layout)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: Precision = Precision.AUTO  # autocast dtype on GPU; CPU always runs fp32
    batch_size: int = 64  # frames per forward pass
    init_seed: int = 0  # seed of the random initialisation (ignored with real weights)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        Precision(self.precision)  # raises ValueError naming the bad value

    @property
    def weights_source(self) -> WeightsSource:
        if not self.pretrained:
            return WeightsSource.RANDOM
        p = self.pretrained
        if os.sep in p or "/" in p or p.endswith(WEIGHT_SUFFIXES) or Path(p).exists():
            return WeightsSource.FILE
        return WeightsSource.TAG


def tiny_spec(**kw) -> ClipSpec:
    """Random-init 64 px CLIP for demos and tests (~3.8 M parameters, mostly the token embedding)."""
    return ClipSpec(model=TINY_MODEL, pretrained=None, **kw)


def vit_b32_spec(pretrained: str | None, **kw) -> ClipSpec:
    """ViT-B-32 (the real-size model); pass a local checkpoint path or a cached tag."""
    return ClipSpec(model="ViT-B-32", pretrained=pretrained, **kw)


def register_presets() -> None:
    import open_clip

    if TINY_MODEL not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR / f"{TINY_MODEL}.json")


def validate_spec(spec: ClipSpec) -> None:
    """Fail fast, before any data is read, on an unknown model or unusable weights."""
    import open_clip

    register_presets()
    if spec.model not in open_clip.list_models():
        raise ValueError(f"unknown open_clip model {spec.model!r}; allowed: {TINY_MODEL!r} or one of open_clip.list_models()")
    src = spec.weights_source
    if src is WeightsSource.FILE:
        path = Path(spec.pretrained).expanduser()
        if not path.is_file():
            raise ValueError(
                f"CLIP weights file {str(path)!r} does not exist; expected a local open_clip checkpoint "
                f"({', '.join(WEIGHT_SUFFIXES)}) holding a state_dict for model {spec.model!r}"
            )
        if path.suffix not in WEIGHT_SUFFIXES:
            raise ValueError(f"CLIP weights file {str(path)!r} has suffix {path.suffix!r}; expected one of {WEIGHT_SUFFIXES}")
    elif src is WeightsSource.TAG:
        tags = open_clip.list_pretrained_tags_by_model(spec.model)
        if spec.pretrained not in tags:
            raise ValueError(f"unknown pretrained tag {spec.pretrained!r} for {spec.model!r}; allowed: {tags} or a local file path")
        if not spec.cache_dir:
            raise ValueError(f"pretrained tag {spec.pretrained!r} needs cache_dir (weights cannot be downloaded here)")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def autocast_dtype(spec: ClipSpec, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for inference, or None for plain fp32 (always on CPU)."""
    if device.type != "cuda":
        return None
    p = Precision(spec.precision)
    if p is Precision.AUTO:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {Precision.FP32: None, Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}[p]


@dataclass
class LoadedClip:
    model: torch.nn.Module
    spec: ClipSpec
    device: torch.device
    image_size: int  # square input resolution of the image tower
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int
    info: dict = field(default_factory=dict)  # weights source/path, parameter count: for MLflow tags and metadata


@contextlib.contextmanager
def hub_offline():
    """No network for the Hugging Face hub inside the block (weights are never downloaded here).

    huggingface_hub reads ``HF_HUB_OFFLINE`` once, at import, into ``huggingface_hub.constants``; setting only the
    environment variable after that import changes nothing (a tag that is not cached then retried the network
    for a minute). So the module constant is switched too, and both are restored afterwards.
    """
    old = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    os.environ.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    import huggingface_hub.constants as hub_constants

    old_const = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = old_const
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def quiet_open_clip():
    """Silence open_clip's model-creation chatter for the duration.

    open_clip logs through the *root* logger: INFO lines on every model build (on every rank of a training) and a
    "No pretrained weights loaded ... initialized randomly" warning that duplicates our own ``weights=random``
    warning (or is untrue, when saved weights are loaded next). Its real warnings and errors still pass.
    """
    def keep(record: logging.LogRecord) -> bool:
        if "open_clip" not in record.pathname:
            return True
        return record.levelno >= logging.WARNING and not str(record.msg).startswith("No pretrained weights loaded")

    filt = logging.Filter()
    filt.filter = keep
    root = logging.getLogger()
    root.addFilter(filt)
    try:
        yield
    finally:
        root.removeFilter(filt)


def load_clip(spec: ClipSpec) -> LoadedClip:
    """Build the open_clip model described by ``spec`` (validated first), in eval mode, frozen."""
    import open_clip

    validate_spec(spec)
    device = resolve_device(spec.device)
    src = spec.weights_source
    with hub_offline(), torch.random.fork_rng(devices=[]), quiet_open_clip():
        torch.manual_seed(spec.init_seed)  # random init must be reproducible: embeddings feed clustering
        try:
            model = open_clip.create_model(
                spec.model,
                pretrained=spec.pretrained if src is not WeightsSource.RANDOM else None,
                device=device,
                cache_dir=spec.cache_dir,
                weights_only=True,
            )
        except RuntimeError as e:
            if src is not WeightsSource.TAG or "download" not in str(e).lower():
                raise
            raise ValueError(f"CLIP {spec.model!r} weights tag {spec.pretrained!r} is not in the cache "
                             f"{spec.cache_dir or '(default Hugging Face cache)'} and nothing is downloaded here: "
                             "fetch it beforehand on a machine with network (docs/weights.md) or pass a local file"
                             ) from None
    model.eval().requires_grad_(False)
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, tuple | list) else size)
    pcfg = getattr(model.visual, "preprocess_cfg", {}) or {}
    mean = tuple(pcfg.get("mean", open_clip.OPENAI_DATASET_MEAN))
    std = tuple(pcfg.get("std", open_clip.OPENAI_DATASET_STD))
    embed_dim = int(model.text_projection.shape[1]) if getattr(model, "text_projection", None) is not None else None
    if embed_dim is None:
        with torch.inference_mode():
            embed_dim = int(model.encode_image(torch.zeros(1, 3, size, size, device=device)).shape[-1])
    info = {
        "model": spec.model,
        "weights": src.value,
        "pretrained": spec.pretrained or "",
        "params": sum(p.numel() for p in model.parameters()),
        "init_seed": spec.init_seed if src is WeightsSource.RANDOM else None,
    }
    if src is WeightsSource.RANDOM:
        log.warning("CLIP %s has RANDOM weights (weights=random): embeddings are reproducible but not semantic", spec.model)
    return LoadedClip(model, spec, device, size, mean, std, embed_dim, info)


def preprocess_frames(frames: torch.Tensor, image_size: int, mean, std) -> torch.Tensor:
    """uint8 frames (B, H, W, 3) -> normalised float (B, 3, R, R) for the image tower.

    Stored frames are already square (padded at ingest), so CLIP's centre crop is a no-op and a
    plain antialiased bicubic resize matches open_clip's preprocessing.
    """
    B, H, W, C = frames.shape
    x = frames.permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, H, W)
    if (H, W) != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bicubic", antialias=True, align_corners=False)
        x = x.clamp_(0.0, 1.0)
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s  # (B, 3, R, R)


@torch.inference_mode()
def embed_pixels_on_device(clip: LoadedClip, pixels: torch.Tensor) -> torch.Tensor:
    """Preprocessed pixels (B, 3, R, R) -> L2-normalised float32 embeddings (B, D) on the tower's device.

    On a GPU this only queues the work (the copy is non-blocking from pinned memory): a caller that fetches the
    result of the previous batch meanwhile keeps the GPU busy (``data.embed``). A zero or non-finite raw
    embedding stays non-finite after normalisation (no epsilon), so callers can detect and quarantine it.
    """
    pixels = pixels.to(clip.device, non_blocking=True)
    dtype = autocast_dtype(clip.spec, clip.device)
    with torch.autocast(clip.device.type, dtype=dtype, enabled=dtype is not None):
        z = clip.model.encode_image(pixels)
    z = z.float()
    return z / z.norm(dim=-1, keepdim=True)  # (B, D)


def embed_pixels(clip: LoadedClip, pixels: torch.Tensor) -> torch.Tensor:
    """:func:`embed_pixels_on_device`, on the CPU (waits for the result)."""
    return embed_pixels_on_device(clip, pixels).cpu()  # (B, D)
