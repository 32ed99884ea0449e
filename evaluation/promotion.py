"""The promotion gate: does a registered candidate replace the current ``champion``? (pure, no MLflow here)

The paper ranks models by FVD (lower is better) with CLIP similarity as the text-faithfulness check (Tables 1–4).
The gate turns that into a rule a weekly retrain can apply unattended:

1. A candidate whose pretrained parts are random-init presets (``weights=random``) is never promoted unless
   ``allow_random`` — its numbers check the machinery, not the model.
2. Every gated metric (``eval/<task>/fvd`` and ``eval/<task>/clip_matched`` for each task in ``tasks``) must be
   present and finite on the candidate; with no champion yet, such a candidate is promoted.
3. The champion must have the same metrics, computed under the same evaluation protocol (the ``protocol``
   fingerprint: metric-network weights, FVD/CLIP options, sampling steps/seed/count — see
   ``training.registry.protocol_fingerprint``). Otherwise the numbers are not comparable: no promotion.
4. ``FVD_cand <= FVD_champ * (1 - fvd_margin)`` and strictly lower (a tie never promotes), and
   ``CLIP_cand >= CLIP_champ - clip_tolerance``. ``aggregate`` chooses where this holds: ``mean`` over the tasks
   (default) or ``every`` task.

The decision carries its reason in one line, recorded in Dagster metadata and as MLflow tags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum

GATE_TASKS = ("t2v", "i2v", "interpolation", "prediction")


class Aggregate(StrEnum):
    MEAN = "mean"  # the rule holds for the mean over the gated tasks
    EVERY = "every"  # the rule holds for each gated task


@dataclass(frozen=True)
class PromotionRule:
    fvd_margin: float = 0.02  # relative FVD improvement required (0.02 = at least 2 % lower than the champion)
    clip_tolerance: float = 0.0  # how much lower CLIP similarity (matched cosine) may be and still pass
    tasks: tuple[str, ...] = GATE_TASKS  # evaluation tasks whose metrics are gated
    aggregate: Aggregate = Aggregate.MEAN  # mean over tasks, or every task
    allow_random: bool = False  # promote weights=random candidates (demos/tests only)

    def __post_init__(self) -> None:
        if not 0.0 <= self.fvd_margin < 1.0:
            raise ValueError(f"fvd_margin must be in [0, 1), got {self.fvd_margin}")
        if self.clip_tolerance < 0:
            raise ValueError(f"clip_tolerance must be >= 0, got {self.clip_tolerance}")
        if not self.tasks:
            raise ValueError(f"tasks must name at least one of {GATE_TASKS}")
        bad = [t for t in self.tasks if t not in GATE_TASKS]
        if bad:
            raise ValueError(f"unknown gate tasks {bad}; allowed: {list(GATE_TASKS)}")
        Aggregate(self.aggregate)


@dataclass(frozen=True)
class ModelScores:
    version: str  # registry version
    metrics: dict[str, float]  # eval/<task>/<metric> -> value
    weights: str  # random | pretrained
    protocol: str  # evaluation-protocol fingerprint


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str
    compared: dict[str, float] = field(default_factory=dict)  # the aggregated numbers the rule looked at


def _values(scores: ModelScores, metric: str, tasks: tuple[str, ...]) -> list[float] | None:
    out = []
    for t in tasks:
        v = scores.metrics.get(f"eval/{t}/{metric}")
        if v is None or not math.isfinite(float(v)):
            return None
        out.append(float(v))
    return out


def _missing(scores: ModelScores, tasks: tuple[str, ...]) -> list[str]:
    return [f"eval/{t}/{m}" for t in tasks for m in ("fvd", "clip_matched")
            if scores.metrics.get(f"eval/{t}/{m}") is None or not math.isfinite(float(scores.metrics[f"eval/{t}/{m}"]))]


def decide(candidate: ModelScores, champion: ModelScores | None, rule: PromotionRule) -> Decision:
    """Apply the module's rule; ``champion=None`` when no version holds the alias yet."""
    if candidate.weights != "pretrained" and not rule.allow_random:
        return Decision(False, f"candidate v{candidate.version} has weights={candidate.weights}: never promoted "
                               "without allow_random")
    missing = _missing(candidate, rule.tasks)
    if missing:
        return Decision(False, f"candidate v{candidate.version} lacks metrics {missing}")
    if champion is None:
        return Decision(True, f"no champion yet: v{candidate.version} has every gated metric")
    if champion.version == candidate.version:
        return Decision(False, f"v{candidate.version} is already the champion")
    missing = _missing(champion, rule.tasks)
    if missing:
        return Decision(False, f"champion v{champion.version} lacks metrics {missing}: not comparable")
    if candidate.protocol != champion.protocol:
        return Decision(False, f"evaluation protocol differs (candidate {candidate.protocol}, champion "
                               f"{champion.protocol}): numbers are not comparable")
    c_fvd, h_fvd = _values(candidate, "fvd", rule.tasks), _values(champion, "fvd", rule.tasks)
    c_clip, h_clip = _values(candidate, "clip_matched", rule.tasks), _values(champion, "clip_matched", rule.tasks)
    if Aggregate(rule.aggregate) is Aggregate.MEAN:
        pairs = [("mean", sum(c_fvd) / len(c_fvd), sum(h_fvd) / len(h_fvd), sum(c_clip) / len(c_clip),
                  sum(h_clip) / len(h_clip))]
    else:
        pairs = list(zip(rule.tasks, c_fvd, h_fvd, c_clip, h_clip))
    compared = {}
    for name, cf, hf, cc, hc in pairs:
        compared |= {f"{name}/fvd_candidate": cf, f"{name}/fvd_champion": hf, f"{name}/clip_candidate": cc,
                     f"{name}/clip_champion": hc}
        if not (cf < hf and cf <= hf * (1 - rule.fvd_margin)):
            return Decision(False, f"{name} FVD {cf:.4g} is not below champion v{champion.version}'s {hf:.4g} by "
                                   f"{rule.fvd_margin:.0%}", compared)
        if cc < hc - rule.clip_tolerance:
            return Decision(False, f"{name} CLIP similarity {cc:.4g} is below champion v{champion.version}'s {hc:.4g} "
                                   f"(tolerance {rule.clip_tolerance})", compared)
    return Decision(True, f"beats champion v{champion.version}: FVD lower by >= {rule.fvd_margin:.0%} and CLIP "
                          f"similarity not worse ({rule.aggregate})", compared)
