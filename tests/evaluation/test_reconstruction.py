"""PSNR / SSIM on generated frames: hand formulas, an independent SSIM reference, frame masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from evaluation.reconstruction import (
    PSNR_CAP_DB,
    ReconstructionEvaluator,
    generated_frame_mask,
    psnr,
    psnr_per_frame,
    ssim,
    ssim_per_frame,
)


def _rand(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def _noisy(x: np.ndarray, sigma: float, seed=1) -> np.ndarray:
    n = np.random.default_rng(seed).normal(0, sigma, size=x.shape)
    return np.clip(x.astype(np.float64) + n, 0, 255).round().astype(np.uint8)


def test_psnr_constant_offset_matches_formula():
    target = np.full((2, 16, 16, 3), 100, dtype=np.uint8)
    pred = target + np.uint8(10)  # MSE = 100 everywhere
    expected = 10 * math.log10(255**2 / 100)
    assert psnr(pred, target) == pytest.approx(expected, abs=1e-12)
    assert psnr(torch.from_numpy(pred), torch.from_numpy(target)) == pytest.approx(expected, abs=1e-12)
    # float frames in [0, 1] with data_range=1 give the same number
    assert psnr(pred / 255.0, target / 255.0, data_range=1.0) == pytest.approx(expected, abs=1e-9)


def test_psnr_is_mean_of_per_frame_values_and_identical_frames_are_capped():
    target = np.full((2, 8, 8, 3), 50, dtype=np.uint8)
    pred = target.copy()
    pred[0] += 10
    pred[1] += 20
    per = psnr_per_frame(pred, target)
    want = [10 * math.log10(255**2 / 100), 10 * math.log10(255**2 / 400)]
    assert per.tolist() == pytest.approx(want, abs=1e-12)
    assert psnr(pred, target) == pytest.approx(sum(want) / 2, abs=1e-12)  # not the PSNR of the pooled MSE
    assert psnr(target, target) == PSNR_CAP_DB
    mixed = np.stack([target[0], pred[1]])
    assert psnr_per_frame(mixed, target).tolist() == pytest.approx([PSNR_CAP_DB, want[1]])


def _ssim_scipy(x: np.ndarray, y: np.ndarray, L: float = 255.0) -> float:
    """Wang et al. 2004 with scipy's Gaussian filter (radius 5 -> 11 taps), 'valid' crop, RGB mean."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    for ch in range(x.shape[-1]):
        a, b = x[..., ch], y[..., ch]

        def f(z):
            return gaussian_filter(z, sigma=1.5, truncate=5 / 1.5, mode="reflect")[5:-5, 5:-5]

        mx, my = f(a), f(b)
        sxx, syy, sxy = f(a * a) - mx**2, f(b * b) - my**2, f(a * b) - mx * my
        vals.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
    return float(np.mean(vals))


