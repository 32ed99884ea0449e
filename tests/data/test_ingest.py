"""Ingest engine on real synthetic drops: outputs, every bad-input class, determinism, atomicity."""

from __future__ import annotations

import hashlib
import shutil
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pyarrow.parquet as pq
import pytest

from data import lake, publish
from data.drops import CaptionPolicy
from data.ingest import IngestSettings, ingest_drop
from data.lake import Lake
from data.media import DecodeLimits, decode_sticker
from data.rejects import RejectReason
from tests.conftest import cpu_workers

SIZE = 64

EXPECTED_REJECT = {
    "zero_byte": RejectReason.EMPTY_FILE,
    "truncated": RejectReason.DECODE_ERROR,
    "wrong_magic": RejectReason.UNSUPPORTED_FORMAT,
    "bomb": RejectReason.PIXEL_LIMIT,
    "single_frame": RejectReason.TOO_FEW_FRAMES,
    "duplicate_content": RejectReason.DUPLICATE_CONTENT,
    "unsupported": RejectReason.UNSUPPORTED_FORMAT,
    "missing_file": RejectReason.MISSING_FILE,
}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def faulty_ingest(faulty_drop, tmp_path_factory):
    drop, faults = faulty_drop
    part = tmp_path_factory.mktemp("lake") / "ingest" / drop.name
    report = ingest_drop(str(drop), part, IngestSettings(size=SIZE, workers=cpu_workers()), progress=False)
    out = publish.current(part)
    assert Path(report.out_dir) == out
    return drop, faults, out, report


def test_manifest_schema_and_frames(faulty_ingest):
    drop, faults, out, report = faulty_ingest
    man = pq.read_table(out / "manifest.parquet")
    assert man.schema.equals(lake.MANIFEST_SCHEMA)
    quar = pq.read_table(out / "quarantine.parquet")
    assert quar.schema.equals(lake.QUARANTINE_SCHEMA)
    df = man.to_pandas()
    assert report.n_ingested == len(df) and report.n_rejected == quar.num_rows
    assert report.n_rows == report.n_ingested + report.n_rejected
    assert (df.frame_size == SIZE).all() and (df.n_frames >= 2).all()
    assert set(df.format) >= {"gif", "webp", "apng", "mp4", "webm"}
    assert df.hash.is_unique and df.key.is_unique
    assert all(len(d) == n for d, n in zip(df.durations_ms, df.n_frames))
    # frames in the lake equal a fresh decode of the source (nothing is decoded twice downstream)
    frames = {k: (f, d) for k, f, d in Lake(out.parents[3]).sticker_frames(drop.name)}  # lake/ingest/<drop>/versions/<v>
    assert set(frames) == set(df.key)
    for rec in df.head(6).itertuples():
        ref = decode_sticker((drop / rec.file).read_bytes(), size=SIZE)
        got, durs = frames[rec.key]
        assert got.shape == (rec.n_frames, SIZE, SIZE, 3) and got.dtype == np.uint8
        np.testing.assert_array_equal(got, ref.frames)
        assert durs == list(rec.durations_ms) == list(ref.durations_ms)


def test_every_bad_input_class_is_quarantined_with_its_reason(faulty_ingest):
    _, faults, out, report = faulty_ingest
    quar = pq.read_table(out / "quarantine.parquet").to_pandas()
    man = pq.read_table(out / "manifest.parquet").to_pandas()
    for kind, reason in EXPECTED_REJECT.items():
        ids = faults[kind]
        assert ids, kind
        got = set(quar[quar.id.isin(ids)].reason)
        assert got == {reason.value}, (kind, got, quar[quar.id.isin(ids)].message.tolist())
        assert not man.id.isin(ids).any(), kind
    # row-level rejects: path escapes and duplicate ids carry their row numbers
    assert (quar.reason == RejectReason.PATH_ESCAPE.value).sum() >= 2
    assert (quar.reason == RejectReason.DUPLICATE_ID.value).sum() >= 1
    assert (quar.reason == RejectReason.BAD_CAPTION_ROW.value).sum() >= 1
    assert (quar.message.str.len() > 0).all()
    assert report.rejects_by_reason == quar.reason.value_counts().sort_index().to_dict()


def test_good_but_unusual_stickers_are_kept(faulty_ingest):
    _, faults, out, _ = faulty_ingest
    man = pq.read_table(out / "manifest.parquet").to_pandas().set_index("id")
    (long_id,) = faults["long"]
    assert man.loc[long_id, "n_frames"] == 300
    (mc,) = faults["missing_caption"]
    assert man.loc[mc, "caption_status"] == "missing" and man.loc[mc, "caption"] == ""
    (nu,) = faults["non_utf8_caption"]
    assert man.loc[nu, "caption_status"] == "invalid_utf8"
    # the original of a duplicate id / duplicate content is kept
    assert man.has_alpha.any()


