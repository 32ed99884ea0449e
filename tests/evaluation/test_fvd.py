"""FVD: Fréchet distance, streaming statistics, the I3D port (keys, strict loading), preprocessing, evaluator.

I3D at 224 px x 16 frames costs ~1 s per video on 2 CPU cores, so model tests use 2-3 tiny videos per side
and share one random-weight model.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from evaluation.fvd import (
    Covariance,
    FVDConfig,
    FVDEvaluator,
    StreamingStats,
    compute_fvd,
    frechet_distance,
)
from evaluation.i3d import (
    I3D_WEIGHTS_NAME,
    InceptionI3d,
    TemporalUpsample,
    i3d_features,
    load_i3d,
    preprocess_i3d,
)
from evaluation.weights import WeightsError
from tests.helpers import FIXTURES

KEYS_FIXTURE = FIXTURES / "i3d_keys.txt"


@pytest.fixture(scope="module")
def i3d() -> InceptionI3d:
    model, info = load_i3d(None, seed=0)
    assert info["weights"] == "random" and info["init_seed"] == 0
    return model


def _videos(n: int, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, frames, size, size, 3), generator=g, dtype=torch.uint8)


def _gaussian(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    mix = rng.normal(size=(d, d)) / math.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + shift


def _scipy_fd(x: np.ndarray, y: np.ndarray) -> float:
    """The textbook computation (as in StyleGAN-V / cd-fvd): scipy sqrtm of the non-symmetric product."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# ---------------------------------------------------------------- Fréchet distance


def test_frechet_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    x, y = _gaussian(rng, 200, 16), _gaussian(rng, 200, 16, shift=0.3)
    ours = frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert ours == pytest.approx(_scipy_fd(x, y), rel=1e-9)
    assert ours > 0


def test_frechet_self_distance_zero_and_symmetric():
    rng = np.random.default_rng(1)
    x, y = _gaussian(rng, 200, 16), _gaussian(rng, 150, 16, shift=-0.5)
    mx, sx, my, sy = x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False)
    assert frechet_distance(mx, sx, mx, sx) == pytest.approx(0.0, abs=1e-9 * np.trace(sx))
    assert frechet_distance(mx, sx, my, sy) == pytest.approx(frechet_distance(my, sy, mx, sx), rel=1e-10)


def test_frechet_rank_deficient_self_distance_is_zero():
    """N < D (the tiny-sample regime the evaluator warns about): still finite, ~0 against itself."""
    x = _gaussian(np.random.default_rng(2), 3, 400)
    mu, sigma = x.mean(0), np.cov(x, rowvar=False)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-9 * np.trace(sigma))


