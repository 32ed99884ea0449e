"""DFGN — the Discrete Frame Generation Network (paper, Method; Table 6; Table 8: 0.96 B parameters).

A latent-diffusion U-Net over clips of F frames, built from diffusers building blocks
(``ResnetBlock2D``, cross-attention ``BasicTransformerBlock``, ``Downsample2D``/``Upsample2D``), with a
temporal layer after *every* spatial layer — by default the paper's STI layer (``model/sti.py``).
Frames travel through the spatial layers as a batch of images ``(B·F, C, H, W)``; only the temporal
layers mix frames.

Conditioning (Method): image guidance is **concatenated** with the noisy latents (input channels 8 =
4 noisy + 4 condition latents, Table 6), not cross-attended; text guidance (CLIP + T5 features projected
to 1024-d, 77 tokens) enters through cross-attention, shared by all frames of a clip.

Layout: per resolution level ``layers_per_block`` stages down and ``layers_per_block + 1`` up (skip
connections as in SD's U-Net), plus two mid stages. With 4 levels and 2 layers per block that is
4·2 + 2 + 4·3 = 22 temporal layers — the count of the authors' released model. Presets:

- ``paper()``: widths (320, 640, 1024, 1280), 0.9–1.0 B parameters (see tests), latent 32×32×4, 8 frames;
- ``paper_3dconv()``: the same with 3×3×3 convolution temporal layers (Table 3 ablation);
- ``tiny()``: a few M parameters that trains on a 2-core CPU in minutes (optionally in pixel space).

Spatial attention is :class:`SpatialTransformer`: exactly diffusers' ``Transformer2DModel`` for continuous
input with linear projections (same submodule names, so the weights are interchangeable: tested bit for bit),
built from diffusers' ``BasicTransformerBlock``. Why not ``Transformer2DModel`` itself: importing it runs
``diffusers.models.transformers/__init__``, which imports every transformer diffusers ships (~4 s of CPU per
process here) — paid by every torchrun rank, Dagster step and CLI call that loads a DFGN.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import asdict, dataclass, replace
from enum import StrEnum

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D
from torch import nn

from model.performance import Checkpointing, PerfConfig, same_layout, to_memory_format
from model.sti import Conv3DTemporalLayer, STIConfig, STILayer, norm_groups


class TemporalLayer(StrEnum):
    STI = "sti"  # the paper's spatial-temporal interaction layer
    CONV3D = "conv3d"  # Table 3 ablation: 3D convolutions
    NONE = "none"  # no temporal mixing (frames generated independently): a sanity baseline


@dataclass(frozen=True)
class DFGNConfig:
    in_channels: int = 8  # 4 noisy latent + 4 condition latent channels (Table 6)
    out_channels: int = 4  # predicted noise ε (Table 6: ε-parameterisation)
    sample_size: int = 32  # latent side (256 px / f=8)
    num_frames: int = 8  # frames per clip
    block_out_channels: tuple[int, ...] = (320, 640, 1024, 1280)  # widths per resolution level
    cross_attn: tuple[bool, ...] = (True, True, True, False)  # which levels have text cross-attention
    layers_per_block: int = 2  # Table 6
    attention_head_dim: int = 64  # channels per spatial attention head (Table 6: head channels 64)
    cross_attention_dim: int = 1024  # text embedding dim (Table 6)
    transformer_layers: int = 1  # transformer blocks per spatial attention
    norm_num_groups: int = 32  # GroupNorm groups in ResNet blocks
    temporal_layer: str = TemporalLayer.STI.value  # sti | conv3d | none
    sti_gamma: int = 2  # STI spatial downsampling factor γ (see model/sti.py)
    sti_heads: int = 8  # STI attention heads (Table 6)
    sti_head_dim: int = 32  # STI attention head dim (Table 6)
    sti_kernel: int = 3  # temporal conv kernel (Table 6: 3,1,1)
    sti_conv_layers: int = 2  # temporal conv layers (Table 6)
    sti_attention_layers: int = 1  # STI transformer layers in the semantic branch (Table 6: "Num attention layers 1")

    def __post_init__(self) -> None:
        TemporalLayer(self.temporal_layer)  # ValueError names the bad value
        if len(self.block_out_channels) != len(self.cross_attn):
            raise ValueError("block_out_channels and cross_attn must have the same length")
        if any(c % self.attention_head_dim for c, x in zip(self.block_out_channels, self.cross_attn) if x):
            raise ValueError(f"attention levels' widths must be multiples of attention_head_dim={self.attention_head_dim}")
        if self.sample_size % 2 ** (len(self.block_out_channels) - 1):
            raise ValueError(f"sample_size {self.sample_size} must be divisible by 2**(levels-1)")


def paper() -> DFGNConfig:
    """The paper's DFGN (Table 6; ~0.96 B parameters as in Table 8)."""
    return DFGNConfig()


