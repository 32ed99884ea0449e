"""Batched per-sticker k-means of CLIP frame embeddings (RDTF's dual-mask data utilisation).

Why: RDTF (arXiv 2503.17735, Fig. 3) clusters the frames of every training sticker into k clusters, k
drawn at random in 3..8 (Table 6), and trains on one representative frame per cluster in temporal order.
We precompute labels and representatives for *every* k in [k_min, k_max] so the loader only draws k. At
full scale that is 1.8M stickers x 6 values of k ~ 10M tiny problems (mostly 2-8 frames, a long tail to
~500): a scikit-learn call per problem costs milliseconds of overhead, so thousands of problems share
each numpy call here.

Documented choices:
* Everything runs on per-problem Gram matrices G = X X^T (float64 from float32 embeddings): frames are
  few (N << D = 512), so a step costs O(N^2 k) instead of O(N k D), and G is shared by every k and
  restart. Centres are weights W (N, k) over the points: ||x_i - c||^2 = G_ii - 2 (G W)_ic + (W^T G W)_cc.
  Plain numpy: measured, torch (CPU) bmm was slower than numpy's stacked matmul at these sizes.
* Greedy k-means++ init (2 + floor(ln k) candidates per step, as scikit-learn); the n_init restarts are
  stacked into the batch, lowest inertia wins (ties -> earliest). A problem stops when its squared centre
  shift is <= tol x its mean per-feature variance (scikit-learn's convention) and then leaves the working
  set, so no result depends on how long *other* problems keep iterating.
* Up to 64 (padded) frames, Lloyd is followed by Hartigan single-frame moves (exact inertia decrease):
  with 4-30 frames k-means has many local optima and this puts each restart in a better one (measured:
  a few % lower inertia on average than scikit-learn with the same n_init; from the same init never worse).
* Held (duplicate) frames: frames whose squared distance is <= 1e-8 x the mean squared norm coincide.
  k-means++ adds no centre once no distinct point is left; an empty cluster is re-seeded at the farthest
  point only if that point is distinct, else it stays empty (fewer representatives, never NaN). The same
  tolerance breaks representative ties (-> earliest frame).
* Determinism of ``cluster_stickers``: a sticker's random numbers are a counter-based hash of (cfg.seed,
  blake2b of its embedding bytes and shape, k, restart, centre, trial), never of its batch position, and
  the padded bucket size depends on n alone. Same input + seed -> same output whatever else is in the
  call (and duplicate stickers get identical clusterings).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

__all__ = ["KMeansConfig", "RepresentativeRule", "StickerClusters", "cluster_stickers", "cluster_stickers_sklearn",
           "kmeans_batched"]

_SAME_POINT = 1e-8  # squared distance, relative to the mean squared norm, below which frames coincide
_MAX_PROBLEMS = 4096  # problems (sticker x k) per batched call, before restarts
_MAX_BYTES = 16 << 20  # largest working array; above glibc's 32 MB mmap threshold every temporary
# page-faults afresh (measured: 10x slower copies), so batches stay well below it
_HARTIGAN_MAX_N = 64  # padded frame count up to which Lloyd is refined by Hartigan moves


class RepresentativeRule(StrEnum):
    CENTROID = "centroid"  # the member frame closest to its cluster centroid (ties -> earliest frame)
    FIRST = "first"  # the earliest frame of each cluster (what the authors' frame-extraction tool does)


@dataclass(frozen=True)
class KMeansConfig:
    k_min: int = 3  # smallest k precomputed (paper Table 6: k in 3..8)
    k_max: int = 8  # largest k precomputed
    n_init: int = 3  # k-means++ restarts per (sticker, k); the lowest inertia is kept
    max_iter: int = 50  # Lloyd iterations at most per restart
    tol: float = 1e-6  # stop when squared centre shift <= tol x mean feature variance (sklearn's convention)
    seed: int = 0  # base seed; per-sticker streams derive from (seed, content hash, k)
    rule: RepresentativeRule = RepresentativeRule.CENTROID  # how each cluster's representative frame is picked

    def __post_init__(self) -> None:
        for name in ("k_min", "k_max", "n_init", "max_iter", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int | np.integer) or isinstance(v, bool):
                raise ValueError(f"KMeansConfig.{name} must be an int, got {v!r}")
            lowest = {"k_min": 1, "k_max": max(self.k_min, 1), "n_init": 1, "max_iter": 1, "seed": 0}[name]
            if v < lowest:
                bound = f"k_min ({self.k_min})" if name == "k_max" else lowest
                raise ValueError(f"KMeansConfig.{name} must be >= {bound}, got {v}")
        if self.k_max > 255:  # labels are int16 and the RNG counters reserve 8 bits for the centre
            raise ValueError(f"KMeansConfig.k_max must be <= 255, got {self.k_max}")
        if not (isinstance(self.tol, int | float) and math.isfinite(self.tol) and self.tol >= 0):
            raise ValueError(f"KMeansConfig.tol must be a finite float >= 0, got {self.tol!r}")
        try:
            object.__setattr__(self, "rule", RepresentativeRule(self.rule))
        except ValueError:
            allowed = ", ".join(r.value for r in RepresentativeRule)
            raise ValueError(f"KMeansConfig.rule must be one of: {allowed}; got {self.rule!r}") from None


@dataclass
class StickerClusters:
    n_frames: int
    labels: dict[int, np.ndarray]  # k -> (n_frames,) int16 label per frame, numbered by first appearance in time
    reps: dict[int, np.ndarray]  # k -> sorted int16 frame indices, one per non-empty cluster (len <= k)


# ----------------------------------------------------------------------------------------------- core
def _n_trials(k: np.ndarray | int) -> np.ndarray:
    """Greedy k-means++ candidates per step, scikit-learn's default 2 + floor(ln k)."""
    return 2 + np.floor(np.log(np.maximum(k, 1))).astype(np.intp)


