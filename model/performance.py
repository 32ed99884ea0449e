"""Speed levers of the DFGN, each a config option that CPU tests cover (paper-preset numbers: docs/scale-out.md).

The U-Net's FLOPs sit in 320–1280-channel convolutions and attention GEMMs, so on a GPU the gap to the matmul
peak is launch overhead, memory traffic between small kernels and layout copies. The levers here attack those;
``benchmarks/levers.py`` times each on/off in one run (ratios, MFU against the same run's matmul peak, peak
memory, compile time) and the results table records which paid.

- ``compile``: ``torch.compile`` — ``regional`` compiles each :class:`~model.unet.UNetStage` on its own (ResNet +
  attention + temporal layer: GroupNorm/SiLU and the residual adds fuse into a few kernels); identical stages
  share one compiled artefact per input shape, so compile time is bounded by the number of *distinct* stages
  (~10), not the model depth. ``full`` compiles the whole U-Net as one graph (longest compile, fewest breaks).
- ``compile_mode``: ``reduce-overhead`` records CUDA graphs (removes the launch overhead that dominates at the
  paper's batch 1); ``max-autotune`` searches GEMM/conv configurations. On a CPU, CUDA graphs do not exist and
  the mode is a no-op.
- ``attention_backend``: every attention of the DFGN (spatial self/cross-attention through diffusers'
  ``AttnProcessor2_0``, the STI layer's cross-frame attention) calls ``F.scaled_dot_product_attention``; this
  pins the kernel (``flash``, ``efficient``, ``cudnn``, ``math``) or lets PyTorch choose (``auto``). Head dims
  are 64 (spatial, Table 6) and 32 (STI): both multiples of 8 and ≤ 256, as the flash kernels require.
- ``memory_format``: ``channels_last`` keeps activations NHWC. Convolutions then run in cuDNN's preferred layout,
  and the per-frame ``(B·F, C, H, W)`` → tokens ``(B·F, H·W, C)`` permutes of the spatial transformer and the
  STI layer become views instead of copies.
- ``checkpointing``: activation checkpointing at ``stage`` granularity (each UNetStage's activations are
  recomputed in the backward pass: about one extra forward, the least memory) or ``attention`` granularity
  (only the spatial transformers and the STI layers — the token-sized activations with the 4×/2× feed-forward
  widths — are recomputed; the convolutions' activations are kept: less recompute, more memory).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

log = logging.getLogger(__name__)

RECOMPILE_LIMIT = 64  # compiled variants per code object (torch's default 8 < the DFGN's distinct stage shapes)


class CompileScope(StrEnum):
    NONE = "none"  # eager
    REGIONAL = "regional"  # each U-Net stage compiled on its own (bounded compile time)
    FULL = "full"  # the whole U-Net as one graph


class CompileMode(StrEnum):
    DEFAULT = "default"
    REDUCE_OVERHEAD = "reduce-overhead"  # CUDA graphs
    MAX_AUTOTUNE = "max-autotune"
    MAX_AUTOTUNE_NO_CUDAGRAPHS = "max-autotune-no-cudagraphs"


class AttentionBackend(StrEnum):
    AUTO = "auto"  # PyTorch's own choice among the available kernels
    FLASH = "flash"
    EFFICIENT = "efficient"  # memory-efficient attention
    CUDNN = "cudnn"
    MATH = "math"  # the reference composite (always available)


class MemoryFormat(StrEnum):
    CONTIGUOUS = "contiguous"  # NCHW
    CHANNELS_LAST = "channels_last"  # NHWC


class Checkpointing(StrEnum):
    NONE = "none"
    STAGE = "stage"  # recompute every UNetStage (ResNet + attention + temporal)
    ATTENTION = "attention"  # recompute the spatial transformers and temporal layers only


@dataclass(frozen=True)
class PerfConfig:
    compile: str = CompileScope.NONE.value  # torch.compile scope: none | regional | full
    compile_mode: str = CompileMode.DEFAULT.value  # default | reduce-overhead (CUDA graphs) | max-autotune[-no-cudagraphs]
    compile_backend: str = "inductor"  # torch.compile backend (aot_eager: trace without code generation)
    attention_backend: str = AttentionBackend.AUTO.value  # SDPA kernel: auto | flash | efficient | cudnn | math
    memory_format: str = MemoryFormat.CONTIGUOUS.value  # activation layout: contiguous | channels_last
    checkpointing: str = Checkpointing.NONE.value  # activation checkpointing: none | stage | attention

    def __post_init__(self) -> None:
        for name, enum in (("compile", CompileScope), ("compile_mode", CompileMode),
                           ("attention_backend", AttentionBackend), ("memory_format", MemoryFormat),
                           ("checkpointing", Checkpointing)):
            value = getattr(self, name)
            if value not in {e.value for e in enum}:
                raise ValueError(f"PerfConfig.{name} must be one of {[e.value for e in enum]}, got {value!r}")
        if not isinstance(self.compile_backend, str) or not self.compile_backend:
            raise ValueError(f"PerfConfig.compile_backend must be a torch.compile backend name, got {self.compile_backend!r}")


def _sdpa_backends(backend: AttentionBackend) -> list:
    from torch.nn.attention import SDPBackend

    return [{AttentionBackend.FLASH: SDPBackend.FLASH_ATTENTION, AttentionBackend.EFFICIENT: SDPBackend.EFFICIENT_ATTENTION,
             AttentionBackend.CUDNN: SDPBackend.CUDNN_ATTENTION, AttentionBackend.MATH: SDPBackend.MATH}[backend]]


def attention_context(cfg: PerfConfig):
    """Context manager pinning the SDPA kernel of every attention in the DFGN (``auto``: no constraint)."""
    backend = AttentionBackend(cfg.attention_backend)
    if backend is AttentionBackend.AUTO:
        return contextlib.nullcontext()
    from torch.nn.attention import sdpa_kernel

    return sdpa_kernel(_sdpa_backends(backend))


def to_memory_format(x: torch.Tensor, cfg: PerfConfig) -> torch.Tensor:
    """A 4-D activation in the configured layout (other ranks unchanged)."""
    if x.dim() == 4 and MemoryFormat(cfg.memory_format) is MemoryFormat.CHANNELS_LAST:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def same_layout(h: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``h`` in ``like``'s memory layout (no copy when it already is): residual adds stay in one layout."""
    channels_last = like.dim() == 4 and like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous()
    return h.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def apply_performance(model: nn.Module, cfg: PerfConfig, *, sharded: bool = False) -> nn.Module:
    """Apply the layout, checkpointing and compile levers to a :class:`~model.unet.DFGN` in place; returns it.

    ``sharded``: the model is about to be wrapped by FSDP2, which shards only contiguous parameters, so with
    ``channels_last`` only the activations go NHWC (convolutions take NHWC input with NCHW weights).

    Order matters: parameters are converted to the layout first (compile specialises on strides), checkpointing
    wraps the stages that compile then traces (regional compile inside checkpointing recomputes compiled code).
    """
    from model.unet import DFGN, UNetStage

    if not isinstance(model, DFGN):
        raise ValueError(f"apply_performance expects a DFGN, got {type(model).__name__}")
    model.perf = cfg
    if MemoryFormat(cfg.memory_format) is MemoryFormat.CHANNELS_LAST and not sharded:
        # 2-D conv weights NHWC; the temporal k×1×1 / 3×3×3 convolutions see (B, C, F, H, W) NDHWC views: NDHWC too
        formats = {4: torch.channels_last, 5: torch.channels_last_3d}
        for p in model.parameters():
            if p.dim() in formats:
                p.data = p.data.contiguous(memory_format=formats[p.dim()])
    model.set_checkpointing(cfg.checkpointing)
    scope = CompileScope(cfg.compile)
    if scope is CompileScope.NONE:
        return model
    if CompileMode(cfg.compile_mode) in (CompileMode.REDUCE_OVERHEAD, CompileMode.MAX_AUTOTUNE) and \
            next(model.parameters()).device.type != "cuda":
        log.info("compile_mode=%s records CUDA graphs only on a GPU; on %s it compiles like 'default'",
                 cfg.compile_mode, next(model.parameters()).device.type)
    # static shapes: every stage shape compiles once (a training run sees one batch shape); dynamic shapes would
    # also be slower kernels. All stages share UNetStage.forward's code object, so the recompile limit must cover
    # the distinct stage shapes (~15 in the paper preset) or the later stages silently fall back to eager.
    kw = {"backend": cfg.compile_backend, "dynamic": False}
    kw |= {} if cfg.compile_mode == CompileMode.DEFAULT else {"mode": cfg.compile_mode}
    import torch._dynamo.config as dynamo_config

    # diffusers' checkpoint helper calls an lru_cache'd version check that dynamo traces through (harmless: a
    # constant); its warning would repeat in every compiled training's log
    warnings.filterwarnings("ignore", message=r"Dynamo detected a call to a `functools\.lru_cache`")

    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, RECOMPILE_LIMIT)
    if scope is CompileScope.REGIONAL:
        for stage in model.modules():
            if isinstance(stage, UNetStage):
                stage.compile(**kw)  # nn.Module.compile: in place, the module keeps its name and state-dict keys
    else:
        model.compile(**kw)
    return model
