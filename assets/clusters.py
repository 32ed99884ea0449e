"""Stage 2b: ``frame_clusters`` — the asset over ``data.clustering`` (per-sticker frame clusters for every k, the
semantic clusters and the leak-free train/test split; paper Fig. 3, Table 6), with the leak check."""

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

from assets.embeddings import EMBED_ASSET
from assets.partitions import drop_id_of, drop_partitions
from assets.resources import LakeResource
from assets.table_metadata import table_metadata
from data.clustering import check_leak_free, cluster_drop
from data.kmeans import KMeansConfig, RepresentativeRule
from data.splits import SplitConfig

CLUSTER_ASSET = "frame_clusters"
LEAK_CHECK = "split_is_leak_free"


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
    center_embeddings: bool = Field(True, description="Subtract the drop's mean embedding before cosines (see data.splits).")

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
            "path": MetadataValue.path(str(storage.lake.clusters(drop_id))),
            **table_metadata([storage.lake.clusters(drop_id)]),
        },
        check_results=[AssetCheckResult(check_name=LEAK_CHECK, passed=ok, severity=AssetCheckSeverity.ERROR, metadata=stats)],
    )
