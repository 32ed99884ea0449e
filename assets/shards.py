"""Stage 2c: WebDataset shards per drop — everything training reads.

Joins the ingest manifest (captions, durations, hashes), the decoded frames from the lake and the
cluster/split table, and writes ``lake/shards/<drop>/{train,test}-NNNNNN.tar`` plus ``index.json``
with ``model.shards`` (format, determinism and atomicity are documented there). Each build is a new
version committed by a pointer (``assets.publish``), so re-materializing is idempotent and byte-identical.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
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

from assets import lake, publish
from assets.clusters import CLUSTER_ASSET, clusters_path
from assets.partitions import drop_id_of, drop_partitions
from assets.resources import LakeResource
from model.shards import FrameEncoding, ShardSample, verify_shards, write_index, write_shards
from model.splits import Split

SHARD_ASSET = "webdataset_shards"
SHARD_CHECK = "shards_match_index"


def shards_dir(lake_root: str | Path, drop_id: str) -> Path:
    """The published shards of a drop (tars + ``index.json``)."""
    return lake.published(lake_root, lake.Stage.SHARDS, drop_id)


def _samples(lake_root: str | Path, drop_id: str, split: Split, meta_by_key: dict[str, dict], caption_of: dict[str, str]) -> Iterator[ShardSample]:
    for key, frames, _ in lake.iter_sticker_frames(lake_root, drop_id):
        meta = meta_by_key.get(key)
        if meta is None or meta["split"] != split.value:  # quarantined at embedding, or the other split
            continue
        yield ShardSample(key=key, frames=frames, caption=caption_of[key], meta=meta)


def build_shards(lake_root: str | Path, drop_id: str, *, encoding: FrameEncoding, max_count: int, max_bytes: int) -> dict:
    """Write the drop's shards and index; returns the index extras (counts)."""
    man = lake.read_manifest(lake_root, drop_id).set_index("key")
    cl = pq.read_table(clusters_path(lake_root, drop_id)).to_pandas()
    ks = sorted(int(c.removeprefix("reps_k")) for c in cl.columns if c.startswith("reps_k"))
    meta_by_key, caption_of = {}, {}
    for row in cl.itertuples(index=False):
        m = man.loc[row.key]
        caption_of[row.key] = m.caption
        meta_by_key[row.key] = {
            "id": row.id, "drop_id": drop_id, "n_frames": int(row.n_frames),
            "durations_ms": [int(d) for d in m.durations_ms], "fps": float(m.fps), "hash": m.hash,
            "width": int(m.width), "height": int(m.height), "has_alpha": bool(m.has_alpha), "format": m.format,
            "caption_status": m.caption_status, "source_uri": m.source_uri,
            "reps": {str(k): [int(i) for i in getattr(row, f"reps_k{k}")] for k in ks},
            "semantic_cluster": int(row.semantic_cluster), "dup_group": row.dup_group, "split": row.split,
        }
    with publish.publish(lake.partition_dir(lake_root, lake.Stage.SHARDS, drop_id)) as stage:
        infos = []
        for split in (Split.TRAIN, Split.TEST):
            infos += write_shards(_samples(lake_root, drop_id, split, meta_by_key, caption_of), stage, split.value,
                                  encoding=encoding, max_count=max_count, max_bytes=max_bytes)
        durs = [d for m in meta_by_key.values() for d in m["durations_ms"]]
        extra = {"drop_id": drop_id, "encoding": encoding.value, "k_range": [ks[0], ks[-1]] if ks else [],
                 "median_duration_ms": int(np.median(durs)) if durs else 100}  # default frame time of generated GIFs
        write_index(infos, stage, extra=extra)
    counts = {s.value: sum(i.count for i in infos if i.split == s.value) for s in Split}
    return {"counts": counts, "n_shards": len(infos), "bytes": sum(i.bytes for i in infos)}


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
    problems = verify_shards(shards_dir(storage.lake_root, drop_id) / "index.json")
    n_clustered = pq.read_metadata(clusters_path(storage.lake_root, drop_id)).num_rows
    if sum(res["counts"].values()) != n_clustered:
        problems.append(f"{sum(res['counts'].values())} samples in shards, {n_clustered} stickers in frame_clusters")
    return MaterializeResult(
        metadata={
            "n_train": res["counts"]["train"],
            "n_test": res["counts"]["test"],
            "n_shards": res["n_shards"],
            "bytes": res["bytes"],
            "encoding": config.encoding.value,
            "index": MetadataValue.path(str(shards_dir(storage.lake_root, drop_id) / "index.json")),
        },
        check_results=[AssetCheckResult(check_name=SHARD_CHECK, passed=not problems, severity=AssetCheckSeverity.ERROR,
                                        metadata={"problems": MetadataValue.json(problems[:20])})],
    )
