"""Spatial-Temporal Interaction (STI) layer and the 3D-convolution temporal layer of the Table 3 ablation.

Paper, Method, "Discrete Frame Generation Network": temporal modelling is split into

a. **semantic interaction** — downsample the per-frame features by γ, unfold all frames' regions into
   one sequence of F·(H/γ)·(W/γ) tokens, self-attention across them (Table 6: 1 attention layer, 8 heads,
   head dim 32), upsample by γ back to H×W. Any region of any frame can attend to any region of any
   other frame, which suits stickers whose frames are discrete poses rather than smooth motion;
b. **detail maintenance** — convolutions with kernel k×1×1 over time (Table 6: kernel (3, 1, 1), 2
   layers), which keep the fine per-pixel detail that the pooled attention loses;
c. **fusion** — "a linear layer to get the weights of the two branches, so as to dynamically fuse the
   semantic and detailed features in the different depth layers after normalization": a linear layer
   on the pooled, normalised input features gives per-frame softmax weights of the two branches.

Choices the paper leaves open (documented, configurable):

- γ defaults to 2: at the 32×32 latent level this gives 8·16·16 = 2048 tokens per clip, at 4×4 levels 32
  tokens; ``gamma=1`` disables pooling. Pooling is average pooling, upsampling is nearest (exact
  inverse in shape; the detail branch restores high frequencies).
- Tokens get a fixed sinusoidal *frame-index* embedding before attention; without it attention is
  permutation-equivariant over frames and could not tell "before" from "after".
- Table 6's "1 attention layer" is read as one transformer layer, i.e. self-attention followed by a
  feed-forward network (as in diffusers' ``BasicTransformerBlock``). Its hidden width is 2·C
  (``ff_mult``): with 4·C the model would have 1.01 B parameters, with 2·C it has 0.94 B, next to
  Table 8's 0.96 B (the remaining gap is the authors' 2D-ResNet detail branch, which the paper's
  k×1×1 convolutions replace).
- ``attention_layers`` (``DFGNConfig.sti_attention_layers``, Table 6 "Num attention layers": 1) stacks that
  many such transformer layers in the semantic branch, each on the tokens updated by the one before. The
  first layer's weights keep their names (``to_qkv``, ``to_out``, ``ff``) so checkpoints of the 1-layer
  default load unchanged; layers 2.. live in ``more_attention``.
- Identity at initialisation (for stable from-scratch training): the attention output projection
  and the last temporal convolution are zero-initialised, so both branches output 0 and the layer
  returns its input exactly; fusion starts at equal weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class STIConfig:
    gamma: int = 2  # spatial downsampling factor before cross-frame attention
    heads: int = 8  # attention heads (Table 6)
    head_dim: int = 32  # attention head dim (Table 6)
    kernel: int = 3  # temporal kernel k of the k×1×1 convolutions (Table 6: 3)
    conv_layers: int = 2  # number of temporal convolutions (Table 6: 2)
    ff_mult: int = 2  # hidden width multiple of the feed-forward after attention (0 = attention only)
    attention_layers: int = 1  # transformer layers (attention + feed-forward) in the semantic branch (Table 6: 1)
    norm_groups: int = 32  # GroupNorm groups (reduced automatically for narrow layers)


def norm_groups(channels: int, wanted: int) -> int:
    g = min(wanted, channels)
    while channels % g:
        g -= 1
    return g


def frame_position_embedding(num_frames: int, dim: int, device, dtype) -> torch.Tensor:
    """Sinusoidal embedding of the frame index: (F, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=device, dtype=torch.float32) / max(half, 1))
    ang = torch.arange(num_frames, device=device, dtype=torch.float32)[:, None] * freqs[None]  # (F, half)
    emb = torch.cat([ang.sin(), ang.cos()], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb.to(dtype)  # (F, dim)


class _FrameAttention(nn.Module):
    """One transformer layer of the semantic branch: self-attention over all frames' tokens + feed-forward."""

    def __init__(self, channels: int, cfg: STIConfig):
        super().__init__()
        inner = cfg.heads * cfg.head_dim
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.to_qkv = nn.Linear(channels, 3 * inner, bias=False)
        self.to_out = nn.Linear(inner, channels)
        self.ff = None
        if cfg.ff_mult > 0:
            self.ff = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, cfg.ff_mult * channels), nn.GELU(),
                                    nn.Linear(cfg.ff_mult * channels, channels))

    def update(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, N, C) -> the layer's residual update (B, N, C). Also called on an STILayer, which holds its
        first layer's to_qkv/to_out/ff/heads/head_dim itself (stable weight names), so both share this code."""
        B, N, C = tokens.shape
        q, k, v = self.to_qkv(tokens).chunk(3, dim=-1)  # each (B, N, heads·head_dim)
        heads, d = self.heads, self.head_dim
        q, k, v = (t.reshape(B, N, heads, d).transpose(1, 2) for t in (q, k, v))  # (B, heads, N, d)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, d)
        out = self.to_out(out.transpose(1, 2).reshape(B, N, heads * d))  # (B, N, C)
        if self.ff is not None:
            out = out + self.ff(tokens + out)  # feed-forward on the attended tokens; the update only
        return out


