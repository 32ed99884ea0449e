"""Stage 2c: ``webdataset_shards`` — the asset over ``data.sharding`` (everything training reads, as WebDataset
tars + ``index.json``), with the check that the shards match their index and the cluster table."""


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

from assets.clusters import CLUSTER_ASSET
from assets.partitions import drop_id_of, drop_partitions
from assets.resources import LakeResource
from data.lake import parquet_rows
from data.sharding import build_shards
from data.shards import FrameEncoding, verify_shards

SHARD_ASSET = "webdataset_shards"
SHARD_CHECK = "shards_match_index"


class ShardConfig(Config):
    """Run config of the shard writer."""

    encoding: FrameEncoding = Field(FrameEncoding.WEBP, description="Frame encoding: webp (lossless strips, default), png or npy.")
    max_count: int = Field(1000, description="Samples per shard at most.")
    max_bytes: int = Field(512 << 20, description="Bytes per shard at most.")


@asset(
    name=SHARD_ASSET,
    automation_condition=AutomationCondition.eager(),  # follows its upstream when re-materialized
    deps=[CLUSTER_ASSET],
    partitions_def=drop_partitions,
    group_name="data",
    kinds={"webdataset"},
    check_specs=[AssetCheckSpec(SHARD_CHECK, asset=SHARD_ASSET, blocking=True,
                                description="Every shard opens, matches its sha256/size and sample count in index.json.")],
    description="WebDataset tar shards (train/test) with frames, caption and metadata incl. cluster representatives.",
)
def webdataset_shards(context: AssetExecutionContext, config: ShardConfig, storage: LakeResource) -> MaterializeResult:
    drop_id = drop_id_of(context)
    res = build_shards(storage.lake_root, drop_id, encoding=config.encoding, max_count=config.max_count,
                       max_bytes=config.max_bytes)
    problems = verify_shards(storage.lake.shards(drop_id) / "index.json")
    n_clustered = parquet_rows(storage.lake.clusters(drop_id))
    if sum(res["counts"].values()) != n_clustered:
        problems.append(f"{sum(res['counts'].values())} samples in shards, {n_clustered} stickers in frame_clusters")
    return MaterializeResult(
        metadata={
            "n_train": res["counts"]["train"],
            "n_test": res["counts"]["test"],
            "n_shards": res["n_shards"],
            "bytes": res["bytes"],
            "encoding": config.encoding.value,
            "index": MetadataValue.path(str(storage.lake.shards(drop_id) / "index.json")),
        },
        check_results=[AssetCheckResult(check_name=SHARD_CHECK, passed=not problems, severity=AssetCheckSeverity.ERROR,
                                        metadata={"problems": MetadataValue.json(problems[:20])})],
    )
