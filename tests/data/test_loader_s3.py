"""data.loader over an object store: the loopback S3 server (moto) against the same shards on local disk."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from upath import UPath

import data.loader as data
import data.shard_reader as reader
from data.loader import DataConfig, ShardSampling, TrainStream, make_loader, validate_indexes
from data.shard_reader import cache_name
from data.shards import shard_urls
from pipelines.s3_server import S3Server, start_s3_server

TRUNCATED = "train-000001.tar"


def _clear_s3fs_instances() -> None:
    # fsspec caches filesystem instances by constructor arguments, not by environment: an S3FileSystem made
    # for another test module's server would keep talking to that (dead) endpoint
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with start_s3_server(bucket="rdtf") as server, pytest.MonkeyPatch.context() as mp:
        for k, v in server.env().items():
            mp.setenv(k, v)  # DataLoader workers inherit it (fork), as torchrun ranks would
        _clear_s3fs_instances()
        yield server
        _clear_s3fs_instances()


def _upload(folder: Path, url: str, skip: str | None = None) -> str:
    """Every file of a shard folder to ``url``/ (same names); returns the index.json url."""
    for f in sorted(folder.iterdir()):
        if f.name != skip:
            dest = UPath(f"{url}/{f.name}")
            dest.fs.put_file(str(f), dest.path)
    return f"{url}/index.json"


def _rel(index: Path) -> str:
    """``shards/d0/versions/<v>``: the shard folder relative to the fixture's lake root."""
    return "/".join(index.parent.parts[-4:])


@pytest.fixture(scope="module")
def remote(s3, tiny_shards) -> str:
    """tiny_shards' index.json and tars at s3://rdtf/lake/shards/d0/versions/<v>/ (relative names kept)."""
    return _upload(tiny_shards.parent, s3.url("lake", _rel(tiny_shards)))


@pytest.fixture(scope="module")
def truncated(s3, tiny_shards, tmp_path_factory) -> tuple[Path, str]:
    """A local copy with one shard cut in half (its index agreeing, as if written broken), and its upload."""
    folder = tmp_path_factory.mktemp("trunc") / "v1"
    shutil.copytree(tiny_shards.parent, folder)
    victim = folder / TRUNCATED
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    doc = json.loads((folder / "index.json").read_text())
    for s in doc["shards"]:
        if s["name"] == TRUNCATED:
            s["bytes"] = victim.stat().st_size
    (folder / "index.json").write_text(json.dumps(doc))
    return folder / "index.json", _upload(folder, s3.url("lake", "truncated", "v1"))


def _cfg(index: str | Path, **kw) -> DataConfig:
    base = dict(index_paths=(str(index),), image_size=32, batch_size=3, shuffle_buffer=6, seed=4)
    return DataConfig(**{**base, **kw})


def _take(loader_or_ds, n: int) -> list[dict]:
    it = iter(loader_or_ds)
    out = [next(it) for _ in range(n)]
    del it
    return out


def _same(a: dict, b: dict) -> bool:
    return (torch.equal(a["frames"], b["frames"]) and torch.equal(a["valid"], b["valid"]) and torch.equal(a["k"], b["k"])
            and a["key"] == b["key"] and a["caption"] == b["caption"] and a["n_skipped"] == b["n_skipped"])


def _all_same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))


def test_remote_index_validates_to_s3_urls(remote, tiny_shards):
    urls = validate_indexes(_cfg(remote))
    assert [u.rsplit("/", 1)[1] for u in urls] == [u.rsplit("/", 1)[1] for u in shard_urls([tiny_shards], "train")]
    assert all(u.startswith("s3://rdtf/lake/shards/d0/versions/") for u in urls)
    assert validate_indexes(_cfg(remote.rsplit("/", 1)[0])) == urls  # the folder works too


@pytest.mark.parametrize(("sampling", "workers", "block"), [("resample", 0, 8 << 20), ("split", 0, 8 << 20),
                                                            ("resample", 2, 4096), ("split", 2, 4096)])
def test_s3_stream_equals_local_stream(remote, tiny_shards, sampling, workers, block):
    # block 4096: every shard read in many small ranged GETs, still byte-identical
    kw = dict(shard_sampling=sampling, num_workers=workers, read_block_bytes=block)
    local = _take(make_loader(_cfg(tiny_shards, **kw)), 8)
    assert _all_same(_take(make_loader(_cfg(remote, **kw)), 8), local)
    assert local[-1]["n_skipped"] == 0


