"""Stage 2b: per-sticker frame clusters for every k, semantic clusters and the train/test split.

Paper, "Dual-mask based Data Utilization Strategy" / Fig. 3 / Table 6: each sticker's frames are
clustered into k clusters (k drawn in 3..8 at training time) and one frame per cluster is used, in
temporal order. We precompute labels and representatives for every k in [k_min, k_max] with the
batched k-means of ``model.kmeans`` so the training loader only has to draw k. The dataset-level
structure (``model.splits``) is computed from sticker-level mean embeddings in the same pass.

Output ``lake/clusters/<drop>/clusters.parquet`` (one row per sticker): key, id, n_frames,
``labels_k{k}`` and ``reps_k{k}`` (list<int16>) for each k, semantic_cluster, dup_group (key of the
group's first member), split.
"""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AutomationCondition,
    Config,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field
from tqdm.auto import tqdm

from assets import lake, publish
from assets.embedding_engine import embeddings_dir, iter_sticker_embeddings
from assets.embeddings import EMBED_ASSET
from assets.partitions import drop_id_of, drop_partitions
from assets.resources import LakeResource
from model.kmeans import KMeansConfig, RepresentativeRule, cluster_stickers
from model.splits import Split, SplitConfig, split_drop

CLUSTER_ASSET = "frame_clusters"
LEAK_CHECK = "split_is_leak_free"


def clusters_path(lake_root: str | Path, drop_id: str) -> Path:
    """The published cluster table of a drop."""
    return lake.published(lake_root, lake.Stage.CLUSTERS, drop_id) / "clusters.parquet"


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
    id_of = {}
    for part in sorted(embeddings_dir(lake_root, drop_id).glob("part-*.parquet")):
        t = pq.read_table(part, columns=["key", "id"])
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
    with publish.publish(lake.partition_dir(lake_root, lake.Stage.CLUSTERS, drop_id)) as stage:
        lake.write_parquet(table, stage / "clusters.parquet")
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
    df = pq.read_table(clusters_path(lake_root, drop_id), columns=["id", "dup_group", "split"]).to_pandas()
    ids_both = df.groupby("id").split.nunique().gt(1).sum()
    groups_both = df.groupby("dup_group").split.nunique().gt(1).sum()
    return bool(ids_both == 0 and groups_both == 0), {"ids_in_both": int(ids_both), "dup_groups_in_both": int(groups_both)}


class ClusterConfig(Config):
    """Run config of the clustering asset."""

    k_min: int = Field(3, description="Smallest k (paper Table 6: k random in 3..8).")
    k_max: int = Field(8, description="Largest k.")
    n_init: int = Field(3, description="k-means restarts per sticker and k (best inertia kept).")
    max_iter: int = Field(50, description="Lloyd iterations at most.")
    representative: RepresentativeRule = Field(
        RepresentativeRule.CENTROID,
        description="centroid: member nearest the cluster centroid; first: earliest frame of the cluster (authors' tool).",
    )
    seed: int = Field(0, description="Seed for k-means and the split order.")
    test_size: int = Field(500, description="Test stickers per drop (paper: 500), scaled down for small drops.")
    max_test_fraction: float = Field(0.1, description="Small drops: at most this fraction is held out.")
    n_semantic_clusters: int = Field(32, description="MiniBatchKMeans clusters over mean embeddings (stratification).")
    dup_threshold: float = Field(0.98, description="Cosine of mean embeddings above which stickers are near duplicates.")
    center_embeddings: bool = Field(True, description="Subtract the drop's mean embedding before cosines (see model.splits).")

    def kmeans(self) -> KMeansConfig:
        return KMeansConfig(k_min=self.k_min, k_max=self.k_max, n_init=self.n_init, max_iter=self.max_iter,
                            seed=self.seed, rule=self.representative)

    def split(self) -> SplitConfig:
        return SplitConfig(test_size=self.test_size, max_test_fraction=self.max_test_fraction,
                           n_semantic_clusters=self.n_semantic_clusters, dup_threshold=self.dup_threshold, seed=self.seed,
                           center=self.center_embeddings)


@asset(
    name=CLUSTER_ASSET,
    automation_condition=AutomationCondition.eager(),  # follows its upstream when re-materialized
    deps=[EMBED_ASSET],
    partitions_def=drop_partitions,
    group_name="data",
    kinds={"scikitlearn", "parquet"},
    check_specs=[AssetCheckSpec(LEAK_CHECK, asset=CLUSTER_ASSET, blocking=True,
                                description="No sticker id or near-duplicate group in both train and test.")],
    description="Per-sticker k-means of frame embeddings for every k, semantic clusters, near duplicates, split.",
)
def frame_clusters(context: AssetExecutionContext, config: ClusterConfig, storage: LakeResource) -> MaterializeResult:
    drop_id = drop_id_of(context)
    kcfg, scfg = config.kmeans(), config.split()  # validated before any work
    report = cluster_drop(storage.lake_root, drop_id, kcfg, scfg, progress=False)
    ok, stats = check_leak_free(storage.lake_root, drop_id)
    return MaterializeResult(
        metadata={
            "n_stickers": report.n_stickers,
            "n_test": report.n_test,
            "n_train": report.n_stickers - report.n_test,
            "k_range": f"{kcfg.k_min}..{kcfg.k_max}",
            "representative": kcfg.rule.value,
            "n_semantic_clusters": report.n_semantic_clusters,
            "n_near_duplicate_groups": report.n_dup_groups,
            "n_in_near_duplicate_groups": report.n_in_dup_groups,
            "stickers_per_s": MetadataValue.float(round(report.stickers_per_s, 1)),
            "path": MetadataValue.path(str(clusters_path(storage.lake_root, drop_id))),
        },
        check_results=[AssetCheckResult(check_name=LEAK_CHECK, passed=ok, severity=AssetCheckSeverity.ERROR, metadata=stats)],
    )
