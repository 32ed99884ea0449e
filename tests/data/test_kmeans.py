"""Batched per-sticker k-means (data.kmeans) against scikit-learn, on fixed random inputs and blobs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.cluster import KMeans

from data import kmeans as km
from data.kmeans import (
    KMeansConfig,
    RepresentativeRule,
    cluster_stickers,
    cluster_stickers_sklearn,
    kmeans_batched,
)

KS = range(3, 9)  # paper Table 6


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def random_problems(B: int, N: int, D: int, seed: int) -> np.ndarray:
    return unit(np.random.default_rng(seed).standard_normal((B, N, D)))  # (B, N, D)


def blobs(B: int, N: int, D: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """k well-separated blobs per problem, every blob non-empty, members in random temporal order."""
    rng = np.random.default_rng(seed)
    truth = np.stack([rng.permutation(np.arange(N) % k) for _ in range(B)])  # (B, N)
    centres = 4.0 * rng.standard_normal((B, k, D))  # (B, k, D)
    X = np.take_along_axis(centres, truth[..., None], 1) + 0.05 * rng.standard_normal((B, N, D))
    return X.astype(np.float32), truth


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to relabeling: the label pairs form a bijection."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def sk_inertia(X: np.ndarray, k: int, seed: int, **kw) -> float:
    return float(KMeans(n_clusters=k, n_init=3, random_state=seed, **kw).fit(X).inertia_)


def check_sticker(res: km.StickerClusters, n: int, ks=KS) -> None:
    """Labels are a partition numbered by first appearance; reps sorted, one per cluster."""
    assert res.n_frames == n
    for k in ks:
        labels, reps = res.labels[k], res.reps[k]
        assert labels.dtype == np.int16 and reps.dtype == np.int16 and labels.shape == (n,)
        values, first = np.unique(labels, return_index=True)
        assert values.tolist() == list(range(len(values))) and len(values) <= k
        assert np.all(np.diff(first) > 0)  # cluster c first appears before cluster c + 1
        assert np.all(np.diff(reps) > 0)  # sorted, distinct
        assert sorted(labels[reps].tolist()) == values.tolist()  # one rep in each cluster


# ------------------------------------------------------------------------------------ kmeans_batched
@pytest.mark.parametrize("k", KS)
def test_inertia_vs_sklearn_on_blobs(k):
    X, truth = blobs(6, 24, 32, k, seed=k)
    labels, centres, inertia = kmeans_batched(X, k, n_init=3, seed=0)
    assert labels.dtype == np.int32 and centres.shape == (6, k, 32) and centres.dtype == np.float32
    for b in range(len(X)):
        fit = KMeans(n_clusters=k, n_init=3, random_state=b).fit(X[b])
        assert inertia[b] <= fit.inertia_ * 1.01 + 1e-6
        assert same_partition(labels[b], fit.labels_) and same_partition(labels[b], truth[b])


def test_inertia_vs_sklearn_on_random_inputs():
    """Unstructured inputs have many local optima: restarts land in different ones for both sides, so
    a per-problem bound holds for most problems, and on average the batched one (Lloyd + Hartigan)
    is better. The exact per-problem comparison is the same-init test below."""
    ratios = []
    for k in KS:
        for N, D in [(10, 32), (24, 64)]:
            X = random_problems(4, N, D, seed=100 * k + N)
            _, _, inertia = kmeans_batched(X, k, n_init=3, seed=k)
            ratios += [inertia[b] / sk_inertia(X[b], k, b) for b in range(len(X))]
    ratios = np.array(ratios)
    assert (ratios <= 1.01).mean() >= 0.9
    assert ratios.mean() <= 1.0 and ratios.max() <= 1.15


@pytest.mark.parametrize("k", KS)
def test_never_worse_than_sklearn_from_the_same_init(k, monkeypatch):
    """Per problem and exact: from the k-means++ centres our init picks, sklearn's Lloyd ends no lower."""
    seen = []
    init = km._init_pp
    monkeypatch.setattr(km, "_init_pp", lambda *a: seen.append(init(*a)) or seen[-1])
    X = random_problems(8, 16, 32, seed=k)
    _, _, inertia = kmeans_batched(X, k, n_init=1, seed=k)
    centres, active = seen[0]
    assert active.all()
    for b in range(len(X)):
        fit = KMeans(n_clusters=k, init=X[b, centres[b]], n_init=1, max_iter=50, tol=1e-6).fit(X[b])
        assert inertia[b] <= fit.inertia_ * (1 + 1e-5) + 1e-6


