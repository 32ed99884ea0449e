"""Reconstruction metrics (PSNR, SSIM) for tasks that have a ground truth: interpolation and prediction.

The paper reports only FVD, VQA and CLIP similarity; these metrics go beyond it. For interpolation and
pre/post prediction the sticker's real frames are the ground truth, so pixel fidelity of the *generated*
frames can be measured directly. Only generated frames count: the sampler pastes the known (conditioned)
frames back verbatim (``model.sampling``, ``paste_known``), and scoring them would add perfect frames and
inflate every number. Pass ``frame_mask`` = the frames that were generated — e.g.
``ConditionMask.target`` (``model.masks``) or :func:`generated_frame_mask` from the known positions.

Conventions (both metrics are computed per frame, then averaged over frames, as is common in video
prediction benchmarks; the evaluator pools all scored frames of all videos, so every generated frame
weighs the same):

- **PSNR** = ``10 · log10(data_range² / MSE)``, MSE over all pixels and the three RGB channels of one
  frame. An identical frame has MSE = 0 and infinite PSNR; every per-frame value is capped at
  :data:`PSNR_CAP_DB` = 100 dB so means stay finite (one wrong 8-bit level in a 256×256 RGB frame is
  ≈ 101 dB, so the cap only merges "perfect" with "all but imperceptible").
- **SSIM** follows Wang, Bovik, Sheikh & Simoncelli 2004 ("Image quality assessment: from error
  visibility to structural similarity", IEEE TIP) and their reference ``ssim_index.m``: an 11×11
  Gaussian window with σ = 1.5 (normalised to sum 1), K1 = 0.01, K2 = 0.03, L = ``data_range``,
  local statistics over 'valid' windows only (no padding), population (not sample) covariances, and no
  automatic downsampling. It is computed on each RGB channel separately and the SSIM map is averaged over
  channels and positions — what ``skimage.metrics.structural_similarity(..., channel_axis=-1,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)`` does — rather than on luma.

Inputs are uint8 (the default ``data_range=255``) or float frames (pass ``data_range=1.0`` for [0, 1]);
all arithmetic is float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

PSNR_CAP_DB = 100.0  # per-frame PSNR cap; identical frames (MSE = 0) get exactly this value
SSIM_WIN = 11  # Gaussian window size (Wang et al. 2004)
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

ArrayLike = torch.Tensor | np.ndarray


def _frames(x: ArrayLike, name: str) -> torch.Tensor:
    """(F, H, W, 3) or a single (H, W, 3) frame -> float64 (F, H, W, 3)."""
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[-1] != 3:
        raise ValueError(f"{name} must be (F, H, W, 3) RGB frames, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must be uint8 or float frames, got {t.dtype}")
    return t.to(torch.float64)


def _pair(pred: ArrayLike, target: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = _frames(pred, "pred"), _frames(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred and target shapes differ: {tuple(p.shape)} vs {tuple(t.shape)}")
    if not (torch.isfinite(p).all() and torch.isfinite(t).all()):
        raise ValueError("pred/target contain non-finite values")
    return p, t


def psnr_per_frame(pred: ArrayLike, target: ArrayLike, *, data_range: float = 255.0) -> torch.Tensor:
    """PSNR in dB of each frame, (F,) float64, capped at :data:`PSNR_CAP_DB`."""
    p, t = _pair(pred, target)
    mse = (p - t).pow(2).mean(dim=(1, 2, 3))
    val = 10.0 * torch.log10(float(data_range) ** 2 / mse)  # torch: x / 0 = +inf, no warning
    return val.clamp(max=PSNR_CAP_DB)  # mse == 0 -> +inf -> cap


def psnr(pred: ArrayLike, target: ArrayLike, *, data_range: float = 255.0) -> float:
    """Mean over frames of the per-frame PSNR (dB) — not the PSNR of the pooled MSE."""
    return float(psnr_per_frame(pred, target, data_range=data_range).mean())


def gaussian_window(size: int = SSIM_WIN, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """1-D normalised Gaussian taps (size,), float64; the 2-D window (fspecial) is their outer product."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_per_frame(pred: ArrayLike, target: ArrayLike, *, data_range: float = 255.0) -> torch.Tensor:
    """SSIM of each frame, (F,) float64: per-channel SSIM maps over valid 11×11 windows, averaged."""
    p, t = _pair(pred, target)
    n, h, w, c = p.shape
    if h < SSIM_WIN or w < SSIM_WIN:
        raise ValueError(f"SSIM needs frames of at least {SSIM_WIN}x{SSIM_WIN} pixels, got {h}x{w}")
    # float32 on values scaled to [0, 1]: ~7x faster than float64 depthwise convs on CPU, and the filtered
    # moments keep ~1e-7 absolute precision (SSIM agrees with a float64 scipy reference to < 1e-5).
    g = gaussian_window().float()
    k = 5 * c  # x, y, x², y², xy of every channel, filtered in ONE grouped conv per direction
    kx = g.view(1, 1, 1, SSIM_WIN).repeat(k, 1, 1, 1)  # separable: rows then columns
    ky = g.view(1, 1, SSIM_WIN, 1).repeat(k, 1, 1, 1)
    x = (p / data_range).float().permute(0, 3, 1, 2)  # (N, C, H, W)
    y = (t / data_range).float().permute(0, 3, 1, 2)
    z = torch.cat([x, y, x * x, y * y, x * y], 1)  # (N, 5C, H, W)
    z = F.conv2d(F.conv2d(z, kx, groups=k), ky, groups=k).double()  # 'valid' filtering -> (N, 5C, H-10, W-10)
    mx, my, exx, eyy, exy = z.chunk(5, 1)
    c1, c2 = SSIM_K1**2, SSIM_K2**2  # (K·L)² with L = 1 after scaling
    sxx = exx - mx * mx
    syy = eyy - my * my
    sxy = exy - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return smap.mean(dim=(1, 2, 3))