@pytest.mark.parametrize("sampling", ["resample", "split"])
def test_s3_resume_is_exact(remote, sampling):
    cfg = _cfg(remote, shard_sampling=sampling, num_workers=2)
    full = _take(make_loader(cfg), 7)
    assert _all_same(_take(make_loader(cfg, start_batch=3), 4), full[3:])


def test_split_ranks_read_disjoint_shards_covering_all_in_one_epoch(remote, tiny_shards):
    cfg = _cfg(remote, shard_sampling="split", shuffle_buffer=0)
    doc = json.loads(tiny_shards.read_text())
    counts = {s["name"]: s["count"] for s in doc["shards"] if s["split"] == "train"}
    shards_of, keys_of = {}, {}
    for rank in (0, 1):
        stream = TrainStream(cfg, rank=rank, world_size=2)
        n_mine = len(range(rank, len(counts), 2))  # split_by_node: every other shard of the epoch's order
        shards_of[rank] = [next(s)["url"].rsplit("/", 1)[1] for s in [stream._shards(0, 1)] for _ in range(n_mine)]
        tally = data._Tally()
        raw = stream._raw(0, 1, tally)
        keys_of[rank] = {next(raw)["__key__"] for _ in range(sum(counts[n] for n in shards_of[rank]))}
        assert tally.n == 0
    assert not set(shards_of[0]) & set(shards_of[1]) and sorted(shards_of[0] + shards_of[1]) == sorted(counts)
    assert not keys_of[0] & keys_of[1] and len(keys_of[0] | keys_of[1]) == doc["counts"]["train"]


def test_cache_dir_is_filled_then_serves_the_second_read(remote, tiny_shards, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cfg = _cfg(remote, shard_sampling="split", cache_dir=str(cache))
    local = _take(TrainStream(_cfg(tiny_shards, shard_sampling="split")), 8)  # 24 clips > one epoch: all shards read
    assert _all_same(_take(TrainStream(cfg), 8), local)
    urls = validate_indexes(cfg)
    assert sorted(p.name for p in cache.iterdir()) == sorted(cache_name(u) for u in urls)  # no temp leftovers
    for u in urls:
        assert (cache / cache_name(u)).read_bytes() == (tiny_shards.parent / u.rsplit("/", 1)[1]).read_bytes()

    def no_object_store(url: str, block_bytes: int):
        raise AssertionError(f"read {url} from the object store although it is cached")

    monkeypatch.setattr(reader, "_open_fsspec", no_object_store)
    assert _all_same(_take(TrainStream(cfg), 8), local)  # n_skipped 0 too: every shard came from the cache
    with pytest.raises(AssertionError, match="although it is cached"):  # the patch does bite without the cache
        reader.ShardOpener(4096)(urls[0])


def test_missing_shard_on_s3_fails_validation(s3, tiny_shards):
    index = _upload(tiny_shards.parent, s3.url("lake", "missing", "v1"), skip="train-000002.tar")
    with pytest.raises(ValueError, match=r"shard s3://rdtf/lake/missing/v1/train-000002.tar listed in .* is missing"):
        validate_indexes(_cfg(index))
    with pytest.raises(ValueError, match="is missing"):
        TrainStream(_cfg(index))

    _upload(tiny_shards.parent, s3.url("lake", "missing", "v1"))  # all shards now, but one size disagrees:
    doc = json.loads(tiny_shards.read_text())
    doc["shards"] = [{**s, "bytes": s["bytes"] + 1} if s["name"] == "train-000003.tar" else s for s in doc["shards"]]
    UPath(s3.url("lake", "missing", "v1", "index.json")).write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=r"train-000003.tar has \d+ bytes, .* says \d+ \(rewritten\?\)"):
        validate_indexes(_cfg(index))


@pytest.mark.parametrize("cached", [False, True])
def test_truncated_shard_on_s3_is_counted_and_skipped(truncated, tmp_path, cached):
    local_index, remote_index = truncated
    kw = dict(shard_sampling="split", cache_dir=str(tmp_path / "c") if cached else "")
    got = _take(TrainStream(_cfg(remote_index, **kw)), 10)
    assert got[-1]["n_skipped"] >= 2  # the broken shard, once per epoch (30 clips > 2 epochs of ~16 samples)
    assert _all_same(got, _take(TrainStream(_cfg(local_index, shard_sampling="split")), 10))


def test_config_rejects_an_object_store_cache_dir(remote):
    with pytest.raises(ValueError, match="cache_dir must be a local folder"):
        _cfg(remote, cache_dir="s3://rdtf/cache")
    assert os.environ.get("AWS_ENDPOINT_URL", "").startswith("http://127.0.0.1:")
    assert _cfg(remote).shard_sampling is ShardSampling.RESAMPLE
