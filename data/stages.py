"""Run a drop's data stages (ingest -> embeddings -> clusters/split -> shards) without Dagster.

The same engines the assets wrap, in one call, for the CLI (``rdtf build-drop``), tests and benchmarks
that need real shards quickly. Production runs go through Dagster (``drop_data_job``).
"""

from __future__ import annotations

from pathlib import Path

from data.clustering import cluster_drop
from data.drops import refuse_overlap
from data.embed import EmbedSettings, embed_drop
from data.ingest import IngestSettings, ingest_drop
from data.kmeans import KMeansConfig
from data.lake import Lake, Stage
from data.sharding import build_shards
from data.shards import FrameEncoding
from data.splits import SplitConfig


def run_data_stages(
    drop_url: str,
    lake_root: str | Path,
    drop_id: str,
    *,
    ingest: IngestSettings | None = None,
    embed: EmbedSettings | None = None,
    kmeans: KMeansConfig | None = None,
    split: SplitConfig | None = None,
    encoding: FrameEncoding = FrameEncoding.WEBP,
    max_count: int = 1000,
    max_bytes: int = 512 << 20,
    progress: bool = False,
) -> Path:
    """Materialize every per-drop data stage into ``lake_root``; returns the shard ``index.json``."""
    refuse_overlap(drop_url, lake_root, "lake root")
    lake = Lake(lake_root)
    ingest_drop(drop_url, lake.partition(Stage.INGEST, drop_id), ingest or IngestSettings(), drop_id=drop_id,
                progress=progress)
    embed_drop(lake_root, drop_id, embed or EmbedSettings(), progress=progress)
    cluster_drop(lake_root, drop_id, kmeans or KMeansConfig(), split or SplitConfig(), progress=progress)
    build_shards(lake_root, drop_id, encoding=encoding, max_count=max_count, max_bytes=max_bytes)
    return lake.shards(drop_id) / "index.json"