class STILayer(nn.Module):
    """Residual STI layer on per-frame features ``(B·F, C, H, W)``; returns the same shape."""

    def __init__(self, channels: int, cfg: STIConfig = STIConfig()):
        super().__init__()
        if cfg.gamma < 1 or cfg.kernel < 1 or cfg.kernel % 2 == 0 or cfg.conv_layers < 1 or cfg.attention_layers < 1:
            raise ValueError(f"invalid STIConfig {cfg}: gamma >= 1, odd kernel >= 1, conv_layers >= 1, "
                             "attention_layers >= 1 required")
        self.cfg = cfg
        self.norm = nn.GroupNorm(norm_groups(channels, cfg.norm_groups), channels, eps=1e-6)
        # a. semantic interaction: layer 1 inline (stable weight names), layers 2.. in more_attention
        first = _FrameAttention(channels, cfg)
        self.to_qkv, self.to_out, self.ff = first.to_qkv, first.to_out, first.ff
        self.heads, self.head_dim = cfg.heads, cfg.head_dim
        self.more_attention = nn.ModuleList(_FrameAttention(channels, cfg) for _ in range(cfg.attention_layers - 1))
        # b. detail maintenance: k×1×1 temporal convolutions
        pad = (cfg.kernel // 2, 0, 0)
        self.temporal = nn.ModuleList(
            nn.Conv3d(channels, channels, (cfg.kernel, 1, 1), padding=pad) for _ in range(cfg.conv_layers)
        )
        self.temporal_norms = nn.ModuleList(
            nn.GroupNorm(norm_groups(channels, cfg.norm_groups), channels, eps=1e-6) for _ in range(cfg.conv_layers - 1)
        )
        # c. fusion weights from normalised, pooled features
        self.fuse = nn.Linear(channels, 2)
        zero = [self.temporal[-1].weight, self.temporal[-1].bias, self.fuse.weight, self.fuse.bias]
        for att in (self, *self.more_attention):
            zero += [att.to_out.weight, att.to_out.bias] + ([att.ff[-1].weight, att.ff[-1].bias] if att.ff is not None else [])
        for p in zero:
            nn.init.zeros_(p)  # identity at init; fusion starts at 50/50

    def semantic(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        BF, C, H, W = h.shape
        B, Fr, g = BF // num_frames, num_frames, self.cfg.gamma
        hs = F.avg_pool2d(h, g) if g > 1 and H >= g and W >= g else h  # (B·F, C, h, w)
        _, _, h_, w_ = hs.shape
        tokens = hs.reshape(B, Fr, C, h_ * w_).permute(0, 1, 3, 2)  # (B, F, h·w, C)
        tokens = tokens + frame_position_embedding(Fr, C, h.device, h.dtype)[None, :, None, :]
        tokens = tokens.reshape(B, Fr * h_ * w_, C)  # (B, N, C), N = F·h·w
        out = _FrameAttention.update(self, tokens)  # (B, N, C): the update of layer 1, not tokens + update
        for att in self.more_attention:
            out = out + att.update(tokens + out)  # layer i attends over the tokens updated by 1..i-1
        out = out.reshape(B, Fr, h_, w_, C).permute(0, 1, 4, 2, 3).reshape(BF, C, h_, w_)  # (B·F, C, h, w)
        if (h_, w_) != (H, W):
            out = F.interpolate(out, size=(H, W), mode="nearest")  # (B·F, C, H, W)
        return out

    def detail(self, h: torch.Tensor, num_frames: int) -> torch.Tensor:
        BF, C, H, W = h.shape
        x = h.reshape(BF // num_frames, num_frames, C, H, W).transpose(1, 2)  # (B, C, F, H, W)
        for i, conv in enumerate(self.temporal):
            x = conv(F.silu(x) if i == 0 else F.silu(self.temporal_norms[i - 1](x)))
        return x.transpose(1, 2).reshape(BF, C, H, W)  # (B·F, C, H, W)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        BF, C, H, W = x.shape
        if BF % num_frames:
            raise ValueError(f"batch·frames {BF} is not a multiple of num_frames={num_frames}")
        h = self.norm(x)
        w = self.fuse(h.mean(dim=(2, 3))).softmax(dim=-1)  # (B·F, 2) per-frame branch weights
        sem, det = self.semantic(h, num_frames), self.detail(h, num_frames)
        return x + w[:, 0, None, None, None] * sem + w[:, 1, None, None, None] * det


class Conv3DTemporalLayer(nn.Module):
    """Ablation baseline (paper Table 3, "DFGN(3D-Conv)"): a residual 3×3×3 convolution over (F, H, W).

    Same interface and identity-at-init property as :class:`STILayer`. One convolution by default:
    it already has 27·C² weights, about twice an STI layer's (~12·C²); the paper does not say how
    many it used.
    """

    def __init__(self, channels: int, cfg: STIConfig = STIConfig(), layers: int = 1):
        super().__init__()
        g = norm_groups(channels, cfg.norm_groups)
        self.norms = nn.ModuleList(nn.GroupNorm(g, channels, eps=1e-6) for _ in range(layers))
        self.convs = nn.ModuleList(nn.Conv3d(channels, channels, 3, padding=1) for _ in range(layers))
        nn.init.zeros_(self.convs[-1].weight)
        nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x: torch.Tensor, num_frames: int) -> torch.Tensor:
        BF, C, H, W = x.shape
        h = x.reshape(BF // num_frames, num_frames, C, H, W).transpose(1, 2)  # (B, C, F, H, W)
        for norm, conv in zip(self.norms, self.convs):
            h = conv(F.silu(norm(h)))
        return x + h.transpose(1, 2).reshape(BF, C, H, W)  # (B·F, C, H, W)
