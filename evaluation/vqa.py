"""FAST-VQA-B (Wu et al., ECCV 2022) as a no-reference quality score for generated animated stickers.

"FAST-VQA: Efficient End-to-end Video Quality Assessment with Fragment Sampling" samples *fragments*
(Grid Mini-patch Sampling, Sec. 3.1): the frame is split into a 7x7 grid and one 32x32 patch is cut at a
random position inside every cell (the same position for all frames of a clip), giving a 224x224 mosaic
that keeps native-resolution quality cues. A Video Swin-T with gated relative position bias
(:mod:`evaluation.swin3d`) and an MLP head regress a quality score per output position.

Everything below was read in the official code, github.com/VQAssessment/FAST-VQA-and-FasterVQA (mirror of
teowu/FAST-VQA), and re-written here:

- model (``fastvqa/models/evaluator.py`` ``DiViDeAddEvaluator`` with ``backbone_size: swin_tiny_grpb``,
  ``backbone_preserve_keys: fragments``, ``divide_head: false``; ``fastvqa/models/head.py`` ``VQAHead``):
  ``fragments_backbone`` -> ``vqa_head`` = Dropout(0.5) -> Conv3d(768, 64, 1) ``fc_hid`` -> GELU ->
  Dropout(0.5) -> Conv3d(64, 1, 1) ``fc_last``: a score *map* ``(B, 1, T/2, 7, 7)``. The reported score is
  the mean of that map over every position and every clip (``new_test.py``: ``np.mean`` of the
  ``(num_clips, 1, 16, 7, 7)`` output; ``vqa.py``: ``result.mean()``).
- sampling (``options/fast/fast-b.yml``, every ``val-*`` set): ``fragments_h = fragments_w = 7``,
  ``fsize_h = fsize_w = 32``, ``clip_len: 32``, ``frame_interval: 2``, ``num_clips: 4`` (training uses 1).
- temporal indices (``fastvqa/datasets/fusion_datasets.py``: ``FusionDataset`` builds
  ``FragmentSampleFrames(clip_len, num_clips, frame_interval)``, i.e. ``fsize_t=32, fragments_t=4``): the
  video is cut into ``num_clips`` equal segments of ``F // num_clips`` frames; clip ``k`` starts at segment
  ``k``'s first frame plus a random offset in ``[0, F//num_clips - clip_len*frame_interval)`` when the
  segment is longer than the clip's span (else 0), takes every ``frame_interval``-th frame, and indices wrap
  **modulo F**. So an 8- or 16-frame sticker is looped: with the official interval 2 an *even-length* sticker
  only ever shows its even frames. The single-video demo ``vqa.py`` instead uses
  ``SampleFrames(clip_len=32, num_clips=4)`` with interval 1 and evenly spaced starts, all 0 for videos
  shorter than 32 frames. That official wrapping is kept as ``short_clip="official_wrap"``; it is **not**
  our default for short clips, see below.
- **Short clips (deviation, ``short_clip="all_frames"``, the default).** FAST-VQA's protocol was designed
  for 30-fps natural videos of hundreds of frames, where skipping every other frame loses nothing; the
  paper's stickers are 8 frames (Sec. 4 "Experiment Details": "we fix the frame number to 8"), a different
  regime. There the official sampler scores frames {0, 2, 4, 6} only, which are exactly the frames the
  interpolation task (Table 2 left, mask ``[1 0 1 0 1 0 1 0]``, Table 7) keeps known and pastes back: its
  VQA would score ground truth only and could not differ between models, although Table 2 reports a
  different interpolation VQA per method; prediction would score 1 of its 3 generated frames and
  image&text→sticker (Table 1) 3 of 7. So when ``F < clip_len * frame_interval`` we sample with interval
  1 and loop the clip deterministically: the ``num_clips`` clips are consecutive pieces of one endless loop
  ``0, 1, ..., F-1, 0, 1, ...`` (clip ``k`` starts at ``k * clip_len mod F``), so motion between
  consecutive frames is kept, the sticker's own last->first loop transition appears as it does on screen,
  no frame is skipped, and every frame is seen ``num_clips * clip_len // F`` times or once more — exactly
  equally often whenever ``F`` divides ``num_clips * clip_len`` (every 1-, 2-, 4-, 8- or 16-frame
  selection with the official 4 x 32). Videos with ``F >= clip_len * frame_interval`` keep the official
  sampler unchanged (random offsets, interval ``frame_interval``).
- **Which frames (``frames``).** ``all`` (default) scores the whole output sticker, conditions included,
  as a viewer sees it. ``generated`` builds the clip from the generated frames only, in temporal order
  (the task's known-frame positions are passed by :func:`evaluation.suite.run_vqa`): the known frames are
  pasted back into the output and are ground truth, so under ``all`` they pull every model's score towards
  the test clips' score and dilute the difference between models (4 of 8 frames for interpolation, 5 of 8
  for prediction). ``generated`` is the stricter quality-of-what-the-model-made measurement.
- spatial fragments (``get_spatial_fragments``): cell origins ``min(res // 7 * i, res - 32)``, offset
  ``randint(res // 7 - 32)`` per cell *and per clip* (0 when the cell is not larger than 32), same offset
  for every frame of a clip (official ``aligned: 32`` = one offset set per 32-frame clip; we draw one set
  per clip whatever ``clip_len``). A video whose shorter side (relative to 224) is too small is first
  upsampled bilinearly (``align_corners=False``, values ``/255 -> *255 -> uint8``, i.e. truncated) so that
  ``min(H/224, W/224) = 1``. **Deviation:** the official code computes the grid from the size *before*
  upsampling (so for a 128 px sticker all fragments come from the top-left 128x128 of the 224x224
  upsampled frame, overlapping); we use the upsampled size, which is what the paper describes and what
  makes every fragment come from its own grid cell. Videos the checkpoint was validated on (>= 540p) never
  take this path, so scores of large videos are unaffected.
- normalisation: ImageNet mean/std in the 0..255 scale, RGB: mean (123.675, 116.28, 103.53),
  std (58.395, 57.12, 57.375).
- score rescale (``vqa.py``, ``sigmoid_rescale`` with ``mean_stds["FAST-VQA"] = (-0.110198185,
  0.04178565)``): ``sigmoid((raw - mean) / std)``, documented in the README as a [0, 1] score
  (0.25 bad, 0.5 fair, 0.75 good).

Random generators are explicit (``torch.Generator``), never the global RNGs, so a fixed seed gives the same
fragments — and, with ``weights=None``, the same seeded random model — every run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from evaluation.swin3d import NUM_FEATURES, SwinTransformer3D
from evaluation.weights import WeightsSource, load_strict, weights_tags

log = logging.getLogger(__name__)

FASTVQA_WEIGHTS_NAME = "FAST_VQA_B_1_4.pth"  # github.com/TimothyHTimothy/FAST-VQA/releases/download/v2.0.0/
HEAD_HIDDEN = 64  # fast-b.yml ``vqa_head: hidden_channels: 64`` (in_channels 768)
HEAD_DROPOUT = 0.5  # VQAHead default ``dropout_ratio`` (identity in eval mode)
MEAN_255 = (123.675, 116.28, 103.53)  # FusionDataset / vqa.py input mean, RGB, 0..255
STD_255 = (58.395, 57.12, 57.375)  # FusionDataset / vqa.py input std, RGB, 0..255
SCORE_MEAN = -0.110198185  # vqa.py ``mean_stds["FAST-VQA"][0]``: centre of the sigmoid rescale
SCORE_STD = 0.04178565  # vqa.py ``mean_stds["FAST-VQA"][1]``: scale of the sigmoid rescale
_DEVICE_TYPES = ("cpu", "cuda", "mps")


class ShortClipPolicy(StrEnum):
    """Temporal sampling of a video shorter than one clip's span ``clip_len * frame_interval``."""

    ALL_FRAMES = "all_frames"  # interval 1, one deterministic loop over clips: every frame seen (near-)equally
    OFFICIAL_WRAP = "official_wrap"  # FAST-VQA FragmentSampleFrames: interval frame_interval, wrap modulo F


