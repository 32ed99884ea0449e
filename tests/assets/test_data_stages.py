"""Embeddings -> clusters -> shards materialized through real Dagster on a small synthetic drop."""

from __future__ import annotations

import hashlib
import json
import subprocess

import pyarrow.parquet as pq
from dagster import DagsterInstance, materialize

from assets.clusters import CLUSTER_ASSET, LEAK_CHECK, frame_clusters
from assets.embeddings import EMBED_ASSET, EMBED_CHECK, frame_embeddings
from assets.ingest import INGEST_ASSET, ingested_stickers
from assets.resources import ClipResource, LakeResource
from assets.shards import SHARD_ASSET, SHARD_CHECK, webdataset_shards
from data.lake import Lake
from data.shard_reader import make_dataset
from data.shards import shard_urls

ASSETS = [ingested_stickers, frame_embeddings, frame_clusters, webdataset_shards]


def _run(instance, drop, lake_root, **shard_cfg):
    return materialize(
        ASSETS,
        partition_key=drop.name,
        instance=instance,
        resources={"storage": LakeResource(drops_root=str(drop.parent), lake_root=str(lake_root)),
                   "clip": ClipResource(batch_size=32, num_workers=0)},
        run_config={"ops": {INGEST_ASSET: {"config": {"size": 64, "workers": 1}},
                            CLUSTER_ASSET: {"config": {"test_size": 500, "max_test_fraction": 0.25, "n_semantic_clusters": 3}},
                            SHARD_ASSET: {"config": {"max_count": 8, **shard_cfg}}}},
    )


def test_data_stages_materialize_and_are_reproducible(tmp_path, clean_drop):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("drops", [clean_drop.name])
    result = _run(instance, clean_drop, tmp_path / "lake")
    assert result.success
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks[EMBED_CHECK] and checks[LEAK_CHECK] and checks[SHARD_CHECK], checks
    md = {k: v.value for k, v in result.asset_materializations_for_node(EMBED_ASSET)[0].metadata.items()}
    assert md["weights"] == "random" and md["n_frames"] > 0
    assert md["dagster/row_count"] == md["n_frames"] and "embedding" in {c.name for c in md["dagster/column_schema"].columns}
    for node, rows in (("ingested_stickers", 24), ("frame_clusters", 24)):  # tables declare schema and row count
        tmd = {k: v.value for k, v in result.asset_materializations_for_node(node)[0].metadata.items()}
        assert tmd["dagster/row_count"] == rows and {"key"} <= {c.name for c in tmd["dagster/column_schema"].columns}

    cl = pq.read_table(Lake(tmp_path / "lake").clusters(clean_drop.name)).to_pandas()
    assert len(cl) == 24 and set(cl.split) == {"train", "test"} and (cl.split == "test").sum() == 6
    for row in cl.itertuples():
        for k in range(3, 9):
            reps = list(getattr(row, f"reps_k{k}"))
            assert reps == sorted(reps) and len(reps) <= min(k, row.n_frames)

    index_path = Lake(tmp_path / "lake").shards(clean_drop.name) / "index.json"
    index = json.loads(index_path.read_text())
    assert index["counts"] == {"train": 18, "test": 6} and len(index["shards"]) >= 3
    samples = list(make_dataset(shard_urls([index_path], "train")))
    assert len(samples) == 18
    s0 = samples[0]
    assert s0["frames"].shape[1:] == (64, 64, 3) and s0["meta"]["split"] == "train"
    assert set(s0["meta"]["reps"]) == {str(k) for k in range(3, 9)}
    listing = subprocess.run(["tar", "tf", str(index_path.parent / index["shards"][0]["name"])], capture_output=True, text=True)
    assert listing.returncode == 0 and ".txt" in listing.stdout and ".json" in listing.stdout

    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in index_path.parent.iterdir()}
    again = _run(instance, clean_drop, tmp_path / "lake")
    assert again.success
    assert digest == {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in index_path.parent.iterdir()}