def _ssim_loop(x: np.ndarray, y: np.ndarray, L: float = 255.0) -> float:
    """Direct double loop over valid 11x11 windows with explicit Gaussian weights, no library filtering."""
    g = np.exp(-((np.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    x, y = x.astype(np.float64), y.astype(np.float64)
    vals = []
    for ch in range(3):
        for i in range(x.shape[0] - 10):
            for j in range(x.shape[1] - 10):
                a, b = x[i:i + 11, j:j + 11, ch], y[i:i + 11, j:j + 11, ch]
                mx, my = (w * a).sum(), (w * b).sum()
                sxx, syy = (w * (a - mx) ** 2).sum(), (w * (b - my) ** 2).sum()
                sxy = (w * (a - mx) * (b - my)).sum()
                vals.append(((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2)))
    return float(np.mean(vals))


def test_ssim_identical_is_one():
    x = _rand((3, 20, 24, 3))
    assert ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert ssim_per_frame(x, x).tolist() == pytest.approx([1.0] * 3, abs=1e-12)


def test_ssim_matches_scipy_and_direct_loop_references():
    target = _rand((2, 32, 40, 3), seed=2)
    pred = _noisy(target, 25.0)
    per = ssim_per_frame(pred, target)
    for f in range(2):
        assert per[f].item() == pytest.approx(_ssim_scipy(pred[f], target[f]), abs=1e-4)
    want = np.mean([_ssim_scipy(pred[f], target[f]) for f in range(2)])
    assert ssim(pred, target) == pytest.approx(want, abs=1e-4)

    small_t = _rand((13, 15, 3), seed=4)  # a single (H, W, 3) frame is accepted
    small_p = _noisy(small_t, 40.0, seed=5)
    assert ssim(small_p, small_t) == pytest.approx(_ssim_loop(small_p, small_t), abs=1e-4)
    # float frames in [0, 1] with data_range=1 are the same computation
    unit = ssim(small_p / 255.0, small_t / 255.0, data_range=1.0)
    assert unit == pytest.approx(ssim(small_p, small_t), abs=1e-9)


def test_ssim_decreases_with_noise():
    target = np.repeat(np.repeat(_rand((1, 8, 8, 3), seed=6), 4, axis=1), 4, axis=2)  # some structure
    scores = [ssim(_noisy(target, s, seed=7), target) for s in (2.0, 10.0, 30.0, 80.0)]
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), scores
    assert scores[0] < 1.0


def test_input_validation():
    x = _rand((2, 16, 16, 3))
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(x, x[:1])
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(x[:, :10], x[:, :10])
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        psnr(x[..., :2], x[..., :2])


def test_evaluator_scores_only_generated_frames():
    rng = np.random.default_rng(8)
    target = rng.integers(0, 256, size=(2, 4, 16, 16, 3), dtype=np.uint8)
    pred = target.copy()
    gen = [1, 2]  # e.g. interpolation with known frames 0 and 3, pasted back by the sampler
    pred[:, gen] = _noisy(target[:, gen], 20.0)

    ev = ReconstructionEvaluator()
    ev.add(pred, target, frame_mask=gen)
    r = ev.result()
    want_psnr = np.mean([psnr_per_frame(pred[b, gen], target[b, gen]).numpy() for b in range(2)])
    want_ssim = np.mean([ssim_per_frame(pred[b, gen], target[b, gen]).numpy() for b in range(2)])
    assert (r.n_videos, r.n_frames) == (2, 4)
    assert r.psnr == pytest.approx(want_psnr, abs=1e-12) and r.ssim == pytest.approx(want_ssim, abs=1e-12)
    assert r.psnr < PSNR_CAP_DB - 50  # the pasted (perfect) frames did not leak in
    assert len(r.per_video_psnr) == 2 and r.tags["frames"] == "generated_only"

    # the same mask as bool (F,), torch bool, per-video (B, F), and via generated_frame_mask
    bool_mask = generated_frame_mask(4, [0, 3])
    assert bool_mask.tolist() == [False, True, True, False]
    masks = (bool_mask, torch.from_numpy(bool_mask), np.stack([bool_mask] * 2), [False, True, True, False])
    for mask in masks:
        ev2 = ReconstructionEvaluator()
        ev2.add(list(pred), list(target), frame_mask=mask)
        assert ev2.result().psnr == pytest.approx(r.psnr, abs=1e-12)

    # without a mask every frame counts and the perfect frames inflate the score
    ev3 = ReconstructionEvaluator()
    ev3.add(pred, target)
    assert ev3.result().n_frames == 8 and ev3.result().psnr > r.psnr + 20


def test_evaluator_accumulates_and_validates():
    target = _rand((3, 2, 12, 12, 3), seed=9)
    pred = _noisy(target, 15.0, seed=10)
    ev = ReconstructionEvaluator()
    ev.add(pred[:1], target[:1], frame_mask=[1])
    ev.add(pred[1:], target[1:], frame_mask=[1])
    whole = ReconstructionEvaluator()
    whole.add(pred, target, frame_mask=np.array([False, True]))
    assert ev.result().psnr == pytest.approx(whole.result().psnr, abs=1e-12)
    assert ev.result().n_frames == 3

    bad = ReconstructionEvaluator()
    with pytest.raises(ValueError, match="selects no frame"):
        bad.add(pred, target, frame_mask=[False, False])
    with pytest.raises(ValueError, match="outside"):
        bad.add(pred, target, frame_mask=[2])
    with pytest.raises(ValueError, match="shape"):
        bad.add(pred, target, frame_mask=[True, False, True])
    with pytest.raises(ValueError, match="targets"):
        bad.add(pred, target[:2])
    with pytest.raises(ValueError, match="no videos"):
        bad.result()
