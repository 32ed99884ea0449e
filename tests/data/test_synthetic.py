"""Tests for the synthetic sticker-drop generator (data/synthetic.py)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest

from data import atomic, synthetic
from data.media import MediaFormat, decode_sticker
from data.rejects import RejectReason, StickerRejected
from data.synthetic import (
    CAPTIONS_FILE,
    MOTION_WORDS,
    MotionKind,
    SubjectKind,
    SyntheticConfig,
    generate_sticker,
    make_drop,
)
from data.synthetic_faults import FAULT_KINDS, inject_faults

# Small canvases keep the suite fast; frame counts and formats follow the default distributions.
SMALL = SyntheticConfig(min_size=48, max_size=96)
ALL_FORMATS = {MediaFormat.GIF, MediaFormat.WEBP, MediaFormat.APNG, MediaFormat.MP4, MediaFormat.WEBM}


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in (path / CAPTIONS_FILE).read_bytes().splitlines()]


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.fixture(scope="module")
def drop(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("drops") / "d0"
    make_drop(str(out), n=24, seed=0, cfg=SMALL, progress=False)
    return out


def test_same_seed_is_byte_identical_and_index_is_independent_of_n(drop: Path, tmp_path: Path):
    again = tmp_path / "again"
    make_drop(str(again), n=24, seed=0, cfg=SMALL, progress=False)
    assert _files(again) == _files(drop)  # media and captions.jsonl, byte for byte

    shorter = tmp_path / "shorter"
    make_drop(f"file://{shorter}", n=10, seed=0, cfg=SMALL, progress=False)
    full = _files(drop)
    for name, data in _files(shorter).items():
        if name != CAPTIONS_FILE:
            assert full[name] == data, name
    assert _rows(shorter) == _rows(drop)[:10]


def test_ground_truth_is_deterministic():
    for i in (0, 5, 8):
        a, b = generate_sticker(0, i, SMALL), generate_sticker(0, i, SMALL)
        assert (a.caption, a.fmt, a.durations_ms, a.motion, a.subject) == (
            b.caption,
            b.fmt,
            b.durations_ms,
            b.motion,
            b.subject,
        )
        assert all(np.array_equal(x, y) for x, y in zip(a.frames_rgba, b.frames_rgba, strict=True))


def test_mp4_bytes_are_deterministic():
    """Same frames -> same MP4 bytes, checked on its own so a failure points at the encoder
    (data.media_encode.encode_video): libx264 once gave run-to-run different bitstreams for some sizes."""
    videos = [s for s in (generate_sticker(0, i, SMALL) for i in range(24)) if s.fmt is MediaFormat.MP4]
    assert videos
    for s in videos:
        assert len({s.encode() for _ in range(6)}) == 1, s.frames_rgba[0].shape


def test_different_seed_differs(drop: Path, tmp_path: Path):
    other = tmp_path / "other"
    make_drop(str(other), n=24, seed=1, cfg=SMALL, progress=False)
    assert {r["caption"] for r in _rows(other)} != {r["caption"] for r in _rows(drop)}
    assert set(_files(other).values()).isdisjoint(v for k, v in _files(drop).items() if k != CAPTIONS_FILE)
    a, b = generate_sticker(0, 3, SMALL), generate_sticker(1, 3, SMALL)
    assert a.id != b.id and not (
        a.frames_rgba[0].shape == b.frames_rgba[0].shape
        and np.array_equal(a.frames_rgba[0], b.frames_rgba[0])
    )


def test_spawn_workers_give_the_same_bytes(drop: Path, tmp_path: Path):
    par = tmp_path / "par"
    summary = make_drop(str(par), n=8, seed=0, cfg=SMALL, workers=2, progress=False)
    full = _files(drop)
    got = _files(par)
    assert all(full[name] == data for name, data in got.items() if name != CAPTIONS_FILE)
    assert _rows(par) == _rows(drop)[:8]
    assert summary.n == 8 and sum(summary.counts.values()) == 8


def test_frame_counts_are_long_tailed():
    counts = np.array([generate_sticker(0, i, SMALL).n_frames for i in range(300)])
    assert counts.min() >= 2 and counts.max() <= SMALL.max_frames
    assert np.median(counts) <= 8  # most stickers are short (paper Fig. 2)...
    assert (counts >= 30).sum() >= 1  # ...with a long tail


def test_every_format_subject_and_motion_appears():
    stickers = [generate_sticker(0, i, SMALL) for i in range(60)]
    assert {s.fmt for s in stickers} >= ALL_FORMATS
    assert len({s.subject for s in stickers}) >= 6
    assert len({s.motion for s in stickers}) >= 6
    assert any(s.transparent for s in stickers) and any(not s.transparent for s in stickers)
    assert not any(s.transparent for s in stickers if s.fmt in synthetic.VIDEO_FORMATS)


def test_ground_truth_is_well_formed():
    for i in range(40):
        s = generate_sticker(7, i, SMALL)
        assert len(s.frames_rgba) == len(s.durations_ms) >= 2
        h, w, c = s.frames_rgba[0].shape
        assert c == 4 and all(f.shape == (h, w, 4) and f.dtype == np.uint8 for f in s.frames_rgba)
        assert all(d > 0 and d % 10 == 0 for d in s.durations_ms)
        assert set(np.unique(s.frames_rgba[0][..., 3])) <= {0, 255}
        assert (np.any(s.frames_rgba[0][..., 3] == 0)) == s.transparent
        assert isinstance(s.motion, MotionKind) and isinstance(s.subject, SubjectKind)
        if s.fmt in synthetic.VIDEO_FORMATS:
            assert len(set(s.durations_ms)) == 1 and w % 2 == 0 and h % 2 == 0
        else:  # encoders merge equal consecutive frames, so the ground truth never has any
            assert not any(
                np.array_equal(a, b) for a, b in zip(s.frames_rgba, s.frames_rgba[1:], strict=False)
            )


def test_captions_mention_motion_and_text():
    for i in range(60):
        s = generate_sticker(0, i, SMALL)
        cap = s.caption.lower()
        assert cap.strip() and s.colour in cap
        for part in s.motion.parts:
            assert any(word in cap for word in MOTION_WORDS[part]), (s.motion, s.caption)
        if s.text:
            assert f"'{s.text.lower()}'" in cap


def test_files_decode_to_ground_truth(drop: Path):
    rows = _rows(drop)
    assert [r["id"] for r in rows] == [synthetic.sticker_id(0, i) for i in range(24)]
    seen = set()
    for i, row in enumerate(rows):
        truth = generate_sticker(0, i, SMALL)
        assert row["file"] == truth.filename and row["caption"] == truth.caption
        dec = decode_sticker((drop / row["file"]).read_bytes(), size=32)
        seen.add(dec.format)
        assert dec.format == truth.fmt
        assert dec.frames.shape == (truth.n_frames, 32, 32, 3)
        assert (dec.width, dec.height) == truth.frames_rgba[0].shape[1::-1]
        if truth.fmt in synthetic.VIDEO_FORMATS:
            assert dec.fps == pytest.approx(truth.fps, rel=1e-3)
        else:
            assert dec.durations_ms == truth.durations_ms
            assert dec.has_alpha == truth.transparent
    assert seen == ALL_FORMATS


def test_gif_pixels_are_exact(drop: Path):
    """Aliased flat-colour drawing means GIF's palette loses nothing: decoded pixels equal ground truth."""
    truth = next(s for s in (generate_sticker(0, i, SMALL) for i in range(24)) if s.fmt is MediaFormat.GIF)
    h, w = truth.frames_rgba[0].shape[:2]
    assert h == w, "the seed-0 drop's first GIF is square (decode_sticker fits to a square canvas)"
    dec = decode_sticker((drop / truth.filename).read_bytes(), size=w, background=(0, 0, 0))
    for got, want in zip(dec.frames, truth.frames_rgba, strict=True):
        rgb = (want[..., :3].astype(np.uint16) * (want[..., 3:] // 255)).astype(np.uint8)  # on black
        assert np.array_equal(got, rgb)


def test_summary(drop: Path, tmp_path: Path):
    s = make_drop(str(tmp_path / "s"), n=12, seed=0, cfg=SMALL, progress=False)
    assert s.n == 12 and len(s.n_frames) == 12 and sum(s.frame_histogram.values()) == 12
    assert sum(s.counts.values()) == 12
    assert s.total_bytes == sum(len(v) for v in _files(tmp_path / "s").values())


def test_memory_filesystem_drop():
    url = f"memory://rdtf-synth-{uuid.uuid4().hex}/drop"
    fs, root = fsspec.core.url_to_fs(url)
    try:
        summary = make_drop(url, n=5, seed=3, cfg=SMALL, progress=False)
        rows = [json.loads(line) for line in fs.cat_file(f"{root}/{CAPTIONS_FILE}").splitlines()]
        assert len(rows) == 5 == summary.n
        for row in rows:
            data = fs.cat_file(f"{root}/{row['file']}")
            truth = generate_sticker(3, int(row["id"].rsplit("-", 1)[1]), SMALL)
            assert decode_sticker(data, size=16).frames.shape[0] == truth.n_frames
            assert row["caption"] == truth.caption
        faults = inject_faults(url, kinds=["zero_byte", "duplicate_content"])
        assert fs.cat_file(f"{root}/{faults['zero_byte'][0]}.gif") == b""
    finally:
        fs.rm(root.rsplit("/", 1)[0], recursive=True)


def test_captions_are_published_last_via_atomic_rename(tmp_path: Path, monkeypatch):
    out = tmp_path / "atomic"
    seen: list[tuple[str, str, list[str]]] = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((str(src), str(dst), sorted(os.listdir(out))))
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    make_drop(str(out), n=6, seed=0, cfg=SMALL, progress=False)
    assert len(seen) == 1
    src, dst, listing = seen[0]
    assert dst == str(out / CAPTIONS_FILE) and Path(src).parent == out and src != dst
    assert CAPTIONS_FILE not in listing  # not visible before the rename...
    media = [name for name in listing if not name.startswith(".")]
    assert len(media) == 6  # ...and every media file was already there
    assert sorted(os.listdir(out)) == sorted([*media, CAPTIONS_FILE])  # no temp file left behind


def test_failed_publish_leaves_no_manifest_and_no_temp(tmp_path: Path, monkeypatch):
    out = tmp_path / "failing"
    make_drop(str(out), n=3, seed=0, cfg=SMALL, progress=False)

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        make_drop(str(out), n=3, seed=0, cfg=SMALL, progress=False)  # re-run un-publishes first
    assert not (out / CAPTIONS_FILE).exists()
    assert not [p for p in os.listdir(out) if p.startswith(".")]


def _raw_lines(path: Path) -> list[bytes]:
    return (path / CAPTIONS_FILE).read_bytes().splitlines()


def _reason(data: bytes) -> RejectReason | None:
    try:
        decode_sticker(data, size=16)
    except StickerRejected as e:
        return e.reason
    return None


def test_inject_faults_produces_every_kind(tmp_path: Path):
    out = tmp_path / "faulty"
    make_drop(str(out), n=6, seed=0, cfg=SMALL, progress=False)
    before = _raw_lines(out)
    faults = inject_faults(str(out), seed=0)
    assert set(faults) == set(FAULT_KINDS) and all(faults.values())
    lines = _raw_lines(out)
    assert lines[: len(before)] == before  # existing rows are kept verbatim
    assert not [p for p in os.listdir(out) if p.startswith(".")]

    rows: dict[str, list[dict]] = {}
    raw_by_id: dict[str, bytes] = {}
    bad = []
    for line in lines:
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            bad.append(line)
            continue
        rows.setdefault(row["id"], []).append(row)
    for line in lines:
        for kind_ids in faults.values():
            for sid in kind_ids:
                if sid.encode() in line:
                    raw_by_id[sid] = line

    def file_of(kind: str) -> bytes:
        return (out / rows[faults[kind][0]][0]["file"]).read_bytes()

    assert file_of("zero_byte") == b""
    assert _reason(file_of("zero_byte")) is RejectReason.EMPTY_FILE
    assert _reason(file_of("truncated")) is RejectReason.DECODE_ERROR
    assert file_of("truncated")[:6] == b"GIF89a"
    assert _reason(file_of("wrong_magic")) is RejectReason.UNSUPPORTED_FORMAT
    bomb = file_of("bomb")
    assert len(bomb) < 200 and int.from_bytes(bomb[6:8], "little") == 30000 == int.from_bytes(
        bomb[8:10], "little"
    )
    assert _reason(bomb) is RejectReason.PIXEL_LIMIT
    assert _reason(file_of("single_frame")) is RejectReason.TOO_FEW_FRAMES
    long = decode_sticker(file_of("long"), size=16)
    assert long.frames.shape[0] == 300  # valid: ingest must keep it
    assert rows[faults["missing_caption"][0]][0]["caption"] is None
    assert _reason(file_of("missing_caption")) is None
    non_utf8 = raw_by_id[faults["non_utf8_caption"][0]]
    with pytest.raises(UnicodeDecodeError):
        non_utf8.decode("utf-8")
    assert json.loads(non_utf8.decode("latin-1"))["caption"].startswith("caf\u00e9")
    assert len(rows[faults["duplicate_id"][0]]) == 2
    dup = rows[faults["duplicate_content"][0]][0]
    originals = {r[0]["file"] for sid, r in rows.items() if sid.startswith("stk-")}
    assert any((out / f).read_bytes() == (out / dup["file"]).read_bytes() for f in originals)
    assert {rows[sid][0]["file"] for sid in faults["path_escape"]} == {"../outside.gif", "/etc/passwd"}
    assert not (tmp_path / "outside.gif").exists()
    exts = {rows[sid][0]["file"].rsplit(".", 1)[1] for sid in faults["unsupported"]}
    assert exts == {"bmp", "txt"}
    assert all(
        _reason((out / rows[sid][0]["file"]).read_bytes()) is RejectReason.UNSUPPORTED_FORMAT
        for sid in faults["unsupported"]
    )
    assert not (out / rows[faults["missing_file"][0]][0]["file"]).exists()
    assert len(bad) == 2  # the non-UTF-8 row and the bad row
    assert any(faults["bad_row"][0].encode() in line for line in bad)


def test_inject_faults_subset_and_unknown_kind(tmp_path: Path):
    out = tmp_path / "subset"
    make_drop(str(out), n=2, seed=0, cfg=SMALL, progress=False)
    assert set(inject_faults(str(out), seed=5, kinds=["bomb", "long"])) == {"bomb", "long"}
    with pytest.raises(ValueError, match="unknown fault"):
        inject_faults(str(out), kinds=["nope"])
