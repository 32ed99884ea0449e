"""Training shards: round trips, determinism, rollover, atomicity, verification, input checks."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest

from data.shard_reader import make_dataset
from data.shards import (
    FrameEncoding,
    ShardInfo,
    ShardSample,
    decode_sample,
    frames_per_entry,
    read_index,
    shard_urls,
    verify_shards,
    write_index,
    write_shards,
)


def cartoon(n: int, size: int, seed: int) -> np.ndarray:
    """Flat background + outlined box drifting a pixel per frame: (n, size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    bg, fg = rng.integers(0, 256, (2, 3), dtype=np.uint8)
    frames = np.empty((n, size, size, 3), np.uint8)
    frames[:] = bg
    for t in range(n):
        y, x = size // 4 + t % (size // 4), size // 4
        frames[t, y : y + size // 3, x : x + size // 3] = 20  # outline
        frames[t, y + 2 : y + size // 3 - 2, x + 2 : x + size // 3 - 2] = fg
    return frames


def make_samples(n: int, size: int = 32, prefix: str = "s", seed: int = 0) -> list[ShardSample]:
    out = []
    for i in range(n):
        f = 2 + (i * 3) % 7
        key = f"{prefix}{i:04d}"
        meta = {
            "id": key,
            "drop_id": "drop-a",
            "durations_ms": [100] * f,
            "fps": np.float32(10.0),  # numpy scalars must be stored as plain JSON
            "reps": {"3": [0, 1, f - 1]},
            "semantic_cluster": np.int64(i % 4),
            "split": "train",
        }
        out.append(ShardSample(key, cartoon(f, size, seed + i), f"a sticker number {i} \u2764", meta))
    return out


def expected_meta(s: ShardSample, enc: FrameEncoding) -> dict:
    plain = json.loads(json.dumps(s.meta, default=lambda o: o.item()))
    return {**plain, "n_frames": s.frames.shape[0], "frame_size": s.frames.shape[1], "encoding": enc.value}


def read_all(urls: list[str], **kw) -> list[dict]:
    return list(make_dataset(urls, **kw))


@pytest.mark.parametrize("enc", list(FrameEncoding))
def test_round_trip_each_encoding(tmp_path: Path, enc: FrameEncoding) -> None:
    samples = make_samples(7)
    infos = write_shards(samples, tmp_path, "train", encoding=enc, max_count=3)
    write_index(infos, tmp_path)
    got = read_all(shard_urls([tmp_path], "train"))
    assert [g["key"] for g in got] == [s.key for s in samples]
    for g, s in zip(got, samples, strict=True):
        assert g["frames"].dtype == np.uint8 and np.array_equal(g["frames"], s.frames)
        assert g["caption"] == s.caption
        assert g["meta"] == expected_meta(s, enc)
    assert verify_shards(tmp_path / "index.json") == []


@pytest.mark.parametrize("enc", [FrameEncoding.WEBP, FrameEncoding.PNG])
def test_long_clip_spans_several_strip_members(tmp_path: Path, enc: FrameEncoding) -> None:
    size = 256
    n = frames_per_entry(size) + 2  # 63 frames fit one WebP strip at 256 px; 65 need two members
    sample = ShardSample("long", cartoon(n, size, 1), "long clip", {})
    (info,) = write_shards([sample], tmp_path, "train", encoding=enc)
    with tarfile.open(tmp_path / info.name) as tar:
        names = tar.getnames()
    assert names == [f"long.frames.000.{enc.value}", f"long.frames.001.{enc.value}", "long.json", "long.txt"]
    (got,) = read_all([str(tmp_path / info.name)])
    assert np.array_equal(got["frames"], sample.frames)


def test_rewrite_is_byte_identical(tmp_path: Path) -> None:
    a = write_shards(make_samples(6), tmp_path / "a", "train", max_count=4)
    b = write_shards(make_samples(6), tmp_path / "b", "train", max_count=4)
    assert a == b and len(a) == 2
    for info in a:
        assert (tmp_path / "a" / info.name).read_bytes() == (tmp_path / "b" / info.name).read_bytes()
    with tarfile.open(tmp_path / "a" / a[0].name) as tar:
        m = tar.getmembers()[0]
        assert (m.mtime, m.uname, m.gname, m.uid, m.gid, m.mode) == (0, "rdtf", "rdtf", 0, 0, 0o444)


def test_rollover_by_count_and_bytes_and_index(tmp_path: Path) -> None:
    samples, samples_64 = make_samples(10), make_samples(10, size=64)
    infos = write_shards(samples, tmp_path / "c", "train", max_count=4)
    assert [i.count for i in infos] == [4, 4, 2]
    assert [(i.keys_first, i.keys_last) for i in infos] == [
        ("s0000", "s0003"),
        ("s0004", "s0007"),
        ("s0008", "s0009"),
    ]

    # max_bytes: NPY samples of 2-8 64x64 frames are 25-100 KB; no multi-sample shard exceeds the cap.
    cap = 200_000
    by_size = write_shards(samples_64, tmp_path / "d", "train", encoding=FrameEncoding.NPY, max_bytes=cap)
    assert len(by_size) >= 3 and sum(i.count for i in by_size) == 10
    assert any(i.count > 1 for i in by_size)
    for info in by_size:
        path = tmp_path / "d" / info.name
        assert info.bytes == path.stat().st_size
        assert info.count == 1 or info.bytes <= cap
        assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()

    test = write_shards(make_samples(3, prefix="t"), tmp_path / "d", "test")
    index = read_index(write_index(by_size + test, tmp_path / "d", extra={"drop_id": "drop-a"}))
    assert index["version"] == 1 and index["drop_id"] == "drop-a"
    assert index["counts"] == {"train": 10, "test": 3}
    assert index["brace"] == {
        "train": f"train-{{000000..{len(by_size) - 1:06d}}}.tar",
        "test": "test-{000000..000000}.tar",
    }
    assert [s["name"] for s in index["shards"]] == ["test-000000.tar"] + [i.name for i in by_size]
    assert verify_shards(tmp_path / "d") == []


def test_tar_binary_lists_members(tmp_path: Path) -> None:
    (info,) = write_shards(make_samples(2), tmp_path, "train", encoding=FrameEncoding.NPY)
    out = subprocess.run(["tar", "tf", str(tmp_path / info.name)], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "s0000.frames.npy",
        "s0000.json",
        "s0000.txt",
        "s0001.frames.npy",
        "s0001.json",
        "s0001.txt",
    ]


def test_leftover_temp_and_stale_shards_are_cleaned(tmp_path: Path) -> None:
    (tmp_path / ".train-000000.tar.tmp").write_bytes(b"half a shard")  # a killed run
    (tmp_path / "train-000007.tar").write_bytes(b"tail of an older, longer run")
    infos = write_shards(make_samples(3), tmp_path, "train")
    write_index(infos, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json", "train-000000.tar"]
    assert shard_urls([tmp_path], "train") == [str((tmp_path / "train-000000.tar").resolve())]

    def dies_midway():
        yield from make_samples(5)
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        write_shards(dies_midway(), tmp_path / "k", "train", max_count=2)
    # Completed shards are renamed; the one being written is removed, never left as *.tar.
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["train-000000.tar", "train-000001.tar"]


def test_verify_detects_truncation_and_count_mismatch(tmp_path: Path) -> None:
    infos = write_shards(make_samples(6), tmp_path, "train", max_count=3)
    index = write_index(infos, tmp_path)
    assert verify_shards(index) == []

    first = tmp_path / infos[0].name
    data = first.read_bytes()
    first.write_bytes(data[: len(data) // 2])
    problems = verify_shards(index)
    assert any("train-000000.tar: size" in p for p in problems)
    assert any("sha256 mismatch" in p for p in problems)
    first.write_bytes(data)

    doc = json.loads(index.read_text())
    doc["shards"][1]["count"] = 4
    index.write_text(json.dumps(doc))
    problems = verify_shards(index)
    assert any("train-000001.tar: 3 samples, index says 4" in p for p in problems)
    assert any("counts['train']=6 but shards hold 7" in p for p in problems)

    (tmp_path / infos[1].name).unlink()
    assert "train-000001.tar: missing" in verify_shards(index)


@pytest.mark.parametrize(
    ("sample", "split", "message"),
    [
        (ShardSample("a.b", cartoon(2, 8, 0), "", {}), "train", "unsafe sample key"),
        (ShardSample("a/b", cartoon(2, 8, 0), "", {}), "train", "unsafe sample key"),
        (ShardSample("", cartoon(2, 8, 0), "", {}), "train", "unsafe sample key"),
        (ShardSample("x" * 81, cartoon(2, 8, 0), "", {}), "train", "unsafe sample key"),
        (ShardSample("ok", cartoon(2, 8, 0).astype(np.float32), "", {}), "train", "must be a uint8"),
        (ShardSample("ok", cartoon(2, 8, 0)[0], "", {}), "train", r"shape \(F>=1, S, S, 3\)"),
        (ShardSample("ok", np.zeros((2, 8, 9, 3), np.uint8), "", {}), "train", "shape"),
        (ShardSample("ok", np.zeros((2, 8, 8, 4), np.uint8), "", {}), "train", "shape"),
        (ShardSample("ok", cartoon(2, 8, 0), "", {"n_frames": 5}), "train", "contradicts frames"),
        (ShardSample("ok", cartoon(2, 8, 0), "", {"x": {1, 2}}), "train", "not JSON-serialisable"),
        (ShardSample("ok", cartoon(2, 8, 0), "", {}), "val", "unknown split 'val'"),
    ],
)
def test_bad_inputs_raise(tmp_path: Path, sample: ShardSample, split: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        write_shards([sample], tmp_path, split)
    assert not any(p.suffix in (".tar", ".tmp") for p in tmp_path.iterdir())


def test_duplicate_keys_and_bad_index_raise(tmp_path: Path) -> None:
    s = make_samples(1)[0]
    with pytest.raises(ValueError, match="duplicate sample key 's0000'"):
        write_shards([s, s], tmp_path, "train")
    gap = ShardInfo("train-000002.tar", "train", 1, 10, "0" * 64, "a", "a")
    with pytest.raises(ValueError, match="consecutively"):
        write_index([gap], tmp_path)
    with pytest.raises(ValueError, match="reserved"):
        write_index([], tmp_path, extra={"counts": 1})


def test_shard_urls_over_two_drops(tmp_path: Path) -> None:
    for drop, n in (("drop-b", 5), ("drop-a", 4)):
        infos = write_shards(
            make_samples(n, prefix=drop.replace("-", "")), tmp_path / drop, "train", max_count=2
        )
        infos += write_shards(make_samples(1, prefix=f"t{drop[-1]}"), tmp_path / drop, "test")
        write_index(infos, tmp_path / drop)
    # Order of the arguments and directory-vs-file spelling do not change the result.
    urls = shard_urls([tmp_path / "drop-b" / "index.json", tmp_path / "drop-a"], "train")
    assert urls == shard_urls([tmp_path / "drop-a", tmp_path / "drop-b"], "train")
    a, b = (tmp_path / "drop-a").resolve(), (tmp_path / "drop-b").resolve()
    assert urls == [str(a / f"train-00000{i}.tar") for i in range(2)] + [
        str(b / f"train-00000{i}.tar") for i in range(3)
    ]
    assert [Path(u).name for u in shard_urls([a, b], "test")] == ["test-000000.tar", "test-000000.tar"]
    assert len(read_all(urls)) == 9


def test_ddp_ranks_and_workers_partition_shards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.utils.data

    infos = write_shards(make_samples(8), tmp_path, "train", max_count=2)  # 4 shards
    write_index(infos, tmp_path)
    urls = shard_urls([tmp_path], "train")
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append([g["key"] for g in read_all(urls)])
    assert set(seen[0]).isdisjoint(seen[1]) and len(seen[0]) == len(seen[1]) == 4
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")

    loader = torch.utils.data.DataLoader(make_dataset(urls), batch_size=None, num_workers=2)
    keys = [s["key"] for s in loader]
    assert sorted(keys) == [f"s{i:04d}" for i in range(8)]


def test_shuffle_is_seeded_permutation(tmp_path: Path) -> None:
    infos = write_shards(make_samples(12), tmp_path, "train", max_count=3)
    urls = [str(tmp_path / i.name) for i in infos]
    ordered = [g["key"] for g in read_all(urls)]
    one = [g["key"] for g in read_all(urls, shuffle=6, seed=1)]
    again = [g["key"] for g in read_all(urls, shuffle=6, seed=1)]
    assert sorted(one) == ordered and one == again and one != ordered


def test_decode_sample_rejects_inconsistent_meta() -> None:
    members = {
        "__key__": "x",
        "json": json.dumps({"n_frames": 3, "frame_size": 8, "encoding": "npy"}).encode(),
    }
    buf = __import__("io").BytesIO()
    np.save(buf, cartoon(2, 8, 0))
    with pytest.raises(ValueError, match="meta says"):
        decode_sample({**members, "frames.npy": buf.getvalue()})


def test_benchmark_measure_smoke() -> None:
    from benchmarks.frame_encoding import measure

    rows = measure(n_frames=3, size=32)
    assert rows[0]["encoding"] == "npy" and {"webp-m4/strip", "png-1/frame"} <= {r["encoding"] for r in rows}
    assert all(r["bytes_per_frame"] > 0 and r["decode_ms"] >= 0 for r in rows)