def ssim(pred: ArrayLike, target: ArrayLike, *, data_range: float = 255.0) -> float:
    """Mean over frames of the per-frame SSIM."""
    return float(ssim_per_frame(pred, target, data_range=data_range).mean())


def generated_frame_mask(num_frames: int, known_positions: Sequence[int]) -> np.ndarray:
    """(F,) bool mask of the generated frames: every frame not in ``known_positions``.

    ``known_positions`` is what :func:`model.sampling.condition_positions` returns for a task.
    """
    mask = np.ones(num_frames, dtype=bool)
    for i in known_positions:
        if not 0 <= int(i) < num_frames:
            raise ValueError(f"known position {i} outside [0, {num_frames})")
        mask[int(i)] = False
    return mask


def _numpy(x: ArrayLike | Sequence) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _as_mask(frame_mask: ArrayLike | Sequence[int] | Sequence[bool] | None, num_frames: int) -> np.ndarray:
    """Normalise a bool mask (F,) or a list of frame indices to a bool mask (F,)."""
    if frame_mask is None:
        return np.ones(num_frames, dtype=bool)
    arr = _numpy(frame_mask)
    if arr.dtype == bool:
        if arr.shape != (num_frames,):
            raise ValueError(f"bool frame_mask must have shape ({num_frames},), got {arr.shape}")
        mask = arr.copy()
    elif arr.size == 0 or np.issubdtype(arr.dtype, np.integer):
        idx = arr.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= num_frames):
            raise ValueError(f"frame indices {idx.tolist()} outside [0, {num_frames})")
        mask = np.zeros(num_frames, dtype=bool)
        mask[idx] = True
    else:
        raise ValueError(f"frame_mask must be bool (F,) or integer frame indices, got dtype {arr.dtype}")
    if not mask.any():
        raise ValueError("frame_mask selects no frame: nothing was generated, nothing to score")
    return mask