def paper_3dconv() -> DFGNConfig:
    """Table 3 ablation: STI replaced by 3D convolutions."""
    return replace(paper(), temporal_layer=TemporalLayer.CONV3D.value)


def tiny(pixel_space: bool = False) -> DFGNConfig:
    """A few M parameters; trains on a 2-core CPU in minutes. ``pixel_space``: RGB in/out, no VAE."""
    return DFGNConfig(
        in_channels=6 if pixel_space else 8,
        out_channels=3 if pixel_space else 4,
        sample_size=32,
        num_frames=8,
        block_out_channels=(32, 64, 96),
        cross_attn=(False, True, True),
        layers_per_block=1,
        attention_head_dim=16,
        cross_attention_dim=64,
        norm_num_groups=8,
        sti_heads=2,
        sti_head_dim=16,
    )


def micro_pixel() -> DFGNConfig:
    """~0.1 M parameters at 16 px in pixel space: the test suite's trainer (a step in ~0.1 s on one core).

    Every code path of the trainer (DDP/FSDP, checkpoints, resume, curriculum, MLflow) is exercised the same
    way at any size, so the torchrun/kill/resume tests use this and keep the 2-core CI inside its budget;
    ``tiny_pixel`` remains the demo's model."""
    return DFGNConfig(in_channels=6, out_channels=3, sample_size=16, num_frames=8, block_out_channels=(16, 32),
                      cross_attn=(False, True), layers_per_block=1, attention_head_dim=16, cross_attention_dim=32,
                      norm_num_groups=8, sti_heads=1, sti_head_dim=16)


PRESETS = {"paper": paper, "paper_3dconv": paper_3dconv, "tiny": tiny, "tiny_pixel": lambda: tiny(pixel_space=True),
           "micro_pixel": micro_pixel}


def preset(name: str) -> DFGNConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown DFGN preset {name!r}; allowed: {sorted(PRESETS)}")
    return PRESETS[name]()


class SpatialTransformer(nn.Module):
    """Text cross-attention over one frame's pixels: ``Transformer2DModel`` (continuous, linear projection).

    ``(N, C, H, W)`` -> same shape: GroupNorm -> tokens -> Linear -> ``num_layers`` x BasicTransformerBlock
    (self-attention, cross-attention to the text, GEGLU feed-forward) -> Linear -> back to pixels + residual.
    """

    def __init__(self, channels: int, heads: int, head_dim: int, cross_attention_dim: int, num_layers: int,
                 norm_groups: int):
        super().__init__()
        inner = heads * head_dim
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = nn.Linear(channels, inner)
        self.transformer_blocks = nn.ModuleList(
            BasicTransformerBlock(inner, heads, head_dim, cross_attention_dim=cross_attention_dim, activation_fn="geglu",
                                  attention_bias=False, norm_type="layer_norm", norm_elementwise_affine=True,
                                  norm_eps=1e-5) for _ in range(num_layers))
        self.proj_out = nn.Linear(inner, channels)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None) -> torch.Tensor:
        N, C, H, W = x.shape
        h = self.norm(x).permute(0, 2, 3, 1).reshape(N, H * W, C)  # (N, H·W, C)
        h = self.proj_in(h)  # (N, H·W, inner)
        for block in self.transformer_blocks:
            h = block(h, encoder_hidden_states=ctx)
        h = self.proj_out(h).reshape(N, H, W, C).permute(0, 3, 1, 2)  # (N, C, H, W), NHWC strides
        return same_layout(h, x) + x  # a copy only when x is NCHW (model.performance: channels_last)


