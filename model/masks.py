"""Dual masks of RDTF (arXiv 2503.17735): condition mask (task switching) and loss mask (first k frames).

Paper, "Dual-mask based Data Utilization Strategy": a *condition mask* switches between interpolation
(IPT), pre & post prediction (PDT) and text-/image-based generation (GRT) by masking image and text
guidance; a *loss mask* computes the loss "based only on the first k frames" (k = number of k-means
clusters of the sticker, 3..8 per Table 6; shorter stickers give k = n_frames). Appendix Table 7 lists
the condition masks at k = 8; Algorithm 1 draws a difficulty level (task, masked frame length N) per
sample from the curriculum (``training.curriculum``) and applies the dual mask ``m_dual``.

Documented choices:
* Difficulty order. The paper only states the partial order H(IPT,N) <= H(PDT,N) <= H(GRT,N) and
  H(*,N-1) <= H(*,N). ``difficulty_levels`` returns the linear extension sorted by (n_masked, task index
  IPT < PDT < GRT): the amount of missing information is primary, the task breaks ties. Both inequalities
  hold along the list. ``Difficulty`` compares in exactly that order (``<`` means "easier").
* Levels at k_max frames: IPT n_masked 1..k_max-2 (>= 2 known frames), PDT 1..k_max-1 (>= 1 known frame,
  leading or trailing), GRT k_max-1 (one known frame at any position) and k_max (no visual condition).
* Shorter stickers (k < k_max valid frames): IPT/PDT clamp n_masked into what the task allows for k.
  GRT keeps its *meaning*: the level is text-only iff n_masked >= k_max (default k_max = num_frames, the
  padded length the levels were built for), otherwise one known frame (n_masked = k - 1). Tasks that k
  cannot host fall back: IPT needs k >= 3 (else PDT), PDT needs k >= 2 (else text-only GRT). The returned
  mask records the task actually used.
* Table 7 families at k = 8: IPT known frames are strided, every s-th frame from phase p < s, with
  s in {floor(k/c), ceil(k/c)} for c = k - n_masked known frames ([0 1 0 1 0 1 0 1] "interp-alt-1",
  [1 0 1 0 1 0 1 0] "interp-alt-0", [1 0 0 1 0 0 1 0] "interp-every3-0"); when no stride yields exactly c
  frames the n_masked *masked* frames are evenly spaced with a random phase ("interp-even"). PDT: leading
  known frames, predict the future ("pred-pre", [1 1 1 1 1 0 0 0]) or trailing known frames, predict the
  past ("pred-post", [0 0 1 1 1 1 1 1]), 50/50. GRT: one known frame uniformly anywhere ("gen-image@i")
  or none ("gen-text"). ``pattern`` names the visual layout only; the caption flag is ``text``.
* Image-only generation (Table 7's generation rows without text guidance): its own family
  "gen-image-only@i" — one known frame and no caption. Table 7 lists four one-frame generation masks, two
  with and two without text guidance; we read that as equal shares, so a one-frame GRT draw is image-only
  with probability ``p_image_only`` (``TrainConfig.p_image_only``, default 0.5). It stays a GRT difficulty
  level (same masked-frame count): the paper's curriculum has three tasks (Eq. 2-4), and classifier-free
  text dropout alone (10%) is a guidance device, not the task. Sampling exposes it as ``generate_image``.
* Classifier-free guidance (Table 6 uses text and image guidance scales 7.5): ``apply_cfg_dropout`` drops
  the caption, the visual conditions, or both, from one uniform draw; the pattern gets "+drop-...".
* Loss mask (:class:`LossMask`): the default ``first_k`` is the paper's reading — the loss is computed
  "based only on the first k frames", conditioned ones included, as the mean over exactly those frames
  (``masked_mse`` divides by the number of weighted elements). ``targets`` (the generated frames only) is
  kept as a named alternative; see ``loss_weight`` for the trade-off.

torch is imported lazily so that ``training.curriculum`` (pure numpy) can import the level definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["ConditionMask", "Difficulty", "LossMask", "Task", "apply_cfg_dropout", "batch_masks", "difficulty_levels",
           "first_frame_condition", "loss_weight", "masked_mse", "sample_condition"]


class Task(StrEnum):
    INTERPOLATION = "interpolation"  # IPT: known frames interleaved with generated ones
    PREDICTION = "prediction"  # PDT: leading (pre) or trailing (post) known frames
    GENERATION = "generation"  # GRT: one known frame or text only

    @property
    def index(self) -> int:
        """Difficulty order of the task: IPT 0 < PDT 1 < GRT 2 (paper: H(IPT,N) <= H(PDT,N) <= H(GRT,N))."""
        return _TASK_ORDER.index(self)


_TASK_ORDER = (Task.INTERPOLATION, Task.PREDICTION, Task.GENERATION)


class SamplingTask(StrEnum):
    """What to generate at inference (``RDTFPipeline(task=...)``, ``rdtf generate --task``, the gallery, and
    ``evaluation.samples.EvalTask`` through :attr:`EvalTask.sampling_task`); each belongs to one training family."""

    GENERATE = "generate"  # text, and optionally one image at frame 0 -> sticker (GRT)
    GENERATE_IMAGE = "generate_image"  # one image, no text (GRT; Table 7's text-free generation rows)
    INTERPOLATE = "interpolate"  # known frames spread over the clip, the gaps generated (IPT)
    PREDICT_FORWARD = "predict_forward"  # known leading frames, the rest predicted (PDT)
    PREDICT_BACKWARD = "predict_backward"  # known trailing frames, the beginning predicted (PDT)

    @property
    def family(self) -> Task:
        return {SamplingTask.INTERPOLATE: Task.INTERPOLATION, SamplingTask.PREDICT_FORWARD: Task.PREDICTION,
                SamplingTask.PREDICT_BACKWARD: Task.PREDICTION}.get(self, Task.GENERATION)

    @property
    def uses_text(self) -> bool:
        """Whether the caption conditions the task (all but image-only generation)."""
        return self is not SamplingTask.GENERATE_IMAGE

    @classmethod
    def parse(cls, name: str) -> SamplingTask:
        """``SamplingTask(name)`` with an error that names the allowed values."""
        try:
            return cls(name)
        except ValueError:
            raise ValueError(f"unknown task {name!r}; allowed: {tuple(t.value for t in cls)}") from None


class LossMask(StrEnum):
    """Which frames the denoising loss supervises (Method, "Dual-mask based Data Utilization Strategy")."""

    FIRST_K = "first_k"  # paper (default): every valid frame, conditioned ones included; padding excluded
    TARGETS = "targets"  # the generated frames only (the conditioned ones are in the input)


@dataclass(frozen=True, order=True)
class Difficulty:
    order_key: tuple[int, int] = field(init=False, repr=False)  # (n_masked, task index): `<` means easier
    task: Task  # condition task family
    n_masked: int  # frames to GENERATE among the k valid ones; the other valid frames are visual conditions

    def __post_init__(self) -> None:
        object.__setattr__(self, "task", Task(self.task))
        if isinstance(self.n_masked, bool) or not isinstance(self.n_masked, int | np.integer) or self.n_masked < 1:
            raise ValueError(f"Difficulty.n_masked must be an int >= 1, got {self.n_masked!r}")
        object.__setattr__(self, "n_masked", int(self.n_masked))
        object.__setattr__(self, "order_key", (self.n_masked, self.task.index))


def difficulty_levels(k_max: int = 8) -> list[Difficulty]:
    """All levels for stickers of up to k_max frames, easiest first (sorted by (n_masked, task index))."""
    if k_max < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max}")
    levels = [Difficulty(Task.INTERPOLATION, n) for n in range(1, k_max - 1)]
    levels += [Difficulty(Task.PREDICTION, n) for n in range(1, k_max)]
    levels += [Difficulty(Task.GENERATION, n) for n in sorted({k_max - 1, k_max}) if n >= 1]
    return sorted(levels)


@dataclass
class ConditionMask:
    cond: np.ndarray  # (F,) bool: frame given as visual condition (clean latent concatenated to the input)
    target: np.ndarray  # (F,) bool: frame to generate (valid and not cond)
    valid: np.ndarray  # (F,) bool: real frame (the first k); the rest is padding
    text: bool  # caption used as condition
    task: Task  # task actually used (after clamping / fallback for short stickers)
    pattern: str  # visual layout name, e.g. "interp-alt-0", "pred-post", "gen-image@3", "gen-text"

    def __post_init__(self) -> None:
        self.cond, self.target, self.valid = (np.asarray(a, dtype=bool).copy() for a in (self.cond, self.target, self.valid))
        if not (self.cond.ndim == 1 and self.cond.shape == self.target.shape == self.valid.shape):
            raise ValueError(f"cond/target/valid must be 1-D of equal length, got {self.cond.shape}, "
                             f"{self.target.shape}, {self.valid.shape}")
        if np.any(self.cond & ~self.valid):
            raise ValueError("a condition frame lies on padding (cond must be a subset of valid)")
        if not np.array_equal(self.target, self.valid & ~self.cond):
            raise ValueError("target must equal valid & ~cond")
        if not self.target.any():
            raise ValueError("a condition mask needs at least one target frame")
        self.text = bool(self.text)
        self.task = Task(self.task)

    @property
    def k(self) -> int:
        """Number of valid frames."""
        return int(self.valid.sum())

    @property
    def n_masked(self) -> int:
        """Number of frames to generate."""
        return int(self.target.sum())


def _interpolation_cond(k: int, m: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
    """Known-frame positions for interpolation of m frames among k (c = k - m >= 2 known)."""
    c = k - m
    strides = sorted({s for s in (k // c, -(-k // c)) if s >= 2})
    options = [(s, p) for s in strides for p in range(s) if len(range(p, k, s)) == c]
    if options:
        s, p = options[int(rng.integers(len(options)))]
        cond = np.zeros(k, dtype=bool)
        cond[p::s] = True
        return cond, (f"interp-alt-{p}" if s == 2 else f"interp-every{s}-{p}")
    spacing = k / m  # >= 1: the m masked frames are distinct and fall inside [0, k)
    phase = rng.random() * spacing
    masked = np.floor(phase + spacing * np.arange(m)).astype(int)
    cond = np.ones(k, dtype=bool)
    cond[masked] = False
    return cond, "interp-even"


def sample_condition(k: int, num_frames: int, level: Difficulty, rng: np.random.Generator, *, text: bool = True,
                     k_max: int | None = None, p_image_only: float = 0.0) -> ConditionMask:
    """Condition mask for a sticker with k valid frames padded to num_frames, at the given level.

    k_max: frame count the levels were built for (``difficulty_levels(k_max)``); defaults to num_frames.
    Only GRT uses it: a GRT level is text-only iff n_masked >= k_max (see module docstring).
    p_image_only: probability that a one-frame GRT draw drops the caption ("gen-image-only@i"); 0 draws no
    extra random number, so the mask stream is the same as before the family existed.
    """
    if not (isinstance(p_image_only, int | float) and 0.0 <= p_image_only <= 1.0):
        raise ValueError(f"p_image_only must be a probability in [0, 1], got {p_image_only!r}")
    if not (isinstance(k, int | np.integer) and 1 <= k <= num_frames):
        raise ValueError(f"need 1 <= k <= num_frames, got k={k!r}, num_frames={num_frames!r}")
    if not isinstance(level, Difficulty):
        raise TypeError(f"level must be a Difficulty, got {type(level).__name__}")
    k, k_max = int(k), int(num_frames if k_max is None else k_max)
    task, n = level.task, level.n_masked
    if task is Task.INTERPOLATION and k < 3:
        task = Task.PREDICTION
    if task is Task.PREDICTION and k < 2:
        task, n = Task.GENERATION, k_max  # nothing to predict from: text-only
    if task is Task.INTERPOLATION:
        m = min(max(n, 1), k - 2)
        cond_k, pattern = _interpolation_cond(k, m, rng)
    elif task is Task.PREDICTION:
        m = min(max(n, 1), k - 1)
        cond_k = np.zeros(k, dtype=bool)
        if rng.random() < 0.5:
            cond_k[: k - m], pattern = True, "pred-pre"  # leading frames known: predict the future
        else:
            cond_k[m:], pattern = True, "pred-post"  # trailing frames known: predict the past
    else:
        text_only = k == 1 or n >= k_max
        cond_k = np.zeros(k, dtype=bool)
        if text_only:
            pattern = "gen-text"
        else:
            pos = int(rng.integers(k))
            cond_k[pos], pattern = True, f"gen-image@{pos}"
            if p_image_only > 0 and rng.random() < p_image_only:  # Table 7: generation without text guidance
                text, pattern = False, f"gen-image-only@{pos}"
    valid = np.zeros(num_frames, dtype=bool)
    valid[:k] = True
    cond = np.zeros(num_frames, dtype=bool)
    cond[:k] = cond_k
    return ConditionMask(cond=cond, target=valid & ~cond, valid=valid, text=text, task=task, pattern=pattern)


def first_frame_condition(k: int, num_frames: int, *, text: bool = True) -> ConditionMask:
    """The fixed I&T->V condition of a DFGN trained WITHOUT the dual mask (Table 3 rows "DFGN(3D-Conv)", "DFGN").

    Table 7's generation mask ``[1 0 0 0 0 0 0 0]``: frame 0 (and the caption) given, the other valid frames
    generated; the task is always GRT, no curriculum draw is involved. k == 1 leaves no frame to generate
    from a known one, so it falls back to text-only ("gen-text"). Used by ``TrainConfig.dual_mask=False``.
    """
    if not (isinstance(k, int | np.integer) and 1 <= k <= num_frames):
        raise ValueError(f"need 1 <= k <= num_frames, got k={k!r}, num_frames={num_frames!r}")
    valid = np.zeros(num_frames, dtype=bool)
    valid[: int(k)] = True
    cond = np.zeros(num_frames, dtype=bool)
    cond[0] = k > 1
    return ConditionMask(cond=cond, target=valid & ~cond, valid=valid, text=text, task=Task.GENERATION,
                         pattern="gen-image@0" if k > 1 else "gen-text")


def apply_cfg_dropout(mask: ConditionMask, rng: np.random.Generator, p_drop_text: float, p_drop_image: float,
                      p_drop_both: float) -> ConditionMask:
    """Classifier-free-guidance dropout for dual (text + image) guidance; returns a new mask.

    One uniform u is always drawn: u < p_text drops the caption; next p_image drops every visual
    condition (all valid frames become targets); next p_both drops both. The task is kept (it records what
    the curriculum drew); the pattern gets "+drop-text" / "+drop-image" / "+drop-both".
    """
    probs = {"p_drop_text": p_drop_text, "p_drop_image": p_drop_image, "p_drop_both": p_drop_both}
    for name, p in probs.items():
        if not (isinstance(p, int | float) and math.isfinite(p) and 0.0 <= p <= 1.0):
            raise ValueError(f"{name} must be a probability in [0, 1], got {p!r}")
    if sum(probs.values()) > 1.0 + 1e-12:
        raise ValueError(f"p_drop_text + p_drop_image + p_drop_both must be <= 1, got {sum(probs.values())}")
    u = rng.random()
    if u < p_drop_text:
        drop_text, drop_image, tag = True, False, "text"
    elif u < p_drop_text + p_drop_image:
        drop_text, drop_image, tag = False, True, "image"
    elif u < p_drop_text + p_drop_image + p_drop_both:
        drop_text, drop_image, tag = True, True, "both"
    else:
        return replace(mask)
    cond = np.zeros_like(mask.cond) if drop_image else mask.cond
    return replace(mask, cond=cond, target=mask.valid & ~cond, text=mask.text and not drop_text,
                   pattern=f"{mask.pattern}+drop-{tag}")


def batch_masks(masks: list[ConditionMask]) -> dict[str, torch.Tensor]:
    """Stack masks: {"cond", "target", "valid"}: (B, F) bool, {"text"}: (B,) bool."""
    import torch

    if not masks:
        raise ValueError("batch_masks needs at least one mask")
    if len({m.valid.shape for m in masks}) != 1:
        raise ValueError(f"masks have different frame counts: {sorted({m.valid.shape[0] for m in masks})}")
    out = {key: torch.from_numpy(np.stack([getattr(m, key) for m in masks])) for key in ("cond", "target", "valid")}
    out["text"] = torch.tensor([m.text for m in masks], dtype=torch.bool)
    return out


def masked_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Mean squared error over weighted frames, normalised by sum(weight) * C * H * W (float32).

    pred/target: (B, F, C, H, W); weight: (B, F) in {0, 1}. Padding/conditioned frames with weight 0 neither
    add error nor count in the denominator (the authors' code divided by B*F*C*H*W, so the loss scale
    depended on k). No weighted frame -> 0 that still carries a graph to ``pred``. No host sync.
    """
    if pred.shape != target.shape or pred.ndim != 5 or weight.shape != pred.shape[:2]:
        raise ValueError(f"need pred/target (B, F, C, H, W) and weight (B, F); got {tuple(pred.shape)}, "
                         f"{tuple(target.shape)}, {tuple(weight.shape)}")
    import torch

    w = weight.to(torch.float32)
    err = (pred.float() - target.float()).square().sum(dim=(2, 3, 4))  # (B, F)
    per_frame = math.prod(pred.shape[2:])
    denom = w.sum() * per_frame
    return (err * w).sum() / denom.where(denom > 0, denom.new_ones(()))


def loss_weight(mask_batch: dict, profile: LossMask | str = LossMask.FIRST_K) -> torch.Tensor:
    """(B, F) float loss mask of a profile (:class:`LossMask`): the first k (valid) frames, or the targets only.

    Paper: "we design a loss mask and attempt to calculate the loss based only on the first k frames". The
    default ``first_k`` takes that literally: every real frame, conditioned ones included, padding never.
    ``targets`` is the alternative: for a conditioned frame the clean latent x0 is in the input, so its noise
    is recoverable in closed form from (x_t, x0, t); supervising it adds an easy identity task, and the loss
    level then depends on how many frames are conditioned (IPT conditions more than GRT), which the
    loss-driven curriculum (Eq. 3-4) reads as "easier". Both honour the paper's sentence (targets are a subset
    of the first k frames); the choice is ``TrainConfig.loss_mask``.
    """
    try:
        profile = LossMask(profile)
    except ValueError:
        raise ValueError(f"unknown loss mask {profile!r}; allowed: {[m.value for m in LossMask]}") from None
    return (mask_batch["valid"] if profile is LossMask.FIRST_K else mask_batch["target"]).float()
