"""Dual masks (model.masks): Table 7 families, invariants for every k and level, CFG dropout, loss mask."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from model.masks import (
    ConditionMask,
    Difficulty,
    LossMask,
    Task,
    apply_cfg_dropout,
    batch_masks,
    difficulty_levels,
    loss_weight,
    masked_mse,
    sample_condition,
)

F = 8


def bits(s: str) -> tuple[int, ...]:
    return tuple(int(c) for c in s.split())


def draw_patterns(level: Difficulty, k: int = 8, n: int = 400, seed: int = 0) -> dict[tuple[int, ...], set[str]]:
    rng = np.random.default_rng(seed)
    seen: dict[tuple[int, ...], set[str]] = {}
    for _ in range(n):
        m = sample_condition(k, F, level, rng)
        seen.setdefault(tuple(m.cond.astype(int).tolist()), set()).add(m.pattern)
    return seen


def test_levels_order_consistent_with_paper_inequalities():
    levels = difficulty_levels(8)
    assert levels == sorted(levels) and len(levels) == len(set(levels)) == 6 + 7 + 2
    pos = {lv: i for i, lv in enumerate(levels)}
    tasks = [Task.INTERPOLATION, Task.PREDICTION, Task.GENERATION]
    for lv in levels:  # H(*, N-1) <= H(*, N) and H(IPT, N) <= H(PDT, N) <= H(GRT, N)
        prev = Difficulty(lv.task, lv.n_masked - 1) if lv.n_masked > 1 else None
        if prev in pos:
            assert pos[prev] < pos[lv]
        for easier in tasks[: tasks.index(lv.task)]:
            if Difficulty(easier, lv.n_masked) in pos:
                assert pos[Difficulty(easier, lv.n_masked)] < pos[lv]
    assert {lv.n_masked for lv in levels if lv.task is Task.INTERPOLATION} == set(range(1, 7))
    assert {lv.n_masked for lv in levels if lv.task is Task.PREDICTION} == set(range(1, 8))
    assert {lv.n_masked for lv in levels if lv.task is Task.GENERATION} == {7, 8}
    assert levels[0] < levels[-1] and Difficulty(Task.INTERPOLATION, 3) < Difficulty(Task.PREDICTION, 3)
    with pytest.raises(ValueError, match="n_masked"):
        Difficulty(Task.PREDICTION, 0)


def test_table7_families_at_k8():
    ipt4 = draw_patterns(Difficulty(Task.INTERPOLATION, 4))
    assert bits("0 1 0 1 0 1 0 1") in ipt4 and bits("1 0 1 0 1 0 1 0") in ipt4
    assert ipt4[bits("1 0 1 0 1 0 1 0")] == {"interp-alt-0"} and ipt4[bits("0 1 0 1 0 1 0 1")] == {"interp-alt-1"}
    ipt5 = draw_patterns(Difficulty(Task.INTERPOLATION, 5))
    assert ipt5[bits("1 0 0 1 0 0 1 0")] == {"interp-every3-0"}
    assert set(ipt5) == {bits("1 0 0 1 0 0 1 0"), bits("0 1 0 0 1 0 0 1")}
    pre = draw_patterns(Difficulty(Task.PREDICTION, 3))
    assert pre[bits("1 1 1 1 1 0 0 0")] == {"pred-pre"}
    post = draw_patterns(Difficulty(Task.PREDICTION, 2))
    assert post[bits("0 0 1 1 1 1 1 1")] == {"pred-post"}
    gen = draw_patterns(Difficulty(Task.GENERATION, 7))
    assert gen[bits("1 0 0 0 0 0 0 0")] == {"gen-image@0"} and gen[bits("0 0 1 0 0 0 0 0")] == {"gen-image@2"}
    assert len(gen) == 8  # the known frame can be anywhere
    assert draw_patterns(Difficulty(Task.GENERATION, 8), n=20) == {bits("0 " * 8): {"gen-text"}}
    rng = np.random.default_rng(1)  # image-based generation with and without text guidance
    assert {sample_condition(8, F, Difficulty(Task.GENERATION, 7), rng, text=t).text for t in (True, False)} == {True, False}


def test_image_only_generation_is_its_own_family():
    """Table 7's text-free generation rows: one known frame, no caption, pattern gen-image-only@i."""
    lvl = Difficulty(Task.GENERATION, 7)
    rng = np.random.default_rng(0)
    only = [sample_condition(8, F, lvl, rng, p_image_only=1.0) for _ in range(40)]
    assert all(not m.text and m.task is Task.GENERATION and m.pattern == f"gen-image-only@{int(np.argmax(m.cond))}"
               and m.cond.sum() == 1 for m in only)
    assert len({m.pattern for m in only}) > 4  # the known frame can be anywhere
    half = [sample_condition(8, F, lvl, rng, p_image_only=0.5) for _ in range(2000)]
    share = np.mean([not m.text for m in half])
    assert abs(share - 0.5) < 0.04  # binomial sd ~0.011
    text_only = sample_condition(8, F, Difficulty(Task.GENERATION, 8), rng, p_image_only=1.0)
    assert text_only.pattern == "gen-text" and text_only.text  # no visual condition: text stays
    ipt = sample_condition(8, F, Difficulty(Task.INTERPOLATION, 4), rng, p_image_only=1.0)
    assert ipt.text  # other tasks are unaffected
    # p_image_only = 0 draws nothing extra: the mask stream is the one from before the family existed
    a, b = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(50):
        assert sample_condition(8, F, lvl, a).pattern == sample_condition(8, F, lvl, b, p_image_only=0.0).pattern
    for bad in (-0.1, 1.5, float("nan"), "0.5"):
        with pytest.raises(ValueError, match="p_image_only"):
            sample_condition(8, F, lvl, rng, p_image_only=bad)


