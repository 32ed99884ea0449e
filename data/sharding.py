"""Building a drop's WebDataset shards — everything training reads.

Joins the ingest manifest (captions, durations, hashes), the decoded frames from the lake and the
cluster/split table, and writes ``lake/shards/<drop>/{train,test}-NNNNNN.tar`` plus ``index.json``
with ``data.shards`` (format, determinism and atomicity are documented there). Each build is a new
version committed by a pointer (``data.publish``), so re-materializing is idempotent and byte-identical.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from data import publish
from data.lake import Lake, Stage, read_parquet
from data.shard_reader import make_dataset
from data.shards import FrameEncoding, ShardSample, shard_urls, write_index, write_shards
from data.splits import Split


def _samples(lake_root: str | Path, drop_id: str, split: Split, meta_by_key: dict[str, dict], caption_of: dict[str, str]) -> Iterator[ShardSample]:
    for key, frames, _ in Lake(lake_root).sticker_frames(drop_id):
        meta = meta_by_key.get(key)
        if meta is None or meta["split"] != split.value:  # quarantined at embedding, or the other split
            continue
        yield ShardSample(key=key, frames=frames, caption=caption_of[key], meta=meta)


def build_shards(lake_root: str | Path, drop_id: str, *, encoding: FrameEncoding, max_count: int, max_bytes: int) -> dict:
    """Write the drop's shards and index; returns the index extras (counts)."""
    lake = Lake(lake_root)
    man = lake.manifest(drop_id).set_index("key")
    cl = read_parquet(lake.clusters(drop_id)).to_pandas()
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
    with publish.publish(lake.partition(Stage.SHARDS, drop_id)) as stage:
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


def iter_test_samples(indexes: list[str]):
    """Decoded test-split samples of the given shard indexes, in index order (deterministic)."""
    urls = shard_urls(indexes, "test")
    if not urls:
        raise ValueError("no test shards: materialize webdataset_shards with a test split first")
    yield from make_dataset(urls, nodesplitter=lambda x: x, workersplitter=lambda x: x)