class VQAFrames(StrEnum):
    """Which frames of a generated sticker VQA scores."""

    ALL = "all"  # the whole output sticker, pasted-back known frames included
    GENERATED = "generated"  # only the frames the model generated (known positions excluded), in order


def _checkpoint_safe_globals() -> list[Any]:
    """numpy scalars/dtypes the weights-only ``torch.load`` must be allowed to rebuild for the official file.

    The official training scripts save ``{"state_dict": ..., "validation_results": best_}`` where ``best_``
    holds scipy correlations (numpy float64 scalars), which the weights-only unpickler rejects by default.
    Rebuilding a numpy scalar / dtype runs no arbitrary code. Files written with numpy 1.x name the scalar
    ``numpy.core.multiarray.scalar``, hence the alias.
    """
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    dtypes = [type(np.dtype(c)) for c in ("f8", "f4", "f2", "i8", "i4", "i2", "i1", "u1", "?")]
    return [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
            np.dtype, *dtypes]


@dataclass
class VQAConfig:
    """FAST-VQA evaluation settings.

    Defaults are the official FAST-VQA-B test protocol (fast-b.yml) for videos at least one clip span long;
    for the paper's 8-frame stickers (Sec. 4) ``short_clip="all_frames"`` replaces the official wrapping,
    which would score frames {0, 2, 4, 6} only (see the module docstring). ``short_clip="official_wrap"``
    with the other defaults is the unmodified official protocol.
    """

    weights: str | None = None  # local FAST_VQA_B_1_4.pth; None = seeded random init (weights=random)
    seed: int = 0  # seeds the fragment/temporal offsets and, for weights=None, the random init
    num_clips: int = 4  # clips per video at test time (fast-b.yml val-*: 4); scores are averaged over them
    clip_len: int = 32  # frames per clip (fast-b.yml: 32); a positive multiple of 8
    frame_interval: int = 2  # step between sampled frames (fast-b.yml: 2; the vqa.py demo uses 1)
    fragments: int = 7  # fragment grid per side (fast-b.yml fragments_h/w: 7) -> 7*32 = 224 px input
    fsize: int = 32  # fragment side in pixels (fast-b.yml fsize_h/w: 32); the GRPB assumes 32
    batch_size: int = 1  # videos per forward pass (each contributes num_clips clips)
    device: str = "cpu"  # torch device: "cpu", "cuda", "cuda:N" or "mps"
    short_clip: str = ShortClipPolicy.ALL_FRAMES.value  # F < clip_len*frame_interval: all_frames | official_wrap
    frames: str = VQAFrames.ALL.value  # frames scored: all | generated (known positions excluded)

    def __post_init__(self) -> None:
        for name, enum in (("short_clip", ShortClipPolicy), ("frames", VQAFrames)):
            try:
                setattr(self, name, enum(getattr(self, name)).value)
            except ValueError:
                raise ValueError(f"{name} must be one of {[e.value for e in enum]}, "
                                 f"got {getattr(self, name)!r}") from None
        if self.weights is not None and not isinstance(self.weights, str | os.PathLike):
            raise ValueError(f"weights must be None (random init) or a path to {FASTVQA_WEIGHTS_NAME}, "
                             f"got {self.weights!r}")
        for name, lo in (("seed", 0), ("num_clips", 1), ("frame_interval", 1), ("fragments", 1),
                         ("batch_size", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not isinstance(self.clip_len, int) or self.clip_len < 8 or self.clip_len % 8:
            raise ValueError(f"clip_len must be a positive multiple of 8 (8, 16, 24, 32 ...; official 32), "
                             f"got {self.clip_len!r}")
        if self.fsize != 32:
            raise ValueError(f"fsize must be 32 (the GRPB's fragment grid follows the 7*H/224 window, which "
                             f"matches the fragment grid only for 32 px fragments), got {self.fsize!r}")
        try:
            dev = torch.device(self.device)
        except (RuntimeError, TypeError) as e:
            raise ValueError(f"device must be one of 'cpu', 'cuda', 'cuda:N', 'mps', "
                             f"got {self.device!r}") from e
        if dev.type not in _DEVICE_TYPES:
            raise ValueError(f"device must be one of 'cpu', 'cuda', 'cuda:N', 'mps', got {self.device!r}")

    @property
    def size(self) -> int:
        """Side of the fragment mosaic in pixels (224 for the official 7 x 32)."""
        return self.fragments * self.fsize


class VQAHead(nn.Module):
    """Per-position MLP regressor on the backbone's feature map (official ``VQAHead``)."""

    def __init__(self, in_channels: int = NUM_FEATURES, hidden_channels: int = HEAD_HIDDEN,
                 dropout: float = HEAD_DROPOUT) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc_hid = nn.Conv3d(in_channels, hidden_channels, (1, 1, 1))
        self.fc_last = nn.Conv3d(hidden_channels, 1, (1, 1, 1))
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 768, D, h, w)`` -> ``(B, 1, D, h, w)`` score map."""
        return self.fc_last(self.dropout(self.gelu(self.fc_hid(self.dropout(x)))))


class FastVQA(nn.Module):
    """FAST-VQA-B: fragment Swin-T backbone + VQA head; names match ``FAST_VQA_B_1_4.pth``."""

    def __init__(self) -> None:
        super().__init__()
        self.fragments_backbone = SwinTransformer3D()
        self.vqa_head = VQAHead()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, 224, 224)`` normalised fragment clips -> ``(B,)`` raw scores (score map mean)."""
        B, C, T, H, W = x.shape
        feats = self.fragments_backbone(x)  # B, 768, T/2, H/32, W/32
        score_map = self.vqa_head(feats)  # B, 1, T/2, H/32, W/32
        return score_map.flatten(1).mean(1)  # B


def load_fastvqa(path: str | Path | None, *, seed: int = 0,
                 device: str | torch.device = "cpu") -> tuple[FastVQA, dict[str, Any]]:
    """FAST-VQA-B in eval mode, frozen: from ``path`` (strictly checked) or, if ``None``, seeded random init.

    The official file wraps its tensors in ``{"state_dict": ..., "validation_results": ...}``;
    :func:`evaluation.weights.read_state_dict` unwraps it (numpy scalars in ``validation_results`` are
    allowed through the weights-only unpickler, see :func:`_checkpoint_safe_globals`). Returns
    ``(model, info)``; ``info`` holds :func:`evaluation.weights.weights_tags` plus ``model`` and, for random
    weights, ``init_seed``. A missing / mismatched file raises :class:`evaluation.weights.WeightsError`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # random-weight scores must be reproducible run to run
        model = FastVQA()
    if path is None:
        source = WeightsSource.RANDOM
        log.warning("FAST-VQA has RANDOM weights (weights=random): quality scores exercise the pipeline only "
                    "and are not comparable to published numbers")
    else:
        source = WeightsSource.FILE
        safe = getattr(torch.serialization, "safe_globals", None)
        with safe(_checkpoint_safe_globals()) if safe is not None else contextlib.nullcontext():
            load_strict(model, path, what="FAST-VQA-B", expected_name=FASTVQA_WEIGHTS_NAME, ignore=())
    model = model.to(device).eval().requires_grad_(False)
    info: dict[str, Any] = {**weights_tags(source, path), "model": "FAST-VQA-B"}
    if source is WeightsSource.RANDOM:
        info["init_seed"] = seed
    return model, info


def normalise_score(raw: float) -> float:
    """Official ``sigmoid_rescale`` for FAST-VQA: ``sigmoid((raw + 0.110198185) / 0.04178565)`` in (0, 1)."""
    x = (float(raw) - SCORE_MEAN) / SCORE_STD
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # no overflow for very negative x
    return e / (1.0 + e)


def temporal_indices(num_frames: int, cfg: VQAConfig, generator: torch.Generator) -> torch.Tensor:
    """``(num_clips, clip_len)`` indices into the ``num_frames`` frames to score.

    Official ``FragmentSampleFrames`` (``FusionDataset``): clip ``k`` starts at ``k * (F // num_clips)``
    plus a random offset (only when the segment is longer than the clip's span ``clip_len *
    frame_interval``), steps by ``frame_interval`` and wraps modulo ``F``, so short stickers loop — and an
    even-length one shows its even frames only. That is what videos with ``F >= span`` and, with
    ``short_clip="official_wrap"``, every video get. With ``short_clip="all_frames"`` (default) a video
    shorter than the span (the paper's 8-frame stickers, Sec. 4) is sampled with interval 1 as one
    deterministic loop cut into consecutive clips: clip ``k`` is ``(k * clip_len + t) mod F``, so every
    frame is seen ``num_clips * clip_len // F`` times or once more (exactly equally when ``F`` divides
    ``num_clips * clip_len``). No random number is drawn for a short video under either policy.
    """
    if num_frames < 1:
        raise ValueError("video has no frames")
    seg = num_frames // cfg.num_clips
    span = cfg.clip_len * cfg.frame_interval
    if num_frames < span and cfg.short_clip == ShortClipPolicy.ALL_FRAMES:
        loop = torch.arange(cfg.num_clips * cfg.clip_len).view(cfg.num_clips, cfg.clip_len)  # n, T
        return loop % num_frames
    starts = torch.arange(cfg.num_clips) * seg
    if seg > span:
        starts = starts + torch.randint(seg - span, (cfg.num_clips,), generator=generator)
    idx = starts[:, None] + torch.arange(cfg.clip_len)[None, :] * cfg.frame_interval  # n, T
    return idx % num_frames


def fragment_origins(res_h: int, res_w: int, cfg: VQAConfig,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners ``(h0, w0)``, each ``(num_clips, fragments, fragments)``, of every fragment.

    Cell ``i`` starts at ``min(res // fragments * i, res - fsize)``; the offset inside it is uniform in
    ``[0, res // fragments - fsize)`` (official ``torch.randint`` bound), drawn per cell and per clip.
    """
    n, g, s = cfg.num_clips, cfg.fragments, cfg.fsize

    def axis(res: int) -> tuple[torch.Tensor, torch.Tensor]:
        grid = torch.tensor([min(res // g * i, res - s) for i in range(g)])  # g
        length = res // g
        rnd = (torch.randint(length - s, (g, g, n), generator=generator) if length > s
               else torch.zeros((g, g, n), dtype=torch.long))  # gh, gw, n (official layout)
        return grid, rnd.permute(2, 0, 1)  # g; n, gh, gw

    (grid_h, rnd_h), (grid_w, rnd_w) = axis(res_h), axis(res_w)
    return grid_h[None, :, None] + rnd_h, grid_w[None, None, :] + rnd_w


def _as_video(video: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(F, H, W, 3)`` array or tensor -> uint8 tensor ``(F, 3, H, W)`` on CPU."""
    t = torch.from_numpy(np.ascontiguousarray(video)) if isinstance(video, np.ndarray) else video
    if not isinstance(t, torch.Tensor) or t.dtype != torch.uint8 or t.ndim != 4 or t.shape[-1] != 3:
        shape = tuple(getattr(t, "shape", ()))
        raise ValueError(f"expected a uint8 video (F, H, W, 3), got {getattr(t, 'dtype', type(t))} {shape}")
    if min(t.shape[:3]) < 1:
        raise ValueError(f"empty video {tuple(t.shape)}")
    return t.detach().cpu().permute(0, 3, 1, 2)  # F, 3, H, W


def _upsample_if_small(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Official ``fallback_type="upsample"``: scale so that the shorter side (relative to ``size``) fits.

    Bilinear, ``align_corners=False``, on ``/255`` values, back to uint8 by truncation as the official
    ``(video * 255.0).type_as(ovideo)``. Output size is rounded and at least ``size`` per side (the official
    ``scale_factor`` form can floor one pixel short).
    """
    F_, C, H, W = frames.shape
    ratio = min(H / size, W / size)
    if ratio >= 1:
        return frames
    out = (max(size, round(H / ratio)), max(size, round(W / ratio)))
    up = F.interpolate(frames.float() / 255.0, size=out, mode="bilinear", align_corners=False)  # F, 3, H', W'
    return (up * 255.0).to(torch.uint8)


def scored_frames(num_frames: int, known_positions: Sequence[int] | None, cfg: VQAConfig) -> list[int]:
    """Positions of the frames VQA scores, in temporal order.

    ``frames="all"`` (or no known positions given, e.g. the test clips): every frame. ``frames="generated"``:
    every frame not in ``known_positions`` — the known frames are pasted back into the output and are
    ground truth (Table 7's condition masks), so they say nothing about the model's quality.
    """
    if num_frames < 1:
        raise ValueError("video has no frames")
    if cfg.frames == VQAFrames.ALL or known_positions is None:
        return list(range(num_frames))
    known = {int(i) for i in known_positions}
    bad = sorted(i for i in known if not 0 <= i < num_frames)
    if bad:
        raise ValueError(f"known positions {bad} outside [0, {num_frames})")
    gen = [i for i in range(num_frames) if i not in known]
    if not gen:
        raise ValueError(f"frames='generated' but every one of the {num_frames} frames is known "
                         f"({sorted(known)}): nothing to score; use frames='all'")
    return gen


def sample_fragments(video: np.ndarray | torch.Tensor, cfg: VQAConfig, generator: torch.Generator,
                     frame_ids: Sequence[int] | None = None) -> torch.Tensor:
    """uint8 ``(F, H, W, 3)`` video -> normalised ``(num_clips, 3, clip_len, size, size)`` fragment clips.

    ``frame_ids`` (e.g. from :func:`scored_frames`): build the clips from these frames only, in the given
    order (``None`` = every frame). Temporal indices from :func:`temporal_indices` over the selected frames,
    upsampling of small videos, then one ``fsize`` crop per grid cell at :func:`fragment_origins` (fixed for
    all frames of a clip), tiled in grid order; finally ``(x - mean) / std`` with the official ImageNet
    constants in the 0..255 scale.
    """
    frames = _as_video(video)  # F, 3, H, W
    if frame_ids is not None:
        ids = [int(i) for i in frame_ids]
        if not ids or not all(0 <= i < frames.shape[0] for i in ids):
            raise ValueError(f"frame_ids must be a non-empty list of positions in [0, {frames.shape[0]}), "
                             f"got {ids}")
        frames = frames[ids]  # F', 3, H, W
    idx = temporal_indices(frames.shape[0], cfg, generator)  # n, T
    frames = _upsample_if_small(frames, cfg.size)  # F, 3, H', W'
    _, _, H, W = frames.shape
    h0, w0 = fragment_origins(H, W, cfg, generator)  # each n, g, g
    n, g, s = cfg.num_clips, cfg.fragments, cfg.fsize
    out = torch.empty((n, cfg.clip_len, 3, cfg.size, cfg.size), dtype=torch.uint8)
    for k in range(n):
        for i in range(g):
            for j in range(g):
                hs, ws = int(h0[k, i, j]), int(w0[k, i, j])
                patch = frames[:, :, hs:hs + s, ws:ws + s]  # F, 3, s, s (a view)
                out[k, :, :, i * s:(i + 1) * s, j * s:(j + 1) * s] = patch[idx[k]]  # T, 3, s, s
    mean = torch.tensor(MEAN_255).view(1, 1, 3, 1, 1)
    std = torch.tensor(STD_255).view(1, 1, 3, 1, 1)
    clips = (out.float() - mean) / std  # n, T, 3, size, size
    return clips.permute(0, 2, 1, 3, 4).contiguous()  # n, 3, T, size, size


@dataclass
class VQAResult:
    """Quality over a set of videos: normalised (official sigmoid rescale, in (0, 1)) and raw outputs."""

    mean_score: float  # mean over videos of the normalised score (0.25 bad, 0.5 fair, 0.75 good)
    mean_raw: float  # mean over videos of the raw score (mean of the head's map over positions and clips)
    per_video: list[float]  # normalised score of every video, in the order added
    n: int  # number of videos
    tags: dict[str, str] = field(default_factory=dict)  # vqa_weights (random|file) + protocol, for MLflow
    per_video_raw: list[float] = field(default_factory=list)  # raw score of every video, in the order added


class VQAEvaluator:
    """Accumulates FAST-VQA scores over batches of videos; fragments come from one seeded generator.

    ``known_positions``: the task's condition frames (Table 7 masks), pasted back into every output; with
    ``cfg.frames="generated"`` they are left out of the clips (:func:`scored_frames`). ``None`` = no known
    frames (text→sticker, the test clips).
    """

    def __init__(self, cfg: VQAConfig, model: FastVQA | None = None, *,
                 known_positions: Sequence[int] | None = None) -> None:
        self.cfg = cfg
        self.known_positions = None if known_positions is None else [int(i) for i in known_positions]
        self.device = torch.device(cfg.device)
        if model is None:
            model, info = load_fastvqa(cfg.weights, seed=cfg.seed, device=self.device)
        else:
            model = model.to(self.device).eval()
            src = WeightsSource.RANDOM if cfg.weights is None else WeightsSource.FILE
            info = {**weights_tags(src, cfg.weights), "model": "FAST-VQA-B"}
        self.model = model
        self.info = info
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self._raw: list[float] = []

    def tags(self) -> dict[str, str]:
        """Weights and sampling protocol as ``vqa_``-prefixed strings (MLflow tags), e.g. ``vqa_weights``."""
        c = self.cfg
        tags = {f"vqa_{k}": str(v) for k, v in self.info.items()}  # vqa_weights, vqa_weights_path, vqa_model
        tags.update({
            "vqa_num_clips": str(c.num_clips), "vqa_clip_len": str(c.clip_len),
            "vqa_frame_interval": str(c.frame_interval), "vqa_fragments": f"{c.fragments}x{c.fsize}",
            "vqa_seed": str(c.seed), "vqa_short_clip": c.short_clip, "vqa_frames": c.frames,
        })
        return tags

    @torch.inference_mode()
    def add(self, videos: torch.Tensor | np.ndarray | Sequence[np.ndarray | torch.Tensor]) -> list[float]:
        """Score uint8 videos, a (B, F, H, W, 3) tensor/array or a list of (F, H, W, 3); returns raw scores"""
        if isinstance(videos, torch.Tensor | np.ndarray) and videos.ndim != 5:
            raise ValueError(f"expected a uint8 batch (B, F, H, W, 3), got shape {tuple(videos.shape)}")
        items = list(videos)
        raws: list[float] = []
        for start in range(0, len(items), self.cfg.batch_size):
            chunk = items[start:start + self.cfg.batch_size]
            clips = torch.cat([sample_fragments(v, self.cfg, self.generator,
                                                scored_frames(len(v), self.known_positions, self.cfg))
                               for v in chunk])  # b*n, 3, T, S, S
            scores = self.model(clips.to(self.device)).float().cpu()  # b*n
            per_video = scores.view(len(chunk), self.cfg.num_clips).mean(1)  # b
            for i, s in enumerate(per_video.tolist()):
                if not math.isfinite(s):
                    raise ValueError(f"FAST-VQA produced a non-finite score ({s}) for video "
                                     f"{len(self._raw) + i} of this evaluator; check the input frames "
                                     f"and the weights")
            raws.extend(per_video.tolist())
            self._raw.extend(per_video.tolist())
        return raws

    def result(self) -> VQAResult:
        """Mean normalised and raw scores over every video added so far."""
        if not self._raw:
            raise ValueError("no videos were added to the VQA evaluator")
        per_video = [normalise_score(r) for r in self._raw]
        return VQAResult(
            mean_score=float(np.mean(per_video)),
            mean_raw=float(np.mean(self._raw)),
            per_video=per_video,
            n=len(self._raw),
            tags=self.tags(),
            per_video_raw=list(self._raw),
        )