def test_other_interpolation_lengths_evenly_spaced_with_random_phase():
    one = draw_patterns(Difficulty(Task.INTERPOLATION, 1))
    assert len(one) == 8 and all(sum(c) == 7 for c in one)  # the masked frame anywhere
    two_known = draw_patterns(Difficulty(Task.INTERPOLATION, 6))
    assert set(two_known) == {tuple(int(i in (p, p + 4)) for i in range(8)) for p in range(4)}
    for n in (2, 3):
        for cond in draw_patterns(Difficulty(Task.INTERPOLATION, n)):
            gaps = np.diff(np.flatnonzero(np.array(cond) == 0))
            assert len(gaps) == n - 1 and (len(gaps) == 0 or gaps.max() - gaps.min() <= 1)


@pytest.mark.parametrize("k", range(1, 9))
def test_invariants_every_k_and_level(k):
    rng = np.random.default_rng(k)
    for level, text, _ in itertools.product(difficulty_levels(8), (True, False), range(12)):
        m = sample_condition(k, F, level, rng, text=text)
        assert m.cond.dtype == m.target.dtype == m.valid.dtype == np.bool_ and m.cond.shape == (F,)
        assert m.valid.tolist() == [True] * k + [False] * (F - k)
        assert not np.any(m.cond & ~m.valid)  # never condition on padding
        assert np.array_equal(m.target, m.valid & ~m.cond) and m.target.sum() >= 1
        assert m.text is text and isinstance(m.task, Task)
        prefix = {Task.INTERPOLATION: "interp-", Task.PREDICTION: "pred-", Task.GENERATION: "gen-"}[m.task]
        assert m.pattern.startswith(prefix)
        if m.task is Task.INTERPOLATION:
            assert k >= 3 and m.cond.sum() >= 2
        if m.task is Task.PREDICTION:
            known = np.flatnonzero(m.cond)
            assert k >= 2 and len(known) >= 1 and np.all(np.diff(known) == 1)
            assert known[0] == 0 if m.pattern == "pred-pre" else known[-1] == k - 1
        if m.task is Task.GENERATION:
            assert m.cond.sum() == (0 if m.pattern == "gen-text" else 1)
        # n_masked respected when feasible, otherwise clamped into the task's range for this k
        if level.task is Task.INTERPOLATION and k >= 3:
            assert m.task is Task.INTERPOLATION and m.n_masked == min(level.n_masked, k - 2)
        if level.task is Task.PREDICTION and k >= 2:
            assert m.task is Task.PREDICTION and m.n_masked == min(level.n_masked, k - 1)
        if level.task is Task.GENERATION:  # meaning kept: one known frame vs text only
            assert m.n_masked == (k if level.n_masked == 8 or k == 1 else k - 1)
    with pytest.raises(ValueError):
        sample_condition(0, F, difficulty_levels()[0], rng)
    with pytest.raises(ValueError):
        sample_condition(9, F, difficulty_levels()[0], rng)


def test_short_sticker_fallbacks():
    rng = np.random.default_rng(0)
    m = sample_condition(2, F, Difficulty(Task.INTERPOLATION, 3), rng)
    assert m.task is Task.PREDICTION and m.n_masked == 1
    m = sample_condition(1, F, Difficulty(Task.PREDICTION, 1), rng)
    assert m.task is Task.GENERATION and m.pattern == "gen-text" and m.target.tolist() == [True] + [False] * 7
    m = sample_condition(5, F, Difficulty(Task.GENERATION, 7), rng)  # one-image level stays one-image
    assert m.cond.sum() == 1 and m.n_masked == 4