def test_inertia_is_consistent_and_seed_accepts_generator():
    X = random_problems(5, 12, 16, seed=3)
    labels, centres, inertia = kmeans_batched(X, 4, seed=np.random.default_rng(7))
    assert labels.shape == (5, 12) and labels.min() >= 0 and labels.max() < 4
    direct = ((X - np.take_along_axis(centres, labels[..., None].astype(np.intp), 1)) ** 2).sum((1, 2))
    np.testing.assert_allclose(inertia, direct, rtol=1e-5, atol=1e-6)
    again = kmeans_batched(X, 4, seed=np.random.default_rng(7))
    assert all(np.array_equal(a, b) for a, b in zip((labels, centres, inertia), again))


def test_fewer_distinct_points_than_k_no_nan():
    X = np.repeat(random_problems(3, 3, 16, seed=4), [2, 3, 1], axis=1)  # 6 frames, 3 distinct
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labels, centres, inertia = kmeans_batched(X, 5)
    assert np.isfinite(centres).all() and np.allclose(inertia, 0, atol=1e-6)
    assert all(len(np.unique(lab)) == 3 for lab in labels)


def test_more_clusters_than_points():
    X = random_problems(2, 4, 8, seed=6)
    labels, centres, inertia = kmeans_batched(X, 6)
    assert np.isfinite(centres).all() and np.allclose(inertia, 0, atol=1e-6)
    assert all(sorted(np.unique(lab)) == sorted(lab) for lab in labels)  # every point alone


def test_padding_does_not_change_the_result():
    """Stickers share batches by padded size: padded frames must be invisible."""
    x = random_problems(1, 17, 16, seed=5)[0].astype(np.float64)
    U = np.random.default_rng(0).random((1, 2, 8, 4))
    runs = []
    for N in (17, 20):
        G = np.zeros((1, N, N))
        G[0, :17, :17] = x @ x.T
        valid = np.arange(N)[None] < 17
        runs.append(km._best_of_restarts(G, valid, np.array([6]), U, 16, 1e-6, 50))
    assert np.array_equal(runs[0][0], runs[1][0][:, :17])
    np.testing.assert_allclose(runs[0][2], runs[1][2], rtol=1e-12)


# ---------------------------------------------------------------------------------- cluster_stickers
def test_blob_stickers_match_sklearn_reference():
    for k in KS:
        embs = list(blobs(3, 2 * k + 3, 32, k, seed=k)[0])
        for rule in RepresentativeRule:
            cfg = KMeansConfig(k_min=k, k_max=k, rule=rule)
            ours, ref = cluster_stickers(embs, cfg), cluster_stickers_sklearn(embs, cfg)
            for a, b in zip(ours, ref):  # both number clusters by first appearance: equal arrays
                assert np.array_equal(a.labels[k], b.labels[k]) and np.array_equal(a.reps[k], b.reps[k])


def test_small_stickers_keep_every_frame():
    embs = [random_problems(1, n, 16, seed=n)[0] for n in (1, 2, 3, 5, 8)]
    res = cluster_stickers(embs)
    for x, r in zip(embs, res):
        n = len(x)
        for k in KS:
            if n <= k:
                assert np.array_equal(r.labels[k], np.arange(n)) and np.array_equal(r.reps[k], np.arange(n))
            else:
                assert len(r.reps[k]) == k
        check_sticker(r, n)
    assert cluster_stickers([]) == []


def test_long_and_odd_sized_stickers_are_valid_partitions():
    embs = [random_problems(1, n, 32, seed=n)[0] for n in (4, 9, 17, 33, 130)]
    for x, r in zip(embs, cluster_stickers(embs)):
        check_sticker(r, len(x))


@pytest.mark.parametrize("rule", list(RepresentativeRule))
def test_duplicate_frames(rule):
    """Held frames: 4 distinct frames over 11 -> at most 4 clusters, reps = first frame of each hold."""
    distinct = random_problems(1, 4, 32, seed=9)[0]
    holds = [0, 0, 0, 1, 2, 2, 1, 1, 3, 3, 0]
    still = np.repeat(distinct[:1], 10, axis=0)  # a sticker that never moves (n > every k)
    cfg = KMeansConfig(rule=rule)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may escape, sklearn's ConvergenceWarning included
        ours = cluster_stickers([distinct[holds], still], cfg)
        ref = cluster_stickers_sklearn([distinct[holds], still], cfg)
    for res in (ours, ref):
        check_sticker(res[0], len(holds))
        for k in KS:
            if k >= 4:
                assert res[0].labels[k].tolist() == holds and res[0].reps[k].tolist() == [0, 3, 4, 8]
            assert res[1].reps[k].tolist() == [0] and not res[1].labels[k].any()