def _dists(diag: np.ndarray, W: np.ndarray, GW: np.ndarray, active: np.ndarray) -> np.ndarray:
    """Squared distances (P, N, K) of every point to every centre; inf for inactive centres."""
    cc = np.einsum("pnk,pnk->pk", W, GW)  # (P, K) squared centre norms
    d = np.maximum(diag[:, :, None] - 2 * GW + cc[:, None, :], 0.0)  # (P, N, K)
    return np.where(active[:, None, :], d, np.inf)


def _members(labels: np.ndarray, valid: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-hot membership M (P, N, K), cluster sizes (P, K) and mean weights W (P, N, K)."""
    M = (labels[..., None] == np.arange(K)) & valid[..., None]  # (P, N, K)
    counts = M.sum(1)  # (P, K)
    return M, counts, M / np.maximum(counts, 1)[:, None, :]


def _init_pp(G: np.ndarray, valid: np.ndarray, kk: np.ndarray, U: np.ndarray, same: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy k-means++: the first centre uniform among real frames, then the best of L candidates drawn
    with probability ~ D^2. Returns centre point indices (P, K) and which centres exist (P, K)."""
    P, N, _ = G.shape
    K, L = U.shape[1:]
    rows = np.arange(P)
    diag = np.einsum("pnn->pn", G)  # (P, N)
    n_valid = valid.sum(1)
    centres = np.zeros((P, K), np.intp)
    active = np.zeros((P, K), bool)
    centres[:, 0] = c0 = np.minimum((U[:, 0, 0] * n_valid).astype(np.intp), np.maximum(n_valid - 1, 0))
    active[:, 0] = n_valid > 0
    # coincident frames and padding carry no weight, so duplicates are never drawn twice
    closest = np.maximum(diag[rows, c0][:, None] + diag - 2 * G[rows, c0], 0.0)  # (P, N)
    closest = np.where(valid & (closest > same[:, None]), closest, 0.0)
    n_trials = _n_trials(kk)
    for c in range(1, K):
        # only problems that want a c-th centre and still have a distinct point left
        sub = np.flatnonzero((c < kk) & (closest.sum(1) > 0))
        if not len(sub):
            break
        cl = closest[sub]  # (p, N)
        cum = np.cumsum(cl, 1)
        target = U[sub, c, :] * cum[:, -1:]  # (p, L)
        cand = np.minimum((cum[:, None, :] <= target[:, :, None]).sum(2), N - 1)  # (p, L) first cum > target
        d_cand = diag[sub[:, None], cand][..., None] + diag[sub, None, :] - 2 * G[sub[:, None], cand]  # (p, L, N)
        new = np.minimum(cl[:, None, :], np.maximum(d_cand, 0.0))  # (p, L, N)
        new = np.where(valid[sub, None, :] & (new > same[sub, None, None]), new, 0.0)
        trial_off = np.arange(L)[None, :] >= n_trials[sub, None]  # (p, L) candidates unused for this k
        best = np.where(trial_off, np.inf, new.sum(2)).argmin(1)  # (p,)
        centres[sub, c] = cand[np.arange(len(sub)), best]
        active[sub, c] = True
        closest[sub] = new[np.arange(len(sub)), best]
    return centres, active


def _lloyd(G: np.ndarray, valid: np.ndarray, W: np.ndarray, active: np.ndarray, same: np.ndarray,
           tol_abs: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations from centre weights W (P, N, K). A problem stops (is frozen) once its squared
    centre shift is <= tol_abs, so its result never depends on the others; frozen problems leave the
    working set in bulk (copying G is the expensive part). Returns the final W and active."""
    W, active = W.copy(), active.copy()
    K, N = W.shape[2], W.shape[1]
    live = np.flatnonzero(valid.any(1))
    g, v, s, t, w, a = G[live], valid[live], same[live], tol_abs[live], W[live], active[live]
    dg, gw, run = np.einsum("pnn->pn", g), g @ w, np.ones(len(live), bool)
    for _ in range(max_iter):
        # ||x_i||^2 is the same for every centre: the argmin only needs ||c||^2 - 2 x_i.c
        score = np.where(a[:, None, :], np.einsum("pnk,pnk->pk", w, gw)[:, None, :] - 2 * gw, np.inf)  # (p, N, K)
        labels = score.argmin(2)  # (p, N)
        _, counts, w_new = _members(labels, v, K)
        a_new = a
        empty = a & (counts == 0)
        if empty.any():
            # the j-th empty cluster of a problem moves to its j-th farthest point, if that one is distinct
            d_own = np.maximum(dg + np.take_along_axis(score, labels[..., None], 2)[..., 0], 0.0)  # (p, N)
            d_own = np.where(v, d_own, -1.0)
            order = np.argsort(-d_own, axis=1, kind="stable")  # farthest first, ties -> earliest
            rank = np.cumsum(empty, 1) - 1  # (p, K)
            pick = np.take_along_axis(order, np.clip(rank, 0, N - 1), 1)  # (p, K)
            reseed = empty & (np.take_along_axis(d_own, pick, 1) > s[:, None]) & (rank < v.sum(1)[:, None])
            one_hot = np.arange(N)[None, :, None] == pick[:, None, :]  # (p, N, K)
            w_new = np.where(reseed[:, None, :], one_hot, w_new)
            a_new = a & ~(empty & ~reseed)
        gw_new = g @ w_new  # (p, N, K)
        shift = np.einsum("pnk,pnk->p", w_new - w, gw_new - gw)  # sum_c ||c_new - c_old||^2
        upd = run[:, None, None]
        w, gw, a = np.where(upd, w_new, w), np.where(upd, gw_new, gw), np.where(run[:, None], a_new, a)
        run &= shift > t
        if 4 * (~run).sum() >= len(live):
            W[live[~run]], active[live[~run]] = w[~run], a[~run]
            live, g, dg, v, s, t, w, gw, a, run = (x[run] for x in (live, g, dg, v, s, t, w, gw, a, run))
            if not len(live):
                break
    W[live], active[live] = w, a
    return W, active


def _hartigan(G: np.ndarray, valid: np.ndarray, labels: np.ndarray, active: np.ndarray, same: np.ndarray,
              max_steps: int) -> np.ndarray:
    """Hartigan refinement: move one frame per problem and step while that strictly lowers the inertia
    (moving i from a to b changes it by n_b/(n_b+1) d(i,b) - n_a/(n_a-1) d(i,a); empty clusters cost 0).
    Its fixed points are a subset of Lloyd's; on tiny problems it escapes many poor local optima."""
    labels = labels.copy()
    K, N = active.shape[1], G.shape[1]
    live = np.flatnonzero(valid.any(1))
    g, v, s, a, lab = G[live], valid[live], same[live], active[live], labels[live]
    dg = np.einsum("pnn->pn", g)
    for _ in range(max_steps):
        if not len(live):
            break
        M, counts, w = _members(lab, v, K)
        d = _dists(dg, w, g @ w, a)  # (p, N, K)
        n_own = np.take_along_axis(counts, lab, 1)  # (p, N)
        d_own = np.take_along_axis(d, lab[..., None], 2)[..., 0]
        gain = np.where(v & (n_own > 1), d_own * n_own / np.maximum(n_own - 1, 1), -np.inf)  # (p, N)
        factor = np.where(a, counts / (counts + 1.0), 0.0)[:, None, :]  # (p, 1, K)
        cost = np.where(a[:, None, :] & ~M, np.where(np.isinf(d), 0.0, d) * factor, np.inf)  # (p, N, K)
        delta = (cost - gain[..., None]).reshape(len(live), N * K)  # (p, N*K)
        best = delta.argmin(1)
        move = delta[np.arange(len(live)), best] < -s
        if not move.any():
            break
        lab[move, best[move] // K] = best[move] % K
        # a problem without an improving move never gets one later (its state is unchanged), so it can
        # stay in the working set; drop such problems only in bulk, as copying g is the expensive part
        if 4 * (~move).sum() >= len(live):
            labels[live[~move]] = lab[~move]
            live, g, dg, v, s, a, lab = (x[move] for x in (live, g, dg, v, s, a, lab))
    labels[live] = lab
    return labels


def _kmeans_gram(G: np.ndarray, valid: np.ndarray, kk: np.ndarray, U: np.ndarray, same: np.ndarray,
                 tol_abs: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One k-means run per problem. G (P, N, N) Gram matrices (padding rows/cols zero), valid (P, N) real
    frames (a prefix), kk (P,) clusters wanted (<= K), U (P, K, L) uniforms for k-means++, same (P,) the
    'same point' distance. Returns labels (P, N), centre weights W (P, N, K) and inertia (P,) float64."""
    N, K = G.shape[1], U.shape[1]
    centres, active = _init_pp(G, valid, kk, U, same)
    W = (np.arange(N)[None, :, None] == centres[:, None, :]) & active[:, None, :]  # (P, N, K)
    W, active = _lloyd(G, valid, W.astype(np.float64), active, same, tol_abs, max_iter)
    labels = _dists(np.einsum("pnn->pn", G), W, G @ W, active).argmin(2)  # (P, N)
    if N <= _HARTIGAN_MAX_N:  # one move per step: cheap for short stickers, quadratic for long ones
        labels = _hartigan(G, valid, labels, active, same, max_iter + N)
    _, counts, W = _members(labels, valid, K)
    active &= counts > 0  # clusters left empty have no distinct frame to take
    d = _dists(np.einsum("pnn->pn", G), W, G @ W, active)
    labels = d.argmin(2)  # final assignment: labels are nearest to the returned centres
    inertia = (np.take_along_axis(d, labels[..., None], 2)[..., 0] * valid).sum(1)
    return labels, W, inertia


def _best_of_restarts(G: np.ndarray, valid: np.ndarray, kk: np.ndarray, U: np.ndarray, D: int, tol: float,
                      max_iter: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """U (P, R, K, L): R restarts stacked into the batch. Returns labels, W, inertia of the best, and tiny."""
    P, R = U.shape[:2]
    n = np.maximum(valid.sum(1), 1)  # (P,)
    sq = np.einsum("pnn->pn", G) * valid  # (P, N) squared norms
    tiny = _SAME_POINT * sq.sum(1) / n  # 'same point' squared distance
    v = valid.astype(np.float64)
    scatter = sq.sum(1) - np.einsum("pn,pnm,pm->p", v, G, v) / n  # sum ||x - mean||^2
    tol_abs = tol * np.maximum(scatter, 0.0) / (n * D)  # tol x mean per-feature variance
    rep = lambda a: np.repeat(a, R, axis=0)  # noqa: E731  (P*R, ...) restart-major within a problem
    labels, W, inertia = _kmeans_gram(rep(G), rep(valid), rep(kk), U.reshape(P * R, *U.shape[2:]),
                                      rep(tiny), rep(tol_abs), max_iter)
    best = inertia.reshape(P, R).argmin(1) + np.arange(P) * R  # first minimum -> earliest restart
    return labels[best], W[best], inertia[best], tiny


def kmeans_batched(X: np.ndarray, k: int, *, n_init: int = 3, max_iter: int = 50, tol: float = 1e-6,
                   seed: int | np.random.Generator = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """k-means on B independent problems of N points each. X (B, N, D).
    Returns labels (B, N) int32, centres (B, k, D) float32 (an empty cluster's centre is zero) and
    inertia (B,) float64 of the best of n_init k-means++ restarts (Lloyd, then Hartigan if N <= 64)."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 3 or X.shape[1] < 1:
        raise ValueError(f"X must have shape (B, N >= 1, D), got {X.shape}")
    if k < 1 or n_init < 1 or max_iter < 1:
        raise ValueError(f"k, n_init and max_iter must be >= 1, got {k}, {n_init}, {max_iter}")
    B, N, D = X.shape
    rng = np.random.default_rng(seed)
    X64 = X.astype(np.float64)
    G = X64 @ X64.transpose(0, 2, 1)  # (B, N, N)
    U = rng.random((B, n_init, k, int(_n_trials(k))))
    valid, kk = np.ones((B, N), bool), np.full(B, k)
    labels, W, _, _ = _best_of_restarts(G, valid, kk, U, D, tol, max_iter)
    centres = W.transpose(0, 2, 1) @ X64  # (B, k, D)
    inertia = ((X64 - np.take_along_axis(centres, labels[..., None], 1)) ** 2).sum((1, 2))
    return labels.astype(np.int32), centres.astype(np.float32), inertia


def _representatives(G: np.ndarray, valid: np.ndarray, labels: np.ndarray, K: int, tiny: np.ndarray,
                     rule: RepresentativeRule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Relabel by first appearance and pick one frame per non-empty cluster.
    Returns labels (P, N), reps (P, K) sorted with N as padding, and the number of reps (P,)."""
    N = G.shape[1]
    M, counts, W = _members(labels, valid, K)  # W: centroid = mean of the members
    nonempty = counts > 0
    first = np.where(nonempty, M.argmax(1), N)  # (P, K) earliest member
    if rule is RepresentativeRule.FIRST:
        rep = first
    else:
        d = np.where(M, _dists(np.einsum("pnn->pn", G), W, G @ W, nonempty), np.inf)  # (P, N, K)
        near = M & (d <= d.min(1, keepdims=True) + tiny[:, None, None])  # ties within 'same point'
        rep = np.where(nonempty, near.argmax(1), N)  # (P, K) earliest of the nearest
    order = np.argsort(first, axis=1, kind="stable")  # clusters by first appearance
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(K)[None, :], 1)
    return np.take_along_axis(rank, labels, 1), np.sort(rep, 1), nonempty.sum(1)


# --------------------------------------------------------------------------------------- stickers
def _sticker_key(X: np.ndarray) -> int:
    """64-bit content hash: the RNG stream of a sticker depends on what it is, not where it sits."""
    h = hashlib.blake2b(np.ascontiguousarray(X).tobytes(), digest_size=8, person=b"rdtf-km")
    h.update(np.asarray(X.shape, np.int64).tobytes())
    return int.from_bytes(h.digest(), "little")


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (wrapping uint64 arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def _uniforms(seed: int, keys: np.ndarray, kk: np.ndarray, R: int, K: int, L: int) -> np.ndarray:
    """Counter-based uniforms (P, R, K, L) in [0, 1): hash of (seed, key, k, restart, centre, trial)."""
    with np.errstate(over="ignore"):
        z = _mix(keys.astype(np.uint64) ^ _mix(np.uint64(seed) + np.uint64(0x9E3779B97F4A7C15)))
        z = _mix(z ^ kk.astype(np.uint64))[:, None, None, None]  # (P, 1, 1, 1)
        # counters do not depend on the padded shapes, so a draw is a function of (r, c, l) alone
        ctr = (np.arange(R)[:, None, None] * 256 + np.arange(K)[:, None]) * 64 + np.arange(L)  # (R, K, L)
        z = _mix(z + ctr.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _padded(n: int) -> int:
    """Bucket size: exact up to 16 frames, then 4 steps per octave (<= 25% padding). Depends on n only."""
    if n <= 16:
        return n
    step = 1 << (n - 1).bit_length() - 3  # a quarter of the octave's lower power of two
    return -(-n // step) * step


def _check(embeddings: Sequence[np.ndarray]) -> list[np.ndarray]:
    xs, dims = [], set()
    for i, e in enumerate(embeddings):
        x = np.ascontiguousarray(e, dtype=np.float32)
        if x.ndim != 2 or len(x) > np.iinfo(np.int16).max or not np.isfinite(x).all():
            raise ValueError(f"embeddings[{i}] must be a finite (n_frames < 2**15, D) array, got shape {x.shape}")
        dims.add(x.shape[1])
        xs.append(x)
    if len(dims) > 1:
        raise ValueError(f"all embeddings must share D, got {sorted(dims)}")
    return xs


def cluster_stickers(embeddings: Sequence[np.ndarray], cfg: KMeansConfig = KMeansConfig()) -> list[StickerClusters]:
    """Labels and representatives of every sticker for every k in [cfg.k_min, cfg.k_max], in input order.
    Stickers with n_frames <= k are not clustered: every frame is its own cluster."""
    xs = _check(embeddings)
    out = [StickerClusters(len(x), {}, {}) for x in xs]
    buckets: dict[int, list[tuple[int, int]]] = defaultdict(list)  # padded N -> (sticker, k) jobs
    for i, x in enumerate(xs):
        for k in range(cfg.k_min, cfg.k_max + 1):
            if len(x) <= k:
                out[i].labels[k], out[i].reps[k] = np.arange(len(x), dtype=np.int16), np.arange(len(x), dtype=np.int16)
            else:
                buckets[_padded(len(x))].append((i, k))
    for N, jobs in sorted(buckets.items()):
        per_job = cfg.n_init * N * max(N, cfg.k_max, int(_n_trials(cfg.k_max))) * 8  # bytes of its G rows
        step = max(1, min(_MAX_PROBLEMS, _MAX_BYTES // per_job))
        for s in range(0, len(jobs), step):
            _cluster_bucket(xs, out, jobs[s:s + step], N, cfg)
    return out


def _cluster_bucket(xs: list[np.ndarray], out: list[StickerClusters], jobs: list[tuple[int, int]], N: int,
                    cfg: KMeansConfig) -> None:
    """Solve (sticker, k) jobs of one padded size N in one batched call, k padded to k_max (centres
    beyond a problem's k stay inactive), and fill ``out``."""
    P, K = len(jobs), cfg.k_max
    src, kk = np.array(jobs).T  # (P,), (P,): the jobs of a sticker are consecutive
    G = np.zeros((P, N, N))
    valid = np.zeros((P, N), bool)
    stickers, first, count = np.unique(src, return_index=True, return_counts=True)
    for i, a, m in zip(stickers, first, count):  # one Gram matrix per sticker, shared by its k's
        x64 = xs[i].astype(np.float64)
        G[a:a + m, :len(x64), :len(x64)] = x64 @ x64.T
        valid[a:a + m, :len(x64)] = True
    keys = np.repeat(np.array([_sticker_key(xs[i]) for i in stickers], np.uint64), count)
    U = _uniforms(cfg.seed, keys, kk, cfg.n_init, K, int(_n_trials(K)))
    labels, _, _, tiny = _best_of_restarts(G, valid, kk, U, xs[src[0]].shape[1], cfg.tol, cfg.max_iter)
    labels, reps, n_reps = _representatives(G, valid, labels, K, tiny, cfg.rule)
    labels, reps = labels.astype(np.int16), reps.astype(np.int16)
    for p, (i, k) in enumerate(jobs):
        out[i].labels[k], out[i].reps[k] = labels[p, :len(xs[i])].copy(), reps[p, :n_reps[p]].copy()


def cluster_stickers_sklearn(embeddings: Sequence[np.ndarray], cfg: KMeansConfig = KMeansConfig()) -> list[StickerClusters]:
    """Reference: one ``sklearn.cluster.KMeans`` per sticker and k, same representative rule."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    out = []
    for x in _check(embeddings):
        n, key = len(x), _sticker_key(x)
        x64 = x.astype(np.float64)
        sq = (x64**2).sum(1)
        tiny = _SAME_POINT * sq.mean() if n else 0.0
        res = StickerClusters(n, {}, {})
        for k in range(cfg.k_min, cfg.k_max + 1):
            if n <= k:
                res.labels[k], res.reps[k] = np.arange(n, dtype=np.int16), np.arange(n, dtype=np.int16)
                continue
            with warnings.catch_warnings():  # duplicate frames: fewer distinct points than k
                warnings.simplefilter("ignore", ConvergenceWarning)
                seed = int(_uniforms(cfg.seed, np.array([key], np.uint64), np.array([k]), 1, 1, 1).item() * 2**31)
                km = KMeans(n_clusters=k, n_init=cfg.n_init, max_iter=cfg.max_iter, tol=cfg.tol,
                            random_state=seed).fit(x)
            raw = km.labels_
            firsts = sorted({int(np.flatnonzero(raw == c)[0]): c for c in np.unique(raw)}.items())
            labels, reps = np.empty(n, np.int16), []
            for new, (first, c) in enumerate(firsts):
                members = np.flatnonzero(raw == c)
                labels[members] = new
                if cfg.rule is RepresentativeRule.FIRST:
                    reps.append(first)
                else:
                    d = ((x64[members] - x64[members].mean(0)) ** 2).sum(1)
                    reps.append(int(members[np.flatnonzero(d <= d.min() + tiny)[0]]))
            res.labels[k], res.reps[k] = labels, np.array(sorted(reps), np.int16)
        out.append(res)
    return out
