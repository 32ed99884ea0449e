"""Dataset-level structure: semantic clusters, near-duplicate groups and a leak-free stratified split.

The paper evaluates on 500 held-out test stickers (Experiments). We make that split reproducible and
safe for a growing collection:

1. **Semantic clusters** — ``MiniBatchKMeans`` over sticker-level mean CLIP embeddings (unit-normalised),
   so the test set covers the same subjects/styles as training (stratification).
2. **Near duplicates** — stickers whose mean embeddings have cosine similarity >= ``dup_threshold`` are
   unioned into one group (re-uploads, re-encodes, recoloured copies). A group always lands wholly in
   one split, so no near duplicate straddles train and test.
3. **Stratified selection** — each semantic cluster receives a test quota proportional to its size
   (largest-remainder rounding); inside a cluster, duplicate groups are visited in an order given by a
   seeded hash of their smallest key, and taken whole while they fit in the remaining quota. Same inputs + seed ->
   same split, independent of input order.

Embeddings are **centred** (the drop's mean vector subtracted) before cosines and clustering by
default: CLIP image embeddings are anisotropic (all pairs have a high raw cosine; with random-init
weights, > 0.97), so a fixed threshold on raw cosines would merge unrelated stickers. Centring keeps
true duplicates near 1 and spreads the rest around 0. ``center=False`` restores raw cosines.

The split is computed per drop (one Dagster partition). ``test_size`` (default 500, as in the paper)
is scaled down for small drops to at most ``max_test_fraction`` of the stickers.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class Split(StrEnum):
    TRAIN = "train"
    TEST = "test"


@dataclass(frozen=True)
class SplitConfig:
    test_size: int = 500  # held-out stickers per drop (paper: 500), before scaling for small drops
    max_test_fraction: float = 0.1  # small drops: at most this fraction goes to test
    n_semantic_clusters: int = 32  # MiniBatchKMeans clusters over mean embeddings (capped at n // 4)
    dup_threshold: float = 0.98  # cosine similarity of mean embeddings that makes two stickers near duplicates
    seed: int = 0  # drives clustering init and the within-cluster selection order
    center: bool = True  # subtract the drop's mean embedding before cosine/clustering (anisotropy correction)

    def __post_init__(self) -> None:
        if self.test_size < 0:
            raise ValueError(f"test_size must be >= 0, got {self.test_size}")
        if not 0.0 <= self.max_test_fraction < 1.0:
            raise ValueError(f"max_test_fraction must be in [0, 1), got {self.max_test_fraction}")
        if self.n_semantic_clusters < 1:
            raise ValueError(f"n_semantic_clusters must be >= 1, got {self.n_semantic_clusters}")
        if not -1.0 <= self.dup_threshold <= 1.0:
            raise ValueError(f"dup_threshold must be a cosine in [-1, 1], got {self.dup_threshold}")

    def n_test(self, n: int) -> int:
        return int(min(self.test_size, np.floor(self.max_test_fraction * n)))


def _unit(x: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n > 0, n, 1.0)


def semantic_clusters(mean_emb: np.ndarray, n_clusters: int, seed: int = 0) -> np.ndarray:
    """Cluster id per sticker from its mean frame embedding (N, D) -> (N,) int32."""
    from sklearn.cluster import MiniBatchKMeans

    N = mean_emb.shape[0]
    k = max(1, min(n_clusters, N // 4))
    if N == 0 or k == 1:
        return np.zeros(N, np.int32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # duplicate points -> fewer distinct clusters: harmless here
        km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=min(4096, max(256, N)))
        labels = km.fit_predict(_unit(mean_emb).astype(np.float32))
    return labels.astype(np.int32)


def near_duplicate_groups(mean_emb: np.ndarray, threshold: float, block: int = 2048) -> np.ndarray:
    """Connected components of the graph "cosine >= threshold": (N, D) -> (N,) group id (smallest member index).

    Blockwise (block x N similarities at a time) so memory stays bounded for large drops; the components are
    scipy's ``connected_components`` over the sparse edge list.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    N = mean_emb.shape[0]
    x = _unit(mean_emb.astype(np.float32))
    edges_r, edges_c = [], []
    for a in range(0, N, block):
        sims = x[a : a + block] @ x.T  # (b, N)
        rows, cols = np.nonzero(sims >= threshold)
        keep = cols > rows + a  # each pair once, no self loops
        edges_r.append(rows[keep] + a)
        edges_c.append(cols[keep])
    r = np.concatenate(edges_r) if edges_r else np.zeros(0, np.int64)
    c = np.concatenate(edges_c) if edges_c else np.zeros(0, np.int64)
    _, labels = connected_components(coo_matrix((np.ones(len(r), np.int8), (r, c)), shape=(N, N)), directed=False)
    smallest = np.full(labels.max() + 1 if N else 0, N, np.int64)
    np.minimum.at(smallest, labels, np.arange(N))  # component -> its smallest member index
    return smallest[labels].astype(np.int64)


def _order_key(seed: int, key: str) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()


def stratified_split(keys: list[str], clusters: np.ndarray, groups: np.ndarray, n_test: int, seed: int = 0) -> np.ndarray:
    """Assign Split values (N,) so that whole duplicate groups go to one side and clusters are represented."""
    N = len(keys)
    out = np.full(N, Split.TRAIN.value, dtype=object)
    if n_test <= 0 or N == 0:
        return out
    ids, sizes = np.unique(clusters, return_counts=True)
    exact = sizes * n_test / N
    quota = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quota), kind="stable")[: n_test - quota.sum()]:  # largest remainders
        quota[i] += 1
    for cid, q in zip(ids, quota):
        members = np.flatnonzero(clusters == cid)
        by_group: dict[int, list[int]] = {}
        for m in members:
            by_group.setdefault(int(groups[m]), []).append(int(m))
        order = sorted(by_group.values(), key=lambda g: _order_key(seed, min(keys[i] for i in g)))
        taken = 0
        for g in order:
            if taken >= q:
                break
            # whole groups only (a group may reach into other clusters too); a group that would
            # overshoot the quota is skipped in favour of smaller ones later in the order
            whole = np.flatnonzero(groups == groups[g[0]])
            if (out[whole] == Split.TEST.value).any() or taken + len(g) > q:
                continue
            out[whole] = Split.TEST.value
            taken += len(g)
    return out


@dataclass
class DropSplit:
    semantic_cluster: np.ndarray  # (N,) int32
    dup_group: np.ndarray  # (N,) int64, input index of the group's smallest-key member (same id = same group)
    split: np.ndarray  # (N,) object: "train" | "test"


def split_drop(keys: list[str], mean_emb: np.ndarray, cfg: SplitConfig = SplitConfig()) -> DropSplit:
    """Semantic clusters, near-duplicate groups and the split for one drop's stickers.

    Work happens in key order (then mapped back), so the result does not depend on input order.
    """
    order = np.argsort(np.asarray(keys, dtype=object), kind="stable")
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    skeys = [keys[i] for i in order]
    semb = mean_emb[order].astype(np.float64)  # (N, D)
    if cfg.center and len(semb) > 1:
        semb = semb - semb.mean(axis=0, keepdims=True)
    clusters = semantic_clusters(semb, cfg.n_semantic_clusters, cfg.seed)
    groups = near_duplicate_groups(semb, cfg.dup_threshold)
    split = stratified_split(skeys, clusters, groups, cfg.n_test(len(keys)), cfg.seed)
    # group ids are indices in key order; report them as the smallest member's key index in input order
    return DropSplit(clusters[inv], order[groups][inv], split[inv])
