"""Drop contract: caption tables (jsonl/csv/parquet), path safety, readiness, fsspec backends."""

from __future__ import annotations

import json
import uuid

import fsspec
import pandas as pd
import pytest

from data.drops import (
    CaptionPolicy,
    CaptionStatus,
    find_caption_file,
    list_ready_drops,
    read_caption_table,
    safe_key,
    safe_member_path,
)
from data.rejects import RejectReason


@pytest.mark.parametrize("good,expected", [("a.gif", "a.gif"), ("sub/dir/b.webp", "sub/dir/b.webp"), ("./c.png", "c.png")])
def test_safe_member_path_accepts_relative(good, expected):
    assert safe_member_path(good) == expected


@pytest.mark.parametrize("bad", ["../x.gif", "a/../../x.gif", "/etc/passwd", "s3://bucket/x.gif", "file:///etc/passwd",
                                 "C:\\x.gif", "", "  ", "a/..", "..", "x\x00.gif"])
def test_safe_member_path_rejects_escapes(bad):
    with pytest.raises(ValueError):
        safe_member_path(bad)


def test_safe_key_is_stable_and_safe():
    assert safe_key("stk-0_1") == "stk-0_1"
    k = safe_key("weird id/with.dots")
    assert k == safe_key("weird id/with.dots") and "." not in k and "/" not in k
    assert safe_key("a.b") != safe_key("a_b")


def _write(fs, path, data: bytes):
    with fs.open(path, "wb") as fh:
        fh.write(data)


def test_jsonl_rows_and_rejects(tmp_path):
    drop = tmp_path / "d1"
    drop.mkdir()
    lines = [
        json.dumps({"id": "a", "file": "a.gif", "caption": "a cat"}).encode(),
        b"{not json",
        json.dumps({"id": "b", "file": "../b.gif", "caption": "x"}).encode(),
        json.dumps({"id": "a", "file": "a2.gif", "caption": "dup"}).encode(),
        json.dumps({"id": "c", "file": "c.gif", "caption": None}).encode(),
        b'{"id": "d", "file": "d.gif", "caption": "caf\xe9"}',  # latin-1 bytes, not UTF-8
        json.dumps({"file": "e.gif", "caption": "no id"}).encode(),
        json.dumps({"id": 7, "file": "seven.gif", "caption": "int id"}).encode(),
        b"",
    ]
    (drop / "captions.jsonl").write_bytes(b"\n".join(lines))
    rows, rejects = read_caption_table(str(drop))
    assert [r.id for r in rows] == ["a", "c", "d", "7"]
    by_id = {r.id: r for r in rows}
    assert by_id["a"].caption_status is CaptionStatus.OK and by_id["a"].row == 1
    assert by_id["c"].caption_status is CaptionStatus.MISSING and by_id["c"].caption == ""
    assert by_id["d"].caption_status is CaptionStatus.INVALID_UTF8 and by_id["d"].caption == ""
    reasons = sorted((r.row, r.reason) for r in rejects)
    assert reasons == [(2, RejectReason.BAD_CAPTION_ROW), (3, RejectReason.PATH_ESCAPE),
                       (4, RejectReason.DUPLICATE_ID), (7, RejectReason.BAD_CAPTION_ROW)]

    rows_q, rejects_q = read_caption_table(str(drop), CaptionPolicy.QUARANTINE)
    assert [r.id for r in rows_q] == ["a", "7"]
    assert {r.reason for r in rejects_q} >= {RejectReason.MISSING_CAPTION, RejectReason.CAPTION_NOT_UTF8}


def test_csv_and_parquet_tables(tmp_path):
    df = pd.DataFrame({"id": ["x", "y"], "file": ["x.gif", "y.webp"], "caption": ["one, with comma", ""]})
    (tmp_path / "csvdrop").mkdir()
    df.to_csv(tmp_path / "csvdrop" / "captions.csv", index=False)
    rows, rejects = read_caption_table(str(tmp_path / "csvdrop"))
    assert [(r.id, r.caption, r.caption_status) for r in rows] == [
        ("x", "one, with comma", CaptionStatus.OK), ("y", "", CaptionStatus.MISSING)]
    assert rows[0].row == 2 and not rejects

    (tmp_path / "pqdrop").mkdir()
    df.to_parquet(tmp_path / "pqdrop" / "captions.parquet")
    rows, rejects = read_caption_table(str(tmp_path / "pqdrop"))
    assert [r.id for r in rows] == ["x", "y"] and not rejects


def test_malformed_csv_is_one_reject_not_a_crash(tmp_path):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "captions.csv").write_bytes(b'id,file,caption\n"unterminated,x.gif,cap\n')
    rows, rejects = read_caption_table(str(tmp_path / "bad"))
    assert rows == [] and len(rejects) == 1 and rejects[0].reason is RejectReason.BAD_CAPTION_ROW


def test_not_ready_without_caption_table(tmp_path):
    (tmp_path / "pending").mkdir()
    (tmp_path / "pending" / "a.gif").write_bytes(b"GIF89a")
    assert find_caption_file(str(tmp_path / "pending")) is None
    with pytest.raises(FileNotFoundError, match="no caption table"):
        read_caption_table(str(tmp_path / "pending"))


def test_list_ready_drops_over_memory_fs():
    root = f"memory://drops-{uuid.uuid4().hex[:6]}"
    fs = fsspec.filesystem("memory")
    _write(fs, f"{root}/d2/captions.csv", b"id,file,caption\n")
    _write(fs, f"{root}/d1/captions.jsonl", b"")
    _write(fs, f"{root}/pending/a.gif", b"GIF89a")
    _write(fs, f"{root}/bad name!/captions.jsonl", b"")
    assert list_ready_drops(root) == ["d1", "d2"]
    assert list_ready_drops(f"{root}/does-not-exist") == []
    assert find_caption_file(f"{root}/d1").endswith("d1/captions.jsonl")
