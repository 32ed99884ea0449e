"""Video Swin-T with FAST-VQA's gated relative position bias (GRPB): the FAST-VQA-B backbone.

Wu et al., "FAST-VQA: Efficient End-to-end Video Quality Assessment with Fragment Sampling", ECCV 2022,
Sec. 3.2 ("Fragment Attention Network"). Written from the paper and the official code
(github.com/VQAssessment/FAST-VQA-and-FasterVQA, ``fastvqa/models/swin_backbone.py``: ``SwinTransformer3D``,
built with no arguments for ``backbone_size: swin_tiny_grpb`` in ``options/fast/fast-b.yml``), so that the
published ``FAST_VQA_B_1_4.pth`` loads with strict key and shape checking. Parameter / buffer names are
fixed by that file: ``patch_embed.proj``, ``layers.{i}.blocks.{j}.attn.relative_position_bias_table``,
``...attn.fragment_position_bias_table`` (stages 0-2 only), ``...attn.relative_position_index`` (a
*persistent* buffer there, so it is in the checkpoint), ``layers.{i}.downsample.reduction``, ``norm``.

Facts of the official code this module reproduces (some differ from a textbook Video Swin):

- Swin-T: patch (2, 4, 4), embed dim 96, depths (2, 2, 6, 2), heads (3, 6, 12, 24), window (8, 7, 7),
  mlp ratio 4, qkv bias, LayerNorm after the patch embedding (``patch_norm=True``), final LayerNorm.
- Adaptive window (``get_adaptive_window_size``, always on in ``forward``): the window is rescaled by the
  input size relative to ``base_x_size = (32, 224, 224)``: ``(8*T//32, 7*H//224, 7*W//224)``. At the
  official 32x224x224 input it is the plain (8, 7, 7). The shift stays the base window's half (4, 3, 3);
  per stage, a window/shift is clipped to the feature size where the feature is not larger than it.
- GRPB (``frag_biases=[True, True, True, False]``): every token gets the index of the fragment it comes
  from, ``(0, h_f, w_f)`` on a ``(1, wh, ww)`` grid (``global_position_index``: nearest-neighbour
  interpolation of the fragment grid to the padded feature size, i.e. as many fragments per axis as the
  window has tokens — 7 for the official 7x7 grid of 32 px fragments), rolled with the shifted windows.
  For a token pair ``g = |dh_f| + |dw_f|`` (an L1 distance, *not* clamped to 0/1 as the paper's gate
  suggests: the official code uses ``fmask.abs().sum(-1)``), and the bias added to the logits is
  ``relative_bias * g + fragment_bias * (1 - g)``: intra-fragment pairs (``g = 0``) use the fragment table,
  neighbouring-fragment pairs the ordinary table, and pairs two fragments apart ``2 * rel - frag``. We keep
  that exactly, since the released weights were trained with it. Stage 3 has no fragment table.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn

PATCH_SIZE = (2, 4, 4)  # SwinTransformer3D default patch_size (T, H, W)
EMBED_DIM = 96  # Swin-T
DEPTHS = (2, 2, 6, 2)  # Swin-T
NUM_HEADS = (3, 6, 12, 24)  # Swin-T
WINDOW_SIZE = (8, 7, 7)  # "window877" of the Kinetics-400 Swin-T FAST-VQA starts from
FRAG_BIASES = (True, True, True, False)  # GRPB in stages 0-2 (official default ``frag_biases``)
BASE_X_SIZE = (32, 224, 224)  # input size the window is defined for (official ``base_x_size``)
MLP_RATIO = 4.0
NUM_FEATURES = EMBED_DIM * 2 ** (len(DEPTHS) - 1)  # 768 channels out of the last stage

Size3 = tuple[int, int, int]


def adaptive_window(x_size: Size3, base_window: Size3 = WINDOW_SIZE,
                    base_x_size: Size3 = BASE_X_SIZE) -> Size3:
    """Window scaled by input size / ``base_x_size`` (official ``get_adaptive_window_size``)."""
    d, h, w = (win * x // b for win, x, b in zip(base_window, x_size, base_x_size))
    return d, h, w


def clip_window(x_size: Size3, window: Size3, shift: Size3) -> tuple[Size3, Size3]:
    """Where the feature is not larger than the window: feature size, no shift (``get_window_size``)."""
    win, sh = list(window), list(shift)
    for i, x in enumerate(x_size):
        if x <= win[i]:
            win[i], sh[i] = x, 0
    return tuple(win), tuple(sh)  # type: ignore[return-value]


def window_partition(x: torch.Tensor, window: Size3) -> torch.Tensor:
    """``(B, D, H, W, C)`` -> ``(B * nW, wd * wh * ww, C)``, windows in (d, h, w) raster order."""
    B, D, H, W, C = x.shape
    wd, wh, ww = window
    x = x.view(B, D // wd, wd, H // wh, wh, W // ww, ww, C)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wd * wh * ww, C)  # B*nW, N, C


def window_reverse(windows: torch.Tensor, window: Size3, B: int, D: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, N, C)`` -> ``(B, D, H, W, C)``."""
    wd, wh, ww = window
    x = windows.view(B, D // wd, H // wh, W // ww, wd, wh, ww, -1)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(B, D, H, W, -1)  # B, D, H, W, C


@lru_cache(maxsize=16)
def shift_mask(Dp: int, Hp: int, Wp: int, window: Size3, shift: Size3, device: torch.device) -> torch.Tensor:
    """``(nW, N, N)`` additive mask (0 / -100): shifted windows do not mix regions (``compute_mask``)."""
    img = torch.zeros((1, Dp, Hp, Wp, 1), device=device)
    cnt = 0
    for d in (slice(-window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for h in (slice(-window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            for w in (slice(-window[2]), slice(-window[2], -shift[2]), slice(-shift[2], None)):
                img[:, d, h, w, :] = cnt
                cnt += 1
    win = window_partition(img, window).squeeze(-1)  # nW, N
    diff = win.unsqueeze(1) - win.unsqueeze(2)  # nW, N, N
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


@lru_cache(maxsize=16)
def fragment_gate(Dp: int, Hp: int, Wp: int, window: Size3, shift: Size3,
                  device: torch.device) -> torch.Tensor:
    """``(nW, N, N)`` GRPB gate: L1 distance between the fragment indices of each token pair in a window.

    Fragment grid ``(1, wh, ww)`` spread over the padded feature by nearest-neighbour interpolation and
    rolled with the windows, as the official ``global_position_index``; 0 means "same fragment".
    """
    grid = (1, window[1], window[2])
    axes = [torch.arange(n, dtype=torch.float32) for n in grid]
    frags = torch.stack(torch.meshgrid(*axes, indexing="ij"))  # 3, 1, wh, ww
    coords = F.interpolate(frags[None], size=(Dp, Hp, Wp), mode="nearest")  # 1, 3, Dp, Hp, Wp
    coords = coords.permute(0, 2, 3, 4, 1)  # 1, Dp, Hp, Wp, 3
    if any(shift):
        coords = torch.roll(coords, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    win = window_partition(coords, window)  # nW, N, 3
    gate = (win[:, None, :, :] - win[:, :, None, :]).abs().sum(-1)  # nW, N, N
    return gate.to(device=device, dtype=torch.uint8)  # small integers; uint8 keeps the cache 4x smaller


class WindowAttention3D(nn.Module):
    """Window multi-head self-attention with a relative position bias and, optionally, the GRPB table."""

    def __init__(self, dim: int, window: Size3, num_heads: int, frag_bias: bool) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.frag_bias = frag_bias
        self.scale = (dim // num_heads) ** -0.5  # official qk_scale=None -> head_dim ** -0.5
        table_len = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(table_len, num_heads))
        if frag_bias:  # same shape; used for pairs inside one fragment
            self.fragment_position_bias_table = nn.Parameter(torch.zeros(table_len, num_heads))
        # Persistent, as in the official code (it is part of FAST_VQA_B_1_4.pth).
        self.register_buffer("relative_position_index", self._relative_index(window))
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)

    @staticmethod
    def _relative_index(window: Size3) -> torch.Tensor:
        """``(N, N)`` index into the bias table for every token pair of a full window."""
        wd, wh, ww = window
        grids = torch.meshgrid(torch.arange(wd), torch.arange(wh), torch.arange(ww), indexing="ij")
        coords = torch.stack(grids).flatten(1)  # 3, N
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # N, N, 3
        rel = rel + torch.tensor([wd - 1, wh - 1, ww - 1])  # shift to start from 0
        return rel[..., 0] * (2 * wh - 1) * (2 * ww - 1) + rel[..., 1] * (2 * ww - 1) + rel[..., 2]  # N, N

    def _bias(self, table: torch.Tensor, window: Size3) -> torch.Tensor:
        """``(nH, N, N)`` bias for a (possibly smaller, adaptive) window: top-left corner of the index."""
        d, h, w = window
        N = d * h * w
        idx = self.relative_position_index.view(*self.window, *self.window)[:d, :h, :w, :d, :h, :w]
        return table[idx.reshape(-1)].view(N, N, -1).permute(2, 0, 1)  # nH, N, N

    def forward(self, x: torch.Tensor, window: Size3, gate: torch.Tensor,
                mask: torch.Tensor | None) -> torch.Tensor:
        """``x``: ``(B * nW, N, C)``; ``gate`` / ``mask``: ``(nW, N, N)``. Returns ``(B * nW, N, C)``."""
        B_, N, C = x.shape
        nH = self.num_heads
        nW = gate.shape[0]
        qkv = self.qkv(x).view(B_ // nW, nW, N, 3, nH, C // nH)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each B, nW, nH, N, hd

        rel = self._bias(self.relative_position_bias_table, window)  # nH, N, N
        if self.frag_bias:
            # rel * g + frag * (1 - g) == frag + (rel - frag) * g
            frag = self._bias(self.fragment_position_bias_table, window)  # nH, N, N
            bias = torch.addcmul(frag, rel - frag, gate.unsqueeze(1).to(rel.dtype))  # nW, nH, N, N
        else:
            bias = rel.unsqueeze(0)  # 1, nH, N, N
        if mask is not None:
            bias = bias + mask.unsqueeze(1).to(bias.dtype)  # nW, nH, N, N
        # softmax(q k^T * hd^-0.5 + bias (+ shift mask)) v, as the official code
        attn = (q * self.scale) @ k.transpose(-2, -1)  # B, nW, nH, N, N
        attn = (attn + bias.to(attn.dtype)).softmax(-1)
        out = (attn @ v).permute(0, 1, 3, 2, 4).reshape(B_, N, C)  # B*nW, N, C
        return self.proj(out)


class Mlp(nn.Module):
    """Two-layer GELU MLP of a transformer block (``fc1`` / ``fc2`` as in the checkpoint)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock3D(nn.Module):
    """Pre-norm (shifted) window attention + MLP block (official ``SwinTransformerBlock3D``)."""

    def __init__(self, dim: int, num_heads: int, window: Size3, shift: Size3, frag_bias: bool) -> None:
        super().__init__()
        self.shift = shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, window, num_heads, frag_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * MLP_RATIO))

    def _attend(self, x: torch.Tensor, layer_window: Size3, mask: torch.Tensor) -> torch.Tensor:
        B, D, H, W, C = x.shape
        window, shift = clip_window((D, H, W), layer_window, self.shift)
        x = self.norm1(x)
        pad_d, pad_h, pad_w = ((window[i] - s % window[i]) % window[i] for i, s in enumerate((D, H, W)))
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h, 0, pad_d))  # B, Dp, Hp, Wp, C
        _, Dp, Hp, Wp, _ = x.shape
        shifted = any(s > 0 for s in shift)
        if shifted:
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        gate = fragment_gate(Dp, Hp, Wp, window, shift, x.device)  # nW, N, N
        windows = window_partition(x, window)  # B*nW, N, C
        windows = self.attn(windows, window, gate, mask if shifted else None)  # B*nW, N, C
        x = window_reverse(windows, window, B, Dp, Hp, Wp)  # B, Dp, Hp, Wp, C
        if shifted:
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        return x[:, :D, :H, :W, :]

    def forward(self, x: torch.Tensor, layer_window: Size3, mask: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, D, H, W, C)`` -> same shape."""
        x = x + self._attend(x, layer_window, mask)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 spatial patch merging: concat, LayerNorm(4C), Linear(4C -> 2C) (checkpoint: ``downsample``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, D, H, W, C)`` -> ``(B, D, ceil(H/2), ceil(W/2), 2C)``."""
        B, D, H, W, C = x.shape
        if H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        parts = [x[:, :, 0::2, 0::2], x[:, :, 1::2, 0::2], x[:, :, 0::2, 1::2], x[:, :, 1::2, 1::2]]
        x = torch.cat(parts, -1)  # B, D, H/2, W/2, 4C
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    """One stage: ``depth`` blocks alternating plain / shifted windows, then optional patch merging."""

    def __init__(self, dim: int, depth: int, num_heads: int, window: Size3, frag_bias: bool,
                 downsample: bool) -> None:
        super().__init__()
        self.shift: Size3 = tuple(w // 2 for w in window)  # type: ignore[assignment]
        self.blocks = nn.ModuleList(
            SwinBlock3D(dim, num_heads, window, (0, 0, 0) if i % 2 == 0 else self.shift, frag_bias)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: torch.Tensor, resized_window: Size3) -> torch.Tensor:
        """``(B, C, D, H, W)`` -> ``(B, C', D, H', W')``."""
        B, C, D, H, W = x.shape
        window, shift = clip_window((D, H, W), resized_window, self.shift)
        x = x.permute(0, 2, 3, 4, 1)  # B, D, H, W, C
        Dp, Hp, Wp = (-(-s // w) * w for s, w in zip((D, H, W), window))
        mask = shift_mask(Dp, Hp, Wp, window, shift, x.device)  # nW, N, N
        for blk in self.blocks:
            x = blk(x, resized_window, mask)
        if self.downsample is not None:
            x = self.downsample(x)  # B, D, H/2, W/2, 2C
        return x.permute(0, 4, 1, 2, 3)  # B, C', D, H', W'


class PatchEmbed3D(nn.Module):
    """Non-overlapping (2, 4, 4) patches -> 96 channels, then LayerNorm (``patch_norm=True``)."""

    def __init__(self, patch: Size3 = PATCH_SIZE, in_chans: int = 3, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` -> ``(B, 96, T/2, H/4, W/4)`` (zero-padded up to multiples of the patch)."""
        B, C, T, H, W = x.shape
        pt, ph, pw = self.patch
        x = F.pad(x, (0, (-W) % pw, 0, (-H) % ph, 0, (-T) % pt))
        x = self.proj(x)  # B, 96, D, Hp, Wp
        return self.norm(x.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)


class SwinTransformer3D(nn.Module):
    """FAST-VQA-B's fragment backbone (``fragments_backbone`` in the checkpoint)."""

    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed3D()
        self.layers = nn.ModuleList(
            SwinStage(EMBED_DIM * 2 ** i, DEPTHS[i], NUM_HEADS[i], WINDOW_SIZE, FRAG_BIASES[i],
                      downsample=i < len(DEPTHS) - 1)
            for i in range(len(DEPTHS))
        )
        self.norm = nn.LayerNorm(NUM_FEATURES)
        self.init_weights()

    def init_weights(self) -> None:
        """Official ``init_weights`` for random weights: Linear trunc-normal(0.02) / zero bias, LayerNorm 1/0,
        bias tables trunc-normal(0.02). The official code leaves the fragment tables at zero and forks them
        from the ordinary tables when loading Kinetics weights (``load_swin``); we copy them likewise."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, WindowAttention3D):
                nn.init.trunc_normal_(m.relative_position_bias_table, std=0.02)
                if m.frag_bias:
                    with torch.no_grad():
                        m.fragment_position_bias_table.copy_(m.relative_position_bias_table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` normalised clip -> ``(B, 768, T/2, H/32, W/32)`` features."""
        B, C, T, H, W = x.shape
        resized_window = adaptive_window((T, H, W))
        if min(resized_window) < 1:
            raise ValueError(f"input {(T, H, W)} is too small for the adaptive window "
                             f"(need T >= 4, H, W >= 32)")
        x = self.patch_embed(x)  # B, 96, T/2, H/4, W/4
        for layer in self.layers:
            x = layer(x.contiguous(), resized_window)  # B, C', D, H', W'
        x = self.norm(x.permute(0, 2, 3, 4, 1))  # B, D, H/32, W/32, 768
        return x.permute(0, 4, 1, 2, 3)  # B, 768, D, H/32, W/32