def test_rerun_is_byte_identical_and_worker_count_independent(faulty_drop, tmp_path):
    drop, _ = faulty_drop
    a, b = tmp_path / "a" / drop.name, tmp_path / "b" / drop.name
    ingest_drop(str(drop), a, IngestSettings(size=SIZE, workers=1), progress=False)
    ingest_drop(str(drop), b, IngestSettings(size=SIZE, workers=cpu_workers()), progress=False)
    first = _tree_digest(publish.current(a))
    assert first == _tree_digest(publish.current(b))
    v1 = publish.current(a)
    ingest_drop(str(drop), a, IngestSettings(size=SIZE, workers=1), progress=False)  # re-materialize
    assert publish.current(a) != v1 and _tree_digest(publish.current(a)) == first
    ingest_drop(str(drop), a, IngestSettings(size=SIZE, workers=1), progress=False)
    # only the current and the previous version are kept; no temp pointer, nothing beside the partition
    assert len(list((a / publish.VERSIONS).iterdir())) == 2 and not v1.exists()
    assert sorted(p.name for p in a.iterdir()) == sorted([publish.LOCK, publish.POINTER, publish.VERSIONS])
    assert [p.name for p in a.parent.iterdir()] == [drop.name]


def test_small_parts_and_limits(clean_drop, tmp_path):
    out = Lake(tmp_path).partition(lake.Stage.INGEST, clean_drop.name)
    settings = IngestSettings(size=32, workers=1, part_max_bytes=32 * 32 * 3 * 20,
                              limits=DecodeLimits(max_frames=10))
    report = ingest_drop(str(clean_drop), out, settings, progress=False)
    assert report.n_parts > 1
    man = Lake(tmp_path).manifest(clean_drop.name)
    assert (man.n_frames <= 10).all()
    assert set(Lake(tmp_path).quarantine(clean_drop.name).reason) <= {RejectReason.TOO_MANY_FRAMES.value}
    assert report.rejects_by_reason.get("too_many_frames", 0) == report.n_rejected > 0
    # every sticker's frames live in the part named by the manifest
    for rec in man.itertuples():
        keys = set(pq.read_table(Lake(tmp_path).ingest(clean_drop.name) / rec.frames_part, columns=["key"])["key"].to_pylist())
        assert rec.key in keys


def test_caption_quarantine_policy(faulty_drop, tmp_path):
    drop, faults = faulty_drop
    report = ingest_drop(str(drop), tmp_path / drop.name,
                         IngestSettings(size=32, workers=1, caption_policy=CaptionPolicy.QUARANTINE), progress=False)
    assert report.rejects_by_reason["missing_caption"] >= 1
    assert report.rejects_by_reason["caption_not_utf8"] >= 1


def test_memory_filesystem_drop(clean_drop, tmp_path):
    root = f"memory://drops-{uuid.uuid4().hex[:6]}/mem-drop"
    fs = fsspec.filesystem("memory")
    for p in clean_drop.iterdir():
        fs.pipe(f"{root}/{p.name}", p.read_bytes())
    report = ingest_drop(root, tmp_path / "mem-drop", IngestSettings(size=32, workers=2), progress=False)
    assert report.n_ingested == 24 and report.n_rejected == 0 and report.workers == 1


def test_missing_drop_raises_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="caption table"):
        ingest_drop(str(tmp_path / "nope"), tmp_path / "out", IngestSettings(workers=1), progress=False)


def test_failed_run_leaves_previous_output_intact(clean_drop, tmp_path, monkeypatch):
    out = tmp_path / clean_drop.name
    ingest_drop(str(clean_drop), out, IngestSettings(size=32, workers=1), progress=False)
    good = publish.current(out)
    before = _tree_digest(good)

    def boom(*a, **k):
        raise KeyboardInterrupt("killed just before the commit")

    monkeypatch.setattr(publish, "_commit", boom)
    with pytest.raises(KeyboardInterrupt):
        ingest_drop(str(clean_drop), out, IngestSettings(size=32, workers=1), progress=False)
    assert publish.current(out) == good and _tree_digest(good) == before
    assert [p.name for p in (out / publish.VERSIONS).iterdir()] == [good.name]  # the unfinished version is gone


def test_settings_validation():
    with pytest.raises(ValueError, match="size"):
        IngestSettings(size=4)
    with pytest.raises(ValueError, match="background"):
        IngestSettings(background=(0, 0, 300))
    with pytest.raises(ValueError, match="workers"):
        IngestSettings(workers=-1)


def test_dead_writers_version_is_collected_and_nothing_else(clean_drop, tmp_path):
    out = tmp_path / clean_drop.name
    orphan = out / publish.VERSIONS / publish._new_version()  # what a kill -9 before the commit leaves
    orphan.mkdir(parents=True)
    (orphan / "junk").write_text("x")
    foreign = [tmp_path / f".staging-{clean_drop.name}-deadbeef", out / publish.VERSIONS / "keep-me"]
    for p in foreign:
        p.mkdir(parents=True)
    ingest_drop(str(clean_drop), out, IngestSettings(size=32, workers=1), progress=False)
    assert not orphan.exists()
    assert all(p.exists() for p in foreign)  # not in the exact version format: not ours to delete
    shutil.rmtree(out)