class UNetStage(nn.Module):
    """ResNet block [+ cross-attention transformer] + temporal layer: one 'layer' of the U-Net."""

    def __init__(self, cin: int, cout: int, temb: int, cross: bool, cfg: DFGNConfig):
        super().__init__()
        self.resnet = ResnetBlock2D(in_channels=cin, out_channels=cout, temb_channels=temb,
                                    groups=norm_groups(cin, cfg.norm_num_groups), groups_out=norm_groups(cout, cfg.norm_num_groups))
        self.attn = None
        if cross:
            self.attn = SpatialTransformer(cout, cout // cfg.attention_head_dim, cfg.attention_head_dim,
                                           cfg.cross_attention_dim, cfg.transformer_layers, norm_groups(cout, cfg.norm_num_groups))
        sti = STIConfig(gamma=cfg.sti_gamma, heads=cfg.sti_heads, head_dim=cfg.sti_head_dim, kernel=cfg.sti_kernel,
                        conv_layers=cfg.sti_conv_layers, norm_groups=cfg.norm_num_groups,
                        attention_layers=cfg.sti_attention_layers)
        kind = TemporalLayer(cfg.temporal_layer)
        self.temporal = {TemporalLayer.STI: lambda: STILayer(cout, sti), TemporalLayer.CONV3D: lambda: Conv3DTemporalLayer(cout, sti),
                         TemporalLayer.NONE: lambda: None}[kind]()
        self.gradient_checkpointing = False
        self.checkpoint_granularity = Checkpointing.STAGE  # set by DFGN.set_checkpointing

    def forward(self, x: torch.Tensor, temb: torch.Tensor, ctx: torch.Tensor | None, num_frames: int) -> torch.Tensor:
        x = self.resnet(x, temb)  # (B·F, C, H, W)
        # attention granularity: the token-sized activations are recomputed, the convolutions' kept (performance.py)
        parts = torch.is_grad_enabled() and self.gradient_checkpointing and \
            self.checkpoint_granularity is Checkpointing.ATTENTION
        if self.attn is not None:
            x = self._gradient_checkpointing_func(self.attn, x, ctx) if parts else self.attn(x, ctx)
        if self.temporal is not None:
            x = self._gradient_checkpointing_func(self.temporal, x, num_frames) if parts else self.temporal(x, num_frames)
        return x


def _signature_of(config_cls):
    """Give ``__init__(self, **config)`` the dataclass's fields as keyword parameters with their defaults."""

    def decorate(init):
        params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)] + [
            inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
            for f in dataclasses.fields(config_cls)]
        init.__signature__ = inspect.Signature(params)
        return init

    return decorate