@pytest.mark.parametrize("rule", list(RepresentativeRule))
def test_representative_rules(rule):
    embs = [random_problems(1, n, 32, seed=20 + n)[0] for n in (6, 11, 25, 40)]
    for x, res in zip(embs, cluster_stickers(embs, KMeansConfig(rule=rule))):
        check_sticker(res, len(x))
        for k in KS:
            labels = res.labels[k]
            for rep in res.reps[k]:
                members = np.flatnonzero(labels == labels[rep])
                if rule is RepresentativeRule.FIRST:
                    assert rep == members[0]
                else:
                    xm = x[members].astype(np.float64)
                    assert rep == members[np.argmin(((xm - xm.mean(0)) ** 2).sum(1))]


def test_partitions_as_good_as_sklearn_reference_overall():
    rng = np.random.default_rng(11)
    embs = [unit(rng.standard_normal((1, 32)) + np.cumsum(0.3 * rng.standard_normal((n, 32)), 0))
            for n in rng.integers(9, 30, 12)]

    def inertia(x, labels):
        return sum(((x[labels == c] - x[labels == c].mean(0)) ** 2).sum() for c in np.unique(labels))

    ours, ref = cluster_stickers(embs), cluster_stickers_sklearn(embs)
    for k in KS:
        a = sum(inertia(x, r.labels[k]) for x, r in zip(embs, ours))
        b = sum(inertia(x, r.labels[k]) for x, r in zip(embs, ref))
        assert a <= b * 1.01


def test_deterministic_and_independent_of_batch_composition():
    rng = np.random.default_rng(12)
    embs = [unit(rng.standard_normal((n, 32))) for n in (5, 9, 9, 14, 18, 40)]
    others = [unit(rng.standard_normal((n, 32))) for n in rng.integers(4, 45, 30)]
    cfg = KMeansConfig(seed=3)
    base = cluster_stickers(embs, cfg)
    mixed = cluster_stickers(others[:15] + embs[::-1] + others[15:], cfg)[15:15 + len(embs)][::-1]
    for a, b, c in zip(base, cluster_stickers(embs, cfg), mixed):
        for k in KS:
            assert np.array_equal(a.labels[k], b.labels[k]) and np.array_equal(a.reps[k], b.reps[k])
            assert np.array_equal(a.labels[k], c.labels[k]) and np.array_equal(a.reps[k], c.reps[k])
    with pytest.MonkeyPatch.context() as mp:  # tiny batches: a sticker's k's land in different calls
        mp.setattr(km, "_MAX_PROBLEMS", 5)
        split = cluster_stickers(embs, cfg)
    for a, b in zip(base, split):
        assert all(np.array_equal(a.labels[k], b.labels[k]) and np.array_equal(a.reps[k], b.reps[k]) for k in KS)
    other_seed = cluster_stickers(embs, KMeansConfig(seed=4))
    assert any(not np.array_equal(a.labels[k], b.labels[k]) for a, b in zip(base, other_seed) for k in KS)


def test_bad_inputs():
    with pytest.raises(ValueError, match="share D"):
        cluster_stickers([np.zeros((4, 8), np.float32), np.zeros((4, 9), np.float32)])
    with pytest.raises(ValueError, match="finite"):
        cluster_stickers([np.full((4, 8), np.nan, np.float32)])
    with pytest.raises(ValueError, match="shape"):
        kmeans_batched(np.zeros((4, 8), np.float32), 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(k_min=0), "k_min must be >= 1"),
        (dict(k_min=5, k_max=4), "k_max must be >= k_min"),
        (dict(n_init=0), "n_init must be >= 1"),
        (dict(max_iter=0), "max_iter must be >= 1"),
        (dict(tol=-1.0), "tol must be"),
        (dict(seed=-1), "seed must be >= 0"),
        (dict(k_max=3.5), "k_max must be an int"),
        (dict(rule="median"), "rule must be one of: centroid, first"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        KMeansConfig(**kwargs)


def test_config_accepts_rule_names():
    assert KMeansConfig(rule="first").rule is RepresentativeRule.FIRST
    assert KMeansConfig().rule is RepresentativeRule.CENTROID
