"""Training data (data.loader): random-k representative frames, loss mask, deterministic resumable stream."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import data.loader as data
import data.shards as shards
from data.embed import EmbedSettings
from data.ingest import IngestSettings
from data.loader import DataConfig, TrainStream, make_loader, select_frames, validate_indexes
from data.shard_reader import make_dataset
from data.shards import ShardSample, shard_urls, write_index, write_shards
from data.splits import SplitConfig
from data.stages import run_data_stages
from data.synthetic import SyntheticConfig, make_drop
from model.clip import tiny_spec

SIZE = 64  # stored frame size of the fixture shards
_ALL = dict(nodesplitter=lambda s: s, workersplitter=lambda s: s)


@pytest.fixture(scope="module")
def index(tmp_path_factory) -> Path:
    """Real shards of a 16-sticker synthetic drop: 12 train stickers in 3 train shards of 4."""
    tmp = tmp_path_factory.mktemp("data")
    make_drop(str(tmp / "drops" / "d"), n=16, seed=7, cfg=SyntheticConfig(min_size=48, max_size=96, max_frames=40),
              progress=False)
    path = run_data_stages(str(tmp / "drops" / "d"), tmp / "lake", "d", ingest=IngestSettings(size=SIZE, workers=1),
                           embed=EmbedSettings(clip=tiny_spec(batch_size=32), num_workers=0),
                           split=SplitConfig(max_test_fraction=0.25, n_semantic_clusters=3), max_count=4)
    assert len(shard_urls([path], "train")) >= 3
    return path


@pytest.fixture(scope="module")
def originals(index) -> dict[str, dict]:
    return {s["key"]: s for s in make_dataset(shard_urls([index], "train"), **_ALL)}


BAD_FRAMES, BAD_JSON = 1, 4  # positions (in the original order) of the two samples corrupted below


@pytest.fixture(scope="module")
def corrupt_index(originals, tmp_path_factory) -> tuple[Path, set[str]]:
    """One shard with the 12 train samples, two of them corrupt: garbage frame strip, garbage json."""
    keys = list(originals)
    bad = {keys[BAD_FRAMES]: "frames.000.webp", keys[BAD_JSON]: "json"}
    real = shards.encode_sample

    def encode(sample, encoding):
        members = real(sample, encoding)
        if sample.key in bad:
            members[bad[sample.key]] = b"\x00garbage" * 50
        return members

    out = tmp_path_factory.mktemp("corrupt")
    samples = [ShardSample(k, s["frames"], s["caption"], s["meta"]) for k, s in originals.items()]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(shards, "encode_sample", encode)
        infos = write_shards(samples, out, "train", max_count=100)
    return write_index(infos, out), set(bad)


def _cfg(index, **kw) -> DataConfig:
    base = dict(index_paths=(str(index),), image_size=32, batch_size=2, shuffle_buffer=8, seed=1)
    return DataConfig(**{**base, **kw})


def _take(loader_or_ds, n: int) -> list[dict]:
    it = iter(loader_or_ds)
    out = [next(it) for _ in range(n)]
    del it  # shuts DataLoader workers down
    return out


def _same(a: dict, b: dict) -> bool:
    return (torch.equal(a["frames"], b["frames"]) and torch.equal(a["valid"], b["valid"]) and torch.equal(a["k"], b["k"])
            and a["caption"] == b["caption"] and a["key"] == b["key"] and a["n_skipped"] == b["n_skipped"])


# --- validate_indexes -------------------------------------------------------------------------------------------


def test_validate_indexes_returns_urls_and_rejects_bad_setups(index, tmp_path):
    assert validate_indexes(_cfg(index)) == shard_urls([index], "train")
    assert validate_indexes(_cfg(index.parent)) == shard_urls([index], "train")  # a folder works too

    with pytest.raises(ValueError, match="index_paths is empty"):
        validate_indexes(DataConfig(index_paths=()))
    with pytest.raises(ValueError, match="not found"):
        validate_indexes(_cfg(tmp_path / "nope" / "index.json"))

    doc = json.loads(index.read_text())
    (tmp_path / "test_only").mkdir()
    only_test = {**doc, "shards": [s for s in doc["shards"] if s["split"] == "test"]}
    (tmp_path / "test_only" / "index.json").write_text(json.dumps(only_test))
    with pytest.raises(ValueError, match="lists no 'train' shard"):
        validate_indexes(_cfg(tmp_path / "test_only" / "index.json"))

    copy = tmp_path / "copy"
    shutil.copytree(index.parent, copy)
    victim = copy / "train-000001.tar"
    victim.write_bytes(victim.read_bytes()[:1024])
    with pytest.raises(ValueError, match="train-000001.tar has 1024 bytes"):
        validate_indexes(_cfg(copy / "index.json"))
    victim.unlink()
    with pytest.raises(ValueError, match="train-000001.tar .* is missing"):
        validate_indexes(_cfg(copy / "index.json"))
    with pytest.raises(ValueError, match=r"k in \[3, 8\]"):
        validate_indexes(_cfg(index, num_frames=9, k_max=9))
    with pytest.raises(ValueError, match="k_min <= k_max"):
        DataConfig(index_paths=(str(index),), k_min=4, k_max=3)
    with pytest.raises(ValueError, match="world_size"):
        TrainStream(_cfg(index), rank=2, world_size=2)


# --- select_frames ----------------------------------------------------------------------------------------------


def _frames(n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.uint8) + 1)[:, None, None, None].repeat(4, 1).repeat(4, 2).repeat(3, 3)  # (n, 4, 4, 3)


def test_select_frames_random_k_temporal_order_and_padding():
    n = 20
    frames = _frames(n)
    rng = np.random.default_rng(0)
    reps = {str(k): [int(i) for i in rng.choice(n, size=k, replace=False)] for k in range(3, 9)}  # unsorted
    seen = set()
    for _ in range(300):
        clip, valid, k = select_frames(frames, reps, n, rng, 3, 8, 8)
        seen.add(k)
        assert clip.shape == (8, 4, 4, 3) and clip.dtype == np.uint8 and valid.dtype == bool
        assert np.array_equal(clip[:k], frames[sorted(reps[str(k)])])  # temporal order
        assert not clip[k:].any() and valid[:k].all() and not valid[k:].any()
    assert seen == set(range(3, 9))  # k ~ U[3, 8]

    # a 2-frame sticker (clustering gives at most 2 representatives) and duplicated indices: k_eff < k
    short = {str(k): [1, 0] for k in range(3, 9)}
    clip, valid, k = select_frames(_frames(2), short, 2, rng, 3, 8, 8)
    assert k == 2 and valid.tolist() == [True, True] + [False] * 6 and clip[:, 0, 0, 0].tolist() == [1, 2] + [0] * 6
    dup = {str(k): [5, 2, 5, 2, 9] for k in range(3, 9)}
    clip, valid, k = select_frames(frames, dup, n, rng, 3, 8, 8)
    assert k == 3 and clip[:3, 0, 0, 0].tolist() == [3, 6, 10]
    with pytest.raises(ValueError, match="outside"):
        select_frames(frames, {str(k): [25] for k in range(3, 9)}, n, rng, 3, 8, 8)


# --- TrainStream ------------------------------------------------------------------------------------------------


def test_batches_shapes_values_and_loss_mask(index, originals):
    cfg = _cfg(index, batch_size=3)
    for b in _take(TrainStream(cfg), 4):
        assert b["frames"].shape == (3, 8, 3, 32, 32) and b["frames"].dtype == torch.float32
        assert b["valid"].shape == (3, 8) and b["valid"].dtype == torch.bool
        assert b["k"].shape == (3,) and b["k"].dtype == torch.long and b["n_skipped"] == 0
        assert b["frames"].min() >= -1 and b["frames"].max() <= 1
        assert len(b["caption"]) == 3 and all(isinstance(c, str) for c in b["caption"])
        assert set(b["key"]) <= set(originals)
        for i in range(3):
            k = int(b["k"][i])
            assert 1 <= k <= 8 and b["valid"][i].tolist() == [True] * k + [False] * (8 - k)
            assert b["frames"][i, k:].eq(0).all() and b["frames"][i, :k].std() > 0

    # at the stored size (no resize) the clip is exactly the sticker's representative frames for some k
    for b in _take(TrainStream(_cfg(index, image_size=SIZE, batch_size=4)), 3):
        for i, key in enumerate(b["key"]):
            s = originals[key]
            u8 = ((b["frames"][i, : int(b["k"][i])] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            matches = [k for k, r in s["meta"]["reps"].items()
                       if len(set(r)) == len(u8) and np.array_equal(s["frames"][sorted(set(r))], u8)]
            assert matches and b["caption"][i] == s["caption"]


def test_stream_is_deterministic_per_rank_and_seed(index):
    cfg = _cfg(index)
    first = _take(TrainStream(cfg), 4)
    assert all(_same(a, b) for a, b in zip(first, _take(TrainStream(cfg), 4)))
    other_rank = _take(TrainStream(cfg, rank=1, world_size=2), 4)
    other_seed = _take(TrainStream(_cfg(index, seed=2)), 4)
    for other in (other_rank, other_seed):
        assert not all(_same(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize(("workers", "start"), [(0, 3), (2, 3), (2, 4)])
def test_resume_continues_the_uninterrupted_stream(index, workers, start):
    cfg = _cfg(index, num_workers=workers)
    full = _take(make_loader(cfg, rank=1, world_size=2), start + 4)
    if workers:  # batch i comes from worker i % 2: the two workers' streams differ
        assert full[0]["key"] != full[1]["key"] or not torch.equal(full[0]["frames"], full[1]["frames"])
    resumed = _take(make_loader(cfg, rank=1, world_size=2, start_batch=start), 4)
    assert all(_same(a, b) for a, b in zip(full[start:], resumed, strict=True))


def test_resume_skips_without_decoding_frames(index, monkeypatch):
    calls = []
    real = data.decode_sample
    monkeypatch.setattr(data, "decode_sample", lambda raw: calls.append(raw["__key__"]) or real(raw))
    cfg = _cfg(index, batch_size=3)
    far = _take(TrainStream(cfg, start_batch=40), 1)[0]
    assert len(calls) == 3  # 120 skipped samples were probed, not decoded
    assert _same(far, _take(TrainStream(cfg), 41)[-1])


def test_corrupt_samples_are_skipped_counted_and_resume_stays_exact(corrupt_index):
    path, bad_keys = corrupt_index
    cfg = _cfg(path, batch_size=4, shuffle_buffer=4)
    full = _take(TrainStream(cfg), 10)  # 40 clips ~ 4 passes over the shard
    counts = [b["n_skipped"] for b in full]
    assert counts == sorted(counts) and counts[-1] >= 4
    assert not bad_keys & {k for b in full for k in b["key"]}
    resumed = _take(TrainStream(cfg, start_batch=6), 4)
    assert all(_same(a, b) for a, b in zip(full[6:], resumed))


def test_pixel_decode_failure_behind_valid_headers_is_skipped(index, originals, monkeypatch):
    victim = sorted(originals)[0]
    real = data.decode_sample

    def flaky(raw):
        if raw["__key__"] == victim:
            raise ValueError("broken pixels")
        return real(raw)

    monkeypatch.setattr(data, "decode_sample", flaky)
    batches = _take(TrainStream(_cfg(index, batch_size=4)), 6)
    assert batches[-1]["n_skipped"] >= 1 and all(victim not in b["key"] for b in batches)


# --- webdataset source: shard sampling, brace patterns, broken shards, new config fields -----------------------------


def _copy(index: Path, dest: Path, *, truncate: str | None = None) -> Path:
    """A copy of ``index``'s folder; ``truncate``: that shard cut to half its size, the index agreeing (a shard
    broken at write time, which validate_indexes cannot see)."""
    shutil.copytree(index.parent, dest)
    if truncate:
        victim = dest / truncate
        victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
        doc = json.loads((dest / "index.json").read_text())
        for s in doc["shards"]:
            if s["name"] == truncate:
                s["bytes"] = victim.stat().st_size
        (dest / "index.json").write_text(json.dumps(doc))
    return dest / "index.json"


def _epoch_urls(stream: TrainStream, o: int, n_streams: int, epochs: int = 1) -> list[list[str]]:
    """The shard urls of each of the first ``epochs`` split-mode epochs of stream ``o`` of ``n_streams``."""
    it = stream._shards(o, n_streams)
    per_epoch = len(range(stream.rank + stream.world_size * o, len(stream.urls), stream.world_size * n_streams))
    return [[next(it)["url"] for _ in range(per_epoch)] for _ in range(epochs)]


def test_new_config_fields_are_validated_naming_allowed_values(index):
    with pytest.raises(ValueError, match=r"shard_sampling must be one of \['resample', 'split'\]"):
        _cfg(index, shard_sampling="epochs")
    with pytest.raises(ValueError, match="cache_dir must be a local folder, or '' for no cache"):
        _cfg(index, cache_dir="s3://bucket/cache")
    with pytest.raises(ValueError, match="read_block_bytes must be an integer >= 1"):
        _cfg(index, read_block_bytes=0)
    assert _cfg(index, shard_sampling="split").shard_sampling is data.ShardSampling.SPLIT
    with pytest.raises(ValueError, match="cannot feed world_size x num_workers = 4 streams"):
        TrainStream(_cfg(index, shard_sampling="split", num_workers=2), rank=0, world_size=2)  # 3 train shards


def test_split_gives_every_shard_to_one_rank_and_stream_per_epoch(index):
    cfg = _cfg(index, shard_sampling="split", shuffle_buffer=0)
    urls = set(shard_urls([index], "train"))
    for world, n_streams in ((1, 3), (3, 1), (1, 2)):
        epochs = [_epoch_urls(TrainStream(cfg, r, world), o, n_streams, epochs=4) for r in range(world) for o in range(n_streams)]
        for e in range(4):
            got = [u for part in epochs for u in part[e]]
            assert sorted(got) == sorted(urls)  # disjoint, and together every shard, in every epoch
    orders = [tuple(e) for e in _epoch_urls(TrainStream(cfg), 0, 1, epochs=6)]
    assert len(set(orders)) > 1  # reshuffled per epoch, deterministically:
    assert orders == [tuple(e) for e in _epoch_urls(TrainStream(cfg), 0, 1, epochs=6)]

    # one epoch of raw samples of the whole rank = every train sample exactly once
    tally = data._Tally()
    n = sum(s["count"] for s in json.loads(index.read_text())["shards"] if s["split"] == "train")
    keys = [next(raw)["__key__"] for raw in [TrainStream(cfg)._raw(0, 1, tally)] for _ in range(n)]
    assert len(set(keys)) == n and tally.n == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_split_mode_resume_is_exact(index, workers):
    cfg = _cfg(index, shard_sampling="split", num_workers=workers)
    full = _take(make_loader(cfg), 7)
    resumed = _take(make_loader(cfg, start_batch=3), 4)
    assert all(_same(a, b) for a, b in zip(full[3:], resumed, strict=True))
    assert not all(_same(a, b) for a, b in zip(full, _take(make_loader(_cfg(index, num_workers=workers)), 7)))


def test_brace_pattern_entries_are_expanded_and_checked(index, tmp_path):
    path = _copy(index, tmp_path / "brace")
    doc = json.loads(path.read_text())
    train = sorted((s for s in doc["shards"] if s["split"] == "train"), key=lambda s: s["name"])
    pattern = {**train[0], "name": doc["brace"]["train"], "bytes": [s["bytes"] for s in train]}
    assert "{" in pattern["name"]
    (path.parent / "plain.json").write_text(path.read_text())
    path.write_text(json.dumps({**doc, "shards": [s for s in doc["shards"] if s["split"] != "train"] + [pattern]}))
    plain = path.parent / "plain.json"
    expanded = validate_indexes(_cfg(path))
    assert expanded == shard_urls([plain], "train") and len(expanded) == len(train)
    cfg_brace, cfg_plain = _cfg(path), _cfg(plain)
    assert all(_same(a, b) for a, b in zip(_take(TrainStream(cfg_brace), 4), _take(TrainStream(cfg_plain), 4)))

    path.write_text(json.dumps({**doc, "shards": [{**pattern, "bytes": pattern["bytes"][:-1]}]}))
    with pytest.raises(ValueError, match=r"names 3 shard\(s\) but gives 2 size\(s\)"):
        validate_indexes(_cfg(path))
    path.write_text(json.dumps({**doc, "shards": [{**pattern, "bytes": [1, *pattern["bytes"][1:]]}]}))
    with pytest.raises(ValueError, match="train-000000.tar has .* bytes, .* says 1"):
        validate_indexes(_cfg(path))


def test_truncated_shard_is_counted_and_skipped_and_resume_stays_exact(index, tmp_path):
    path = _copy(index, tmp_path / "trunc", truncate="train-000001.tar")
    cfg = _cfg(path, shard_sampling="split", batch_size=3)
    full = _take(TrainStream(cfg), 8)  # 24 clips = > 2 epochs of the 9-10 readable samples
    assert full[-1]["n_skipped"] >= 2  # the broken shard, once per epoch
    resumed = _take(TrainStream(cfg, start_batch=5), 3)
    assert all(_same(a, b) for a, b in zip(full[5:], resumed, strict=True))


def test_all_shards_broken_ends_the_stream(index, tmp_path, monkeypatch):
    path = _copy(index, tmp_path / "garbage")
    for tar in path.parent.glob("train-*.tar"):
        tar.write_bytes(b"\x01not a tar" * (tar.stat().st_size // 10) + b"\x01" * (tar.stat().st_size % 10))
    monkeypatch.setattr(data, "_MAX_BAD_IN_A_ROW", 5)
    with pytest.raises(RuntimeError, match="6 shards in a row gave no sample"):
        _take(TrainStream(_cfg(path)), 1)


def test_cache_dir_leaves_local_shards_in_place(index, tmp_path):
    cached = _cfg(index, cache_dir=str(tmp_path / "cache"))
    assert all(_same(a, b) for a, b in zip(_take(TrainStream(cached), 3), _take(TrainStream(_cfg(index)), 3)))
    assert not any((tmp_path / "cache").iterdir())  # local shards are read where they are: nothing copied


def test_memory_url_lake_streams_like_local(index):
    from upath import UPath

    dest = UPath("memory://loader-test/shards/d")
    for f in sorted(index.parent.iterdir()):
        (dest / f.name).write_bytes(f.read_bytes())
    try:
        remote = _cfg(str(dest / "index.json"), shard_sampling="split", read_block_bytes=1000)
        assert validate_indexes(remote) == [str(dest / Path(u).name) for u in shard_urls([index], "train")]
        local = _take(TrainStream(_cfg(index, shard_sampling="split")), 6)
        assert all(_same(a, b) for a, b in zip(_take(TrainStream(remote), 6), local, strict=True))
    finally:
        dest.fs.rm("/loader-test", recursive=True)