class DFGN(ModelMixin, ConfigMixin):
    """Noise-prediction U-Net over clips: ``(B, F, C_in, H, W)`` -> ``(B, F, C_out, H, W)``."""

    _supports_gradient_checkpointing = True

    @register_to_config
    @_signature_of(DFGNConfig)
    def __init__(self, **config):
        # One declaration: the parameters are DFGNConfig's fields (diffusers' ConfigMixin saves and restores them
        # from this signature); JSON gives lists where the dataclass holds tuples.
        super().__init__()
        cfg = DFGNConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
        self.cfg = cfg
        self.gradient_checkpointing = False
        self.checkpoint_granularity = Checkpointing.STAGE  # see set_checkpointing
        self.perf = PerfConfig()  # speed levers applied by model.performance.apply_performance
        C = cfg.block_out_channels
        temb = 4 * C[0]
        self.time_proj = Timesteps(C[0], flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(C[0], temb)
        self.conv_in = nn.Conv2d(cfg.in_channels, C[0], 3, padding=1)

        self.down = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        skips = [C[0]]
        cin = C[0]
        for i, (cout, cross) in enumerate(zip(C, cfg.cross_attn)):
            level = nn.ModuleList()
            for _ in range(cfg.layers_per_block):
                level.append(UNetStage(cin, cout, temb, cross, cfg))
                cin = cout
                skips.append(cout)
            self.down.append(level)
            last = i == len(C) - 1
            self.downsamplers.append(nn.Identity() if last else Downsample2D(cout, use_conv=True, out_channels=cout, padding=1, name="op"))
            if not last:
                skips.append(cout)

        self.mid = nn.ModuleList([UNetStage(C[-1], C[-1], temb, any(cfg.cross_attn), cfg), UNetStage(C[-1], C[-1], temb, False, cfg)])

        self.up = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        cin = C[-1]
        for i, (cout, cross) in enumerate(zip(reversed(C), reversed(cfg.cross_attn))):
            level = nn.ModuleList()
            for _ in range(cfg.layers_per_block + 1):
                level.append(UNetStage(cin + skips.pop(), cout, temb, cross, cfg))
                cin = cout
            self.up.append(level)
            last = i == len(C) - 1
            self.upsamplers.append(nn.Identity() if last else Upsample2D(cout, use_conv=True, out_channels=cout))

        self.norm_out = nn.GroupNorm(norm_groups(C[0], cfg.norm_num_groups), C[0], eps=1e-5)
        self.conv_out = nn.Conv2d(C[0], cfg.out_channels, 3, padding=1)

    @classmethod
    def from_dataclass(cls, cfg: DFGNConfig) -> DFGN:
        return cls(**{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()})

    def temporal_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, STILayer | Conv3DTemporalLayer)]

    def set_checkpointing(self, mode: Checkpointing | str) -> None:
        """Activation checkpointing: none | stage (each UNetStage) | attention (its attention + temporal layer)."""
        mode = Checkpointing(mode)
        if mode is Checkpointing.NONE:
            self.disable_gradient_checkpointing()
            return
        self.enable_gradient_checkpointing()
        for m in self.modules():  # the model itself included
            if isinstance(m, DFGN | UNetStage):
                m.checkpoint_granularity = mode

    def _stage(self, stage: UNetStage, x, temb, ctx, num_frames: int) -> torch.Tensor:
        if torch.is_grad_enabled() and self.gradient_checkpointing and self.checkpoint_granularity is Checkpointing.STAGE:
            return self._gradient_checkpointing_func(stage, x, temb, ctx, num_frames)
        return stage(x, temb, ctx, num_frames)

    def forward(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor | float | int,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """sample (B, F, C_in, H, W); timestep scalar or (B,); encoder_hidden_states (B, L, D) -> (B, F, C_out, H, W)."""
        B, Fr, Cin, H, W = sample.shape
        if Cin != self.cfg.in_channels:
            raise ValueError(f"sample has {Cin} channels, model expects in_channels={self.cfg.in_channels}")
        if encoder_hidden_states is None and any(self.cfg.cross_attn):
            raise ValueError("encoder_hidden_states is required (use the null-text embedding for unconditional passes)")
        x = to_memory_format(sample.reshape(B * Fr, Cin, H, W), self.perf)  # (B·F, C_in, H, W), NHWC if channels_last
        t = torch.as_tensor(timestep, device=sample.device).reshape(-1).expand(B).repeat_interleave(Fr)  # (B·F,)
        temb = self.time_embedding(self.time_proj(t).to(sample.dtype))  # (B·F, 4·C0)
        ctx = encoder_hidden_states.repeat_interleave(Fr, dim=0) if encoder_hidden_states is not None else None  # (B·F, L, D)

        x = self.conv_in(x)
        skips = [x]
        for level, down in zip(self.down, self.downsamplers):
            for stage in level:
                x = self._stage(stage, x, temb, ctx, Fr)
                skips.append(x)
            if not isinstance(down, nn.Identity):
                x = down(x)
                skips.append(x)
        for stage in self.mid:
            x = self._stage(stage, x, temb, ctx, Fr)
        for level, up in zip(self.up, self.upsamplers):
            for stage in level:
                x = self._stage(stage, torch.cat([x, skips.pop()], dim=1), temb, ctx, Fr)
            if not isinstance(up, nn.Identity):
                x = up(x)
        x = self.conv_out(nn.functional.silu(self.norm_out(x)))  # (B·F, C_out, H, W)
        return x.reshape(B, Fr, -1, H, W)  # (B, F, C_out, H, W)
