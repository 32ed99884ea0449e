"""Difficulty-adaptive curriculum (model.curriculum): Eq. 2 schedule, Eq. 3-4 PID, modes, state round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model.curriculum import Curriculum, CurriculumConfig, CurriculumMode
from model.masks import Difficulty, Task, difficulty_levels

TASKS = (Task.INTERPOLATION, Task.PREDICTION, Task.GENERATION)


def expected_rank(cur: Curriculum, step: int) -> float:
    return float(cur.level_probs(step) @ cur.ranks)


@pytest.mark.parametrize("mode", list(CurriculumMode))
def test_static_schedule_monotone_and_normalised(mode):
    cur = Curriculum(CurriculumConfig(mode=mode, total_steps=1000))
    steps = range(0, 1201, 7)
    P = np.array([[cur.static_task_probs(s)[t] for t in TASKS] for s in steps])
    assert np.allclose(P.sum(1), 1.0)
    assert np.all(np.diff(P[:, 0]) <= 1e-12) and np.all(np.diff(P[:, 1:], axis=0) >= -1e-12)  # Eq. 2
    for s in steps:
        lp = cur.level_probs(s)
        assert lp.shape == (len(cur.levels),) and np.all(lp >= 0) and math.isclose(lp.sum(), 1.0)
    if mode is not CurriculumMode.NONE:
        assert np.allclose(P[0], (0.6, 0.3, 0.1)) and np.allclose(P[-1], (0.2, 0.4, 0.4))
        assert np.allclose([cur.static_task_probs(500)[t] for t in TASKS], (0.34, 0.33, 0.33))
        assert np.allclose([cur.static_task_probs(250)[t] for t in TASKS], (0.47, 0.315, 0.215))


@pytest.mark.parametrize("field, value", [
    ("start", (0.5, 0.3, 0.1)),  # does not sum to 1
    ("mid", (0.7, 0.2, 0.1)),  # IPT increases after start
    ("end", (0.3, 0.3, 0.4)),  # PDT decreases after mid
    ("start", (1.2, -0.1, -0.1)),
    ("mid_at", 1.0), ("ema", 1.0), ("alpha", 1.5), ("sigma", 0.0), ("window", 0), ("total_steps", 0),
    ("kp", -1.0), ("integral_limit", 0.0), ("k_max", 2), ("mode", "cosine"),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"CurriculumConfig.{field}"):
        CurriculumConfig(**{field: value})


def test_config_coerces_lists_and_strings():
    cfg = CurriculumConfig(mode="linear", start=[0.6, 0.3, 0.1])  # e.g. from JSON
    assert cfg.mode is CurriculumMode.LINEAR and cfg.start == (0.6, 0.3, 0.1)


def test_pid_matches_hand_computation():
    cfg = CurriculumConfig(ema=0.5, window=3, integral_limit=0.3)
    cur = Curriculum(cfg)
    losses = [1.0, 2.0, 1.0, 0.5, 0.5, 3.0, 0.2]
    smoothed, hist, integral, prev = None, [], 0.0, None
    for loss in losses:
        smoothed = loss if smoothed is None else 0.5 * smoothed + 0.5 * loss
        past = hist[-3:]
        ls = (smoothed - sum(past) / len(past)) / (sum(past) / len(past)) if past else 0.0
        integral = min(max(integral + ls, -0.3), 0.3)
        p_star = 5.0 * ls + 3.0 * integral + 1.3 * (0.0 if prev is None else ls - prev)
        prev = ls
        hist.append(smoothed)
        cur.update(loss)
        assert cur.p_star == pytest.approx(p_star, rel=1e-12, abs=1e-12)
        assert cur.loss_s == pytest.approx(ls) and cur.integral == pytest.approx(integral)
    # d* = clip(d_ref - beta P*, 0, 1); adaptive probabilities are a Gaussian around it
    d_ref, d_star = cur._targets(100)
    assert d_star == pytest.approx(min(max(d_ref - 0.25 * p_star, 0.0), 1.0))
    g = np.exp(-((cur.ranks - d_star) ** 2) / (2 * 0.15**2))
    assert np.allclose(cur.adaptive_probs(100), g / g.sum())
    static = Curriculum(CurriculumConfig(mode=CurriculumMode.LINEAR)).level_probs(100)
    assert np.allclose(cur.level_probs(100), 0.5 * static + 0.5 * g / g.sum())
    cur.update(float("nan"))  # ignored
    assert cur.n_skipped == 1 and cur.n_updates == len(losses) and cur.p_star == pytest.approx(p_star)


def test_adaptive_direction():
    cur = Curriculum(CurriculumConfig())
    for _ in range(50):
        cur.update(1.0)
    before = expected_rank(cur, 1000)
    cur.update(3.0)  # loss spike -> easier samples
    assert cur.p_star > 0 and expected_rank(cur, 1000) < before - 0.02
    cur2 = Curriculum(CurriculumConfig())
    for _ in range(50):
        cur2.update(1.0)
    cur2.update(0.3)  # loss drop -> harder samples
    assert cur2.p_star < 0 and expected_rank(cur2, 1000) > before + 0.02


def test_mode_none_constant_uniform_and_linear_ignores_losses():
    none = Curriculum(CurriculumConfig(mode=CurriculumMode.NONE))
    lin = Curriculum(CurriculumConfig(mode=CurriculumMode.LINEAR))
    ref_lin = [lin.level_probs(s) for s in (0, 10_000, 60_000)]
    p0 = none.level_probs(0)
    for cur in (none, lin):
        for loss in (1.0, 5.0, 0.1, 0.1, 9.0):
            cur.update(loss)
    for s in (0, 10_000, 25_000, 60_000):
        assert np.array_equal(none.level_probs(s), p0)
        st = none.stats(s)
        assert all(st[f"p_{t.value}"] == pytest.approx(1 / 3) for t in TASKS)
    for lv, p in zip(none.levels, p0):  # uniform within task
        assert p == pytest.approx(1 / 3 / sum(x.task is lv.task for x in none.levels))
    for s, ref in zip((0, 10_000, 60_000), ref_lin):
        assert np.array_equal(lin.level_probs(s), ref)


def test_state_round_trip_and_sampling_determinism():
    cfg = CurriculumConfig(window=5)
    rng = np.random.default_rng(0)
    a = Curriculum(cfg)
    for loss in rng.gamma(4.0, 0.05, size=40):
        a.update(float(loss))
    state = json.loads(json.dumps(a.state_dict()))  # must survive JSON
    b = Curriculum(cfg)
    b.load_state_dict(state)
    assert np.array_equal(a.level_probs(1234), b.level_probs(1234))
    for loss in (0.2, 0.5, 0.1):
        a.update(loss)
        b.update(loss)
        assert a.state_dict() == b.state_dict()
        assert np.array_equal(a.level_probs(2000), b.level_probs(2000)) and a.stats(2000) == b.stats(2000)
    draws = [a.sample(2000, np.random.default_rng(7), 64) for _ in range(2)]
    assert draws[0] == draws[1] and all(isinstance(d, Difficulty) for d in draws[0])
    assert set(draws[0]) <= set(difficulty_levels(8)) and a.sample(0, rng, 0) == []
    with pytest.raises(ValueError, match="version"):
        b.load_state_dict({**state, "version": 99})


def test_stats_keys():
    st = Curriculum(CurriculumConfig()).stats(0)
    assert {"p_interpolation", "p_prediction", "p_generation", "p_star", "d_star", "d_ref", "loss_smoothed"} <= set(st)
    assert all(isinstance(v, float) for v in st.values())
    assert sum(st[f"p_{t.value}"] for t in TASKS) == pytest.approx(1.0)
