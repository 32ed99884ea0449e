"""Frame clustering of a drop: per-sticker frame clusters for every k, semantic clusters and the train/test split.

Paper, "Dual-mask based Data Utilization Strategy" / Fig. 3 / Table 6: each sticker's frames are
clustered into k clusters (k drawn in 3..8 at training time) and one frame per cluster is used, in
temporal order. We precompute labels and representatives for every k in [k_min, k_max] with the
batched k-means of ``data.kmeans`` so the training loader only has to draw k. The dataset-level
structure (``data.splits``) is computed from sticker-level mean embeddings in the same pass.

Output ``lake/clusters/<drop>/clusters.parquet`` (one row per sticker): key, id, n_frames,
``labels_k{k}`` and ``reps_k{k}`` (list<int16>) for each k, semantic_cluster, dup_group (key of the
group's first member), split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from data import publish
from data.embed import iter_sticker_embeddings
from data.kmeans import KMeansConfig, cluster_stickers
from data.lake import Lake, Stage, read_parquet, write_parquet
from data.splits import Split, SplitConfig, split_drop


def clusters_schema(ks: range) -> pa.Schema:
    fields = [("key", pa.string()), ("id", pa.string()), ("n_frames", pa.int32())]
    for k in ks:
        fields += [(f"labels_k{k}", pa.list_(pa.int16())), (f"reps_k{k}", pa.list_(pa.int16()))]
    fields += [("semantic_cluster", pa.int32()), ("dup_group", pa.string()), ("split", pa.string())]
    return pa.schema(fields)


@dataclass
class ClusterReport:
    n_stickers: int
    n_test: int
    n_semantic_clusters: int
    n_dup_groups: int  # groups with >= 2 members
    n_in_dup_groups: int
    wall_s: float
    stickers_per_s: float


def cluster_drop(lake_root: str | Path, drop_id: str, kcfg: KMeansConfig, scfg: SplitConfig, *, progress: bool = True) -> ClusterReport:
    t0 = time.perf_counter()
    ks = range(kcfg.k_min, kcfg.k_max + 1)
    lake = Lake(lake_root)
    id_of = {}
    for part in sorted(lake.embeddings(drop_id).glob("part-*.parquet"), key=lambda p: p.name):
        t = read_parquet(part, columns=["key", "id"])
        id_of.update(zip(t.column("key").to_pylist(), t.column("id").to_pylist()))
    rows: dict[str, list] = {name: [] for name in clusters_schema(ks).names}
    means = []
    n_total = len(id_of)
    bar = tqdm(total=n_total, desc=f"cluster {drop_id}", unit="sticker", disable=not progress)
    for _, keys, embs in iter_sticker_embeddings(lake_root, drop_id):  # one part at a time: bounded memory
        results = cluster_stickers(embs, kcfg)
        for key, e, res in zip(keys, embs, results):
            rows["key"].append(key)
            rows["id"].append(id_of[key])
            rows["n_frames"].append(int(e.shape[0]))
            for k in ks:
                rows[f"labels_k{k}"].append(res.labels[k].astype(np.int16).tolist())
                rows[f"reps_k{k}"].append(res.reps[k].astype(np.int16).tolist())
            means.append(e.mean(axis=0))
        bar.update(len(keys))
    bar.close()
    cluster_s = time.perf_counter() - t0
    keys = rows["key"]
    mean_emb = np.stack(means) if means else np.zeros((0, 1), np.float32)  # (N, D)
    split = split_drop(keys, mean_emb, scfg)
    rows["semantic_cluster"] = split.semantic_cluster.tolist()
    rows["dup_group"] = [keys[int(g)] for g in split.dup_group]
    rows["split"] = [str(s) for s in split.split]
    table = pa.Table.from_pydict(rows, schema=clusters_schema(ks))
    with publish.publish(lake.partition(Stage.CLUSTERS, drop_id)) as stage:
        write_parquet(table, stage / "clusters.parquet")
    _, counts = np.unique(split.dup_group, return_counts=True) if len(keys) else (None, np.zeros(0, int))
    return ClusterReport(
        n_stickers=len(keys),
        n_test=int((split.split == Split.TEST.value).sum()),
        n_semantic_clusters=int(len(np.unique(split.semantic_cluster))) if len(keys) else 0,
        n_dup_groups=int((counts > 1).sum()),
        n_in_dup_groups=int(counts[counts > 1].sum()),
        wall_s=time.perf_counter() - t0,
        stickers_per_s=len(keys) / cluster_s if cluster_s > 0 else 0.0,
    )


def check_leak_free(lake_root: str | Path, drop_id: str) -> tuple[bool, dict]:
    """No sticker id and no near-duplicate group appears in both splits."""
    df = read_parquet(Lake(lake_root).clusters(drop_id), columns=["id", "dup_group", "split"]).to_pandas()
    ids_both = df.groupby("id").split.nunique().gt(1).sum()
    groups_both = df.groupby("dup_group").split.nunique().gt(1).sum()
    return bool(ids_both == 0 and groups_both == 0), {"ids_in_both": int(ids_both), "dup_groups_in_both": int(groups_both)}