def test_frechet_closed_forms():
    d = 16
    mu1, mu2 = np.zeros(d), np.linspace(-1, 1, d)
    assert frechet_distance(mu1, np.eye(d), mu2, np.eye(d)) == pytest.approx(float(mu2 @ mu2), rel=1e-12)
    a, b = np.linspace(0.5, 3, d), np.linspace(2, 0.1, d)  # diagonal: sum (sqrt a - sqrt b)^2
    expected = float(((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_frechet_rejects_bad_inputs():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="non-finite"):
        frechet_distance(np.zeros(2), np.eye(2), np.array([0.0, np.nan]), np.eye(2))


# ---------------------------------------------------------------- streaming statistics


def test_streaming_stats_match_numpy_in_uneven_chunks():
    x = _gaussian(np.random.default_rng(3), 200, 24, shift=1e6)  # large offset: naive E[xx]-mm would fail
    stats = StreamingStats()
    start = 0
    for size in (1, 7, 50, 0, 13, 129):
        stats.update(torch.from_numpy(x[start:start + size]) if size % 2 else x[start:start + size])
        start += size
    assert stats.n == 200 and stats.dim == 24
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov(Covariance.UNBIASED), np.cov(x, rowvar=False), rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(stats.cov("biased"), np.cov(x, rowvar=False, ddof=0), rtol=1e-7, atol=1e-9)


def test_streaming_stats_merge_and_from_features():
    x = _gaussian(np.random.default_rng(4), 90, 8)
    merged = StreamingStats.from_features(x[:31]).merge(StreamingStats.from_features(x[31:]))
    merged.merge(StreamingStats())  # merging an empty side is a no-op
    full = StreamingStats.from_features(x)
    assert merged.n == full.n == 90
    np.testing.assert_allclose(merged.mean, full.mean, rtol=1e-12)
    np.testing.assert_allclose(merged.cov(Covariance.UNBIASED), full.cov(Covariance.UNBIASED), rtol=1e-10)


def test_streaming_stats_errors():
    stats = StreamingStats.from_features(np.ones((1, 4)))
    with pytest.raises(ValueError, match="unbiased covariance needs more"):
        stats.cov(Covariance.UNBIASED)
    with pytest.raises(ValueError, match="feature dim 5"):
        stats.update(np.ones((2, 5)))
    with pytest.raises(ValueError, match="NaN"):
        stats.update(np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="not one of 'unbiased', 'biased'"):
        stats.cov("population")
    with pytest.raises(ValueError, match="no features"):
        StreamingStats().mean  # noqa: B018


# ---------------------------------------------------------------- I3D architecture and weights


def test_i3d_state_dict_matches_published_architecture(i3d):
    expected = {}
    for line in KEYS_FIXTURE.read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            expected[key] = shape
    got = {k: str(tuple(v.shape)) for k, v in i3d.state_dict().items()}
    assert len(expected) == 344  # 57 Conv+BN units x 6 tensors + logits weight and bias
    assert sorted(got) == sorted(expected)
    assert got == expected
    assert got["Conv3d_1a_7x7.conv3d.weight"] == "(64, 3, 7, 7, 7)"
    assert got["Mixed_3b.b0.conv3d.weight"] == "(64, 192, 1, 1, 1)"
    assert got["logits.conv3d.weight"] == "(400, 1024, 1, 1, 1)"
    assert got["logits.conv3d.bias"] == "(400,)"


def test_random_init_is_seeded():
    a, _ = load_i3d(None, seed=3)
    b, _ = load_i3d(None, seed=3)
    c, _ = load_i3d(None, seed=4)
    w = "Mixed_4c.b1b.conv3d.weight"
    assert torch.equal(a.state_dict()[w], b.state_dict()[w])
    assert not torch.equal(a.state_dict()[w], c.state_dict()[w])
    assert not a.training and not any(p.requires_grad for p in a.parameters())


def test_weights_file_roundtrip_strict(tmp_path):
    src, _ = load_i3d(None, seed=7)
    path = tmp_path / I3D_WEIGHTS_NAME
    torch.save(src.state_dict(), path)
    loaded, info = load_i3d(path, seed=123)  # the seed must not matter with a file
    assert info["weights"] == "file" and info["weights_path"] == str(path)
    assert info["params"] == sum(p.numel() for p in src.parameters())
    x = preprocess_i3d(_videos(1, frames=16, size=40))
    with torch.inference_mode():
        assert torch.equal(src(x), loaded(x))


def test_weights_file_with_renamed_key_names_it(tmp_path):
    sd = InceptionI3d().state_dict()
    sd["Mixed_3b.b0.conv.weight"] = sd.pop("Mixed_3b.b0.conv3d.weight")
    path = tmp_path / "renamed.pt"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match=r"Mixed_3b\.b0\.conv3d\.weight") as err:
        load_i3d(path)
    assert "Mixed_3b.b0.conv.weight" in str(err.value)  # the unexpected key is named too


def test_missing_weights_file_names_published_file(tmp_path):
    with pytest.raises(WeightsError, match=I3D_WEIGHTS_NAME):
        load_i3d(tmp_path / "nowhere" / "i3d.pt")


def test_i3d_rejects_short_clips(i3d):
    with pytest.raises(ValueError, match="T>=9"):
        i3d(torch.zeros(1, 3, 8, 224, 224))


# ---------------------------------------------------------------- preprocessing


def test_preprocess_repeat_maps_frame_i_to_2i_and_2i_plus_1():
    levels = torch.arange(8, dtype=torch.uint8) * 30 + 5  # frame i is a constant image of value 30 i + 5
    video = levels.view(1, 8, 1, 1, 1).expand(1, 8, 64, 64, 3).contiguous()
    x = preprocess_i3d(video)
    assert x.shape == (1, 3, 16, 224, 224) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    per_frame = x[0, 0, :, 100, 100]  # (16,)
    expected = torch.tensor([float(levels[j // 2]) / 127.5 - 1 for j in range(16)])
    torch.testing.assert_close(per_frame, expected)
    noisy = _videos(2, frames=8, size=64)
    torch.testing.assert_close(preprocess_i3d(noisy),
                               preprocess_i3d(torch.repeat_interleave(noisy, 2, dim=1), upsample="none"))


def test_preprocess_full_range_and_native_resolution():
    video = torch.zeros(1, 16, 224, 224, 3, dtype=torch.uint8)
    video[..., 1] = 255
    x = preprocess_i3d(video)
    assert torch.all(x[:, 0] == -1) and torch.all(x[:, 1] == 1)


def test_preprocess_interpolate_blends_and_keeps_endpoints():
    levels = torch.tensor([0, 70, 140, 210, 250, 10, 20, 30], dtype=torch.uint8)
    video = levels.view(1, 8, 1, 1, 1).expand(1, 8, 16, 16, 3).contiguous()
    x = preprocess_i3d(video, upsample=TemporalUpsample.INTERPOLATE)[0, 0, :, 50, 50]  # (16,)
    vals = (x + 1) * 127.5
    assert vals[0].item() == pytest.approx(0, abs=1e-4) and vals[-1].item() == pytest.approx(30, abs=1e-4)
    pos = 1 * 7 / 15  # second output frame sits between input frames 0 and 1
    assert vals[1].item() == pytest.approx(70 * pos, abs=1e-3)


def test_preprocess_none_needs_nine_frames_and_rejects_bad_input():
    with pytest.raises(ValueError, match=">= 9 frames"):
        preprocess_i3d(_videos(1, frames=8), upsample=TemporalUpsample.NONE)
    assert preprocess_i3d(_videos(1, frames=10), upsample="none").shape == (1, 3, 10, 224, 224)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_i3d(torch.zeros(1, 8, 32, 32, 3))
    with pytest.raises(ValueError, match="uint8"):
        preprocess_i3d(torch.zeros(1, 8, 32, 32, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="'repeat'"):
        preprocess_i3d(_videos(1), upsample="bicubic")


# ---------------------------------------------------------------- evaluator


def test_config_validation():
    cfg = FVDConfig(upsample="interpolate", covariance="unbiased", weights=Path("/w/i3d.pt"))
    assert cfg.upsample is TemporalUpsample.INTERPOLATE and cfg.covariance is Covariance.UNBIASED
    assert cfg.weights == "/w/i3d.pt"
    with pytest.raises(ValueError, match="'repeat', 'interpolate', 'none'"):
        FVDConfig(upsample="cubic")
    with pytest.raises(ValueError, match="'unbiased', 'biased'"):
        FVDConfig(covariance="ddof2")
    with pytest.raises(ValueError, match=">= 9"):
        FVDConfig(num_frames=8)
    with pytest.raises(ValueError, match="batch_size"):
        FVDConfig(batch_size=0)


def test_evaluator_end_to_end_random_weights(i3d, caplog):
    real = [v.numpy() for v in _videos(3, seed=1)]  # list of (F, H, W, 3) uint8 arrays
    real[2] = _videos(1, size=40, seed=9)[0].numpy()  # a different size in the same batch
    fake = _videos(2, seed=2)
    ev = FVDEvaluator(FVDConfig(batch_size=2), model=i3d)
    assert ev.add_real(real) == 3 and ev.add_fake(fake) == 2
    with caplog.at_level("WARNING", logger="evaluation.fvd"):
        res = ev.result()
    assert math.isfinite(res.fvd) and res.fvd > 0
    assert (res.n_real, res.n_fake, res.feature_dim) == (3, 2, 400)
    assert any("fewer samples than features" in w for w in res.warnings)
    assert "fewer samples than features" in caplog.text
    assert res.tags["fvd_weights"] == "random"
    assert (res.tags["fvd_num_frames"], res.tags["fvd_upsample"], res.tags["fvd_covariance"]) == (
        "16", "repeat", "biased")

    same = compute_fvd(fake, fake, FVDConfig(batch_size=3), model=i3d)  # same videos on both sides
    assert same.fvd == pytest.approx(0.0, abs=1e-6 * res.fvd)


def test_nan_features_abort(i3d, monkeypatch):
    monkeypatch.setattr(i3d, "forward", lambda x: torch.full((x.shape[0], 400), float("nan")))
    with pytest.raises(ValueError, match="NaN/inf I3D features .* abort"):
        i3d_features(i3d, _videos(2))


def test_evaluator_needs_two_videos_per_side(i3d):
    ev = FVDEvaluator(FVDConfig(), model=i3d)
    rng = np.random.default_rng(5)
    ev.real.update(rng.normal(size=(1, 400)))
    ev.fake.update(rng.normal(size=(5, 400)))
    with pytest.raises(ValueError, match="at least 2 real videos"):
        ev.result()


def test_evaluator_loads_lazily_and_reports_missing_weights(tmp_path):
    ev = FVDEvaluator(FVDConfig(weights=str(tmp_path / I3D_WEIGHTS_NAME)))
    assert ev._model is None  # nothing loaded until videos arrive
    with pytest.raises(WeightsError, match=I3D_WEIGHTS_NAME):
        ev.add_real(_videos(2))


def test_streaming_stats_save_load_roundtrip(tmp_path):
    x = _gaussian(np.random.default_rng(5), 20, 6)
    stats = StreamingStats.from_features(x)
    stats.save(tmp_path / "s.npz")
    back = StreamingStats.load(tmp_path / "s.npz")
    assert back.n == 20 and back.dim == 6
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.cov(), stats.cov())
    np.savez(tmp_path / "bad.npz", n=np.int64(3), mean=np.zeros(4), m2=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="not FVD statistics"):
        StreamingStats.load(tmp_path / "bad.npz")


@pytest.mark.slow
def test_run_fvd_caches_real_statistics_exactly(tmp_path):
    """The second evaluation on the same test clips loads their I3D stats: same FVD, I3D skipped for them;
    different test clips get a different cache entry."""
    from evaluation.samples import EvalSamples, EvalTask
    from evaluation.suite import run_fvd

    real = _videos(3, seed=1).numpy()
    fake = {EvalTask.I2V: _videos(3, seed=2).numpy()}
    cfg = FVDConfig(batch_size=3)
    first = run_fvd(EvalSamples(tmp_path, {}, real, fake), cfg, cache_dir=tmp_path / "cache")
    second = run_fvd(EvalSamples(tmp_path, {}, real, fake), cfg, cache_dir=tmp_path / "cache")
    assert (first.details["real_stats"], second.details["real_stats"]) == ("computed", "cached")
    assert first.metrics == second.metrics  # exact statistics: bit-identical FVD
    other = run_fvd(EvalSamples(tmp_path, {}, _videos(3, seed=3).numpy(), fake), cfg, cache_dir=tmp_path / "cache")
    assert other.details["real_stats"] == "computed" and len(list((tmp_path / "cache").glob("*.npz"))) == 2