def _videos(x: ArrayLike | Sequence[ArrayLike], name: str) -> list[ArrayLike]:
    if isinstance(x, torch.Tensor | np.ndarray):
        if x.ndim != 5:
            raise ValueError(f"{name} must be (B, F, H, W, 3) or a list of (F, H, W, 3), "
                             f"got {tuple(x.shape)}")
        return list(x)
    return list(x)


@dataclass
class ReconstructionResult:
    psnr: float  # dB, mean over all scored (generated) frames of the per-frame PSNR (capped at 100 dB)
    ssim: float  # mean over all scored frames of the per-frame SSIM
    n_videos: int
    n_frames: int  # generated frames scored (known frames excluded)
    per_video_psnr: list[float] = field(default_factory=list)  # mean over each video's scored frames
    per_video_ssim: list[float] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)  # conventions, for MLflow

    def metrics(self) -> dict[str, float]:
        return {"psnr": self.psnr, "ssim": self.ssim}


class ReconstructionEvaluator:
    """Accumulates per-frame PSNR/SSIM of generated frames against ground truth."""

    def __init__(self, *, data_range: float = 255.0) -> None:
        if not (np.isfinite(data_range) and data_range > 0):
            raise ValueError(f"data_range must be positive, got {data_range}")
        self.data_range = float(data_range)
        self.reset()

    def reset(self) -> None:
        self._psnr: list[torch.Tensor] = []  # per video: (F_scored,)
        self._ssim: list[torch.Tensor] = []

    def add(self, pred_videos: ArrayLike | Sequence[ArrayLike],
            target_videos: ArrayLike | Sequence[ArrayLike],
            frame_mask: ArrayLike | Sequence[int] | Sequence[bool] | None = None) -> None:
        """Score a batch of videos: (B, F, H, W, 3) or lists of (F, H, W, 3), pred vs ground truth.

        ``frame_mask`` selects the generated frames: a bool (F,) mask or a list of frame indices shared
        by the batch, or a bool (B, F) array with one mask per video. ``None`` scores every frame (only
        right when no frame was given as a condition).
        """
        preds, targets = _videos(pred_videos, "pred_videos"), _videos(target_videos, "target_videos")
        if len(preds) != len(targets):
            raise ValueError(f"{len(preds)} predicted videos but {len(targets)} targets")
        per_video_masks = None
        if frame_mask is not None and not isinstance(frame_mask, list | tuple):
            arr = _numpy(frame_mask)
            if arr.ndim == 2:
                if arr.dtype != bool or arr.shape[0] != len(preds):
                    raise ValueError(f"a 2-D frame_mask must be bool (B={len(preds)}, F), "
                                     f"got {arr.dtype} {arr.shape}")
                per_video_masks = list(arr)
        ps, ss = [], []
        for i, (p, t) in enumerate(zip(preds, targets, strict=True)):
            pf, tf = _pair(p, t)
            mask = _as_mask(per_video_masks[i] if per_video_masks is not None else frame_mask, pf.shape[0])
            sel = torch.from_numpy(mask)
            ps.append(psnr_per_frame(pf[sel], tf[sel], data_range=self.data_range))
            ss.append(ssim_per_frame(pf[sel], tf[sel], data_range=self.data_range))
        self._psnr.extend(ps)  # only after the whole batch validated
        self._ssim.extend(ss)

    def result(self) -> ReconstructionResult:
        if not self._psnr:
            raise ValueError("no videos added")
        return ReconstructionResult(
            psnr=float(torch.cat(self._psnr).mean()),
            ssim=float(torch.cat(self._ssim).mean()),
            n_videos=len(self._psnr),
            n_frames=int(sum(x.numel() for x in self._psnr)),
            per_video_psnr=[float(x.mean()) for x in self._psnr],
            per_video_ssim=[float(x.mean()) for x in self._ssim],
            tags={"psnr_cap_db": f"{PSNR_CAP_DB:g}", "ssim": "wang2004_gauss11_s1.5_valid_rgb",
                  "averaging": "per_frame_then_mean", "frames": "generated_only"},
        )