def test_condition_mask_validates():
    v = np.array([1, 1, 0], bool)
    with pytest.raises(ValueError, match="padding"):
        ConditionMask(np.array([0, 0, 1], bool), np.array([1, 1, 0], bool), v, True, Task.PREDICTION, "x")
    with pytest.raises(ValueError, match="target"):
        ConditionMask(np.array([1, 0, 0], bool), np.array([0, 1, 1], bool), v, True, Task.PREDICTION, "x")
    with pytest.raises(ValueError, match="at least one target"):
        ConditionMask(np.array([1, 1, 0], bool), np.array([0, 0, 0], bool), v, True, Task.PREDICTION, "x")


def test_cfg_dropout_rates_and_effects():
    rng = np.random.default_rng(0)
    base = sample_condition(8, F, Difficulty(Task.INTERPOLATION, 4), rng)
    counts = {"text": 0, "image": 0, "both": 0, "none": 0}
    n = 20_000
    for _ in range(n):
        m = apply_cfg_dropout(base, rng, 0.1, 0.05, 0.15)
        tag = m.pattern.split("+drop-")[1] if "+drop-" in m.pattern else "none"
        counts[tag] += 1
        assert m.task is base.task and np.array_equal(m.valid, base.valid)
        assert m.text == (tag in ("none", "image"))
        if tag in ("image", "both"):
            assert not m.cond.any() and np.array_equal(m.target, m.valid)
        else:
            assert np.array_equal(m.cond, base.cond)
    for tag, p in {"text": 0.1, "image": 0.05, "both": 0.15, "none": 0.7}.items():
        assert abs(counts[tag] / n - p) < 4 * np.sqrt(p * (1 - p) / n)
    assert base.cond.sum() == 4 and base.text  # input untouched
    for bad in [(0.5, 0.4, 0.2), (-0.1, 0, 0), (0, float("nan"), 0)]:
        with pytest.raises(ValueError):
            apply_cfg_dropout(base, rng, *bad)


def test_batch_masks_and_loss_weight():
    rng = np.random.default_rng(0)
    masks = [sample_condition(k, F, Difficulty(Task.PREDICTION, 3), rng, text=k % 2 == 0) for k in (8, 5, 3)]
    mb = batch_masks(masks)
    assert {k: (v.dtype, tuple(v.shape)) for k, v in mb.items()} == {
        "cond": (torch.bool, (3, F)), "target": (torch.bool, (3, F)), "valid": (torch.bool, (3, F)),
        "text": (torch.bool, (3,))}
    assert mb["text"].tolist() == [True, False, False]
    w = loss_weight(mb)  # the paper's default: every one of the first k frames, conditioned ones included
    assert w.dtype == torch.float32 and torch.equal(w, mb["valid"].float()) and w.sum(1).tolist() == [8.0, 5.0, 3.0]
    assert torch.equal(loss_weight(mb, LossMask.FIRST_K), w) and torch.equal(loss_weight(mb, "first_k"), w)
    wt = loss_weight(mb, "targets")
    assert torch.equal(wt, mb["target"].float()) and wt.sum(1).tolist() == [3.0, 3.0, 2.0]
    with pytest.raises(ValueError, match="allowed: \\['first_k', 'targets'\\]"):
        loss_weight(mb, "conditioned")


def test_masked_mse_hand_computation_and_normalisation():
    g = torch.Generator().manual_seed(0)
    B, C, H, W = 2, 3, 4, 5
    pred = torch.randn(B, F, C, H, W, generator=g, requires_grad=True)
    target = torch.randn(B, F, C, H, W, generator=g)
    weight = torch.zeros(B, F)
    weight[0, :3] = 1
    weight[1, 5] = 1
    loss = masked_mse(pred, target, weight)
    d = (pred.detach() - target) ** 2
    hand = (d[0, :3].sum() + d[1, 5].sum()) / (4 * C * H * W)
    assert torch.allclose(loss, hand)
    loss.backward()
    assert pred.grad is not None and pred.grad[0, 3:].abs().sum() == 0
    # twice as many padding frames (weight 0, arbitrary content) leave the loss unchanged
    pad_p = torch.cat([pred.detach(), 7 + torch.randn(B, F, C, H, W, generator=g)], 1)
    pad_t = torch.cat([target, torch.randn(B, F, C, H, W, generator=g)], 1)
    assert torch.allclose(masked_mse(pad_p, pad_t, torch.cat([weight, torch.zeros(B, F)], 1)), hand)
    # bf16 inputs are accumulated in float32
    assert masked_mse(pred.detach().bfloat16(), target.bfloat16(), weight).dtype == torch.float32
    # nothing weighted: exactly 0, still differentiable
    p2 = torch.randn(B, F, C, H, W, requires_grad=True)
    zero = masked_mse(p2, target, torch.zeros(B, F))
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert torch.count_nonzero(p2.grad) == 0
    with pytest.raises(ValueError):
        masked_mse(pred, target, weight[:, :4])
