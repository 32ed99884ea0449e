"""The promotion gate (pure): better promotes, worse/tie/missing/other protocol/random refuse, with the reason."""

from __future__ import annotations

import math

import pytest

from evaluation.promotion import GATE_TASKS, Aggregate, ModelScores, PromotionRule, decide


def scores(version: str, fvd: float, clip: float, *, weights="pretrained", protocol="p1", per_task=None) -> ModelScores:
    m = {}
    for i, t in enumerate(GATE_TASKS):
        m[f"eval/{t}/fvd"] = (per_task or {}).get(t, fvd + i)
        m[f"eval/{t}/clip_matched"] = clip
    return ModelScores(version, m, weights, protocol)


RULE = PromotionRule()


def test_first_candidate_with_every_metric_is_promoted():
    d = decide(scores("1", 100, 0.3), None, RULE)
    assert d.promote and "no champion" in d.reason


def test_better_candidate_promotes_and_reports_the_numbers():
    d = decide(scores("2", 90, 0.31), scores("1", 100, 0.30), RULE)
    assert d.promote and "beats champion v1" in d.reason
    assert d.compared["mean/fvd_candidate"] < d.compared["mean/fvd_champion"]


@pytest.mark.parametrize("cand,reason", [
    (scores("2", 100, 0.30), "not below"),  # a tie never promotes
    (scores("2", 99, 0.30), "not below"),  # 1 % better < the 2 % margin
    (scores("2", 120, 0.40), "not below"),  # worse FVD
    (scores("2", 80, 0.25), "CLIP similarity"),  # better FVD, worse CLIP
    (scores("2", 80, 0.31, protocol="p2"), "protocol differs"),
    (scores("2", 80, 0.31, weights="random"), "weights=random"),
    (scores("1", 80, 0.31), "already the champion"),
])
def test_refusals_name_their_reason(cand, reason):
    d = decide(cand, scores("1", 100, 0.30), RULE)
    assert not d.promote and reason in d.reason, d.reason


def test_missing_or_nan_metrics_refuse_on_either_side():
    cand = scores("2", 50, 0.5)
    del cand.metrics["eval/i2v/fvd"]
    assert "lacks metrics ['eval/i2v/fvd']" in decide(cand, None, RULE).reason
    champ = scores("1", 100, 0.3)
    champ.metrics["eval/t2v/clip_matched"] = math.nan
    d = decide(scores("2", 50, 0.5), champ, RULE)
    assert not d.promote and "champion v1 lacks" in d.reason


def test_random_weights_promote_only_with_the_flag():
    assert not decide(scores("1", 1, 1, weights="random"), None, RULE).promote
    assert decide(scores("1", 1, 1, weights="random"), None, PromotionRule(allow_random=True)).promote


def test_every_task_aggregate_is_stricter_than_the_mean():
    champ = scores("1", 0, 0.3, per_task={"t2v": 100, "i2v": 100, "interpolation": 100, "prediction": 100})
    cand = scores("2", 0, 0.3, per_task={"t2v": 50, "i2v": 50, "interpolation": 50, "prediction": 101})
    assert decide(cand, champ, RULE).promote
    d = decide(cand, champ, PromotionRule(aggregate=Aggregate.EVERY))
    assert not d.promote and d.reason.startswith("prediction FVD")


def test_rule_validation_names_allowed_values():
    with pytest.raises(ValueError, match="allowed"):
        PromotionRule(tasks=("t2v", "nope"))
    with pytest.raises(ValueError, match="fvd_margin"):
        PromotionRule(fvd_margin=1.5)
    with pytest.raises(ValueError):
        PromotionRule(aggregate="median")
