"""Symlinks and special files in a drop: only regular files inside the drop folder are ever read.

Each test is named after an observed defect: a symlink inside a local drop pointing at a file outside it was
ingested; a symlink to a text file put its first bytes into the quarantine message; a symlink to /dev/zero
was read without bound (the size cap saw 0 bytes); a FIFO made ingest hang forever.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import stat
import uuid
from pathlib import Path

import fsspec
import pyarrow.parquet as pq
import pytest

from data import drop_files, publish
from data.drops import find_caption_file, list_ready_drops, read_caption_table
from data.ingest import IngestSettings, ingest_drop
from data.rejects import RejectReason, StickerRejected
from data.synthetic import make_drop
from tests.conftest import SMALL

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX special files")

SECRET = b"TOP-SECRET-CONTENT of a file outside the drop\n"
HOSTILE = {  # caption row file -> expected reason
    "escape-gif.gif": RejectReason.SYMLINK_ESCAPE,  # symlink to a valid GIF outside the drop
    "escape-txt.gif": RejectReason.SYMLINK_ESCAPE,  # symlink to a text file outside the drop
    "zero.gif": RejectReason.SYMLINK_ESCAPE,  # symlink to /dev/zero: outside the drop, so not even stat'ed
    "fifo.gif": RejectReason.NOT_REGULAR_FILE,  # a named pipe: opening it for reading would block
    "folder.gif": RejectReason.NOT_REGULAR_FILE,  # a directory named like a sticker
    "linkdir/inner.gif": RejectReason.SYMLINK_ESCAPE,  # a folder symlink climbing out of the drop
    "dangling.gif": RejectReason.MISSING_FILE,  # symlink to nothing inside the drop
}


def _rows(drop: Path) -> list[dict]:
    return [json.loads(line) for line in (drop / "captions.jsonl").read_text().splitlines() if line.strip()]


def _add_rows(drop: Path, files: list[str]) -> None:
    with open(drop / "captions.jsonl", "a") as fh:
        for f in files:
            fh.write(json.dumps({"id": f"hostile-{f.replace('/', '-')}", "file": f, "caption": "hostile"}) + "\n")


@pytest.fixture(scope="module")
def hostile_drop(tmp_path_factory) -> tuple[Path, Path]:
    """A 4-sticker drop plus one symlink / special file per case in HOSTILE, and a safe in-drop symlink."""
    root = tmp_path_factory.mktemp("hostile")
    outside = root / "outside"
    outside.mkdir()
    drop = root / "drops" / "hostile-drop"
    make_drop(str(drop), n=4, seed=11, cfg=SMALL, progress=False)
    first = _rows(drop)[0]["file"]
    shutil.copy(drop / first, outside / "secret.gif")  # decodable: before the fix it was ingested
    (outside / "secret.txt").write_bytes(SECRET)
    (outside / "sub").mkdir()
    shutil.copy(drop / first, outside / "sub" / "inner.gif")
    os.symlink(outside / "secret.gif", drop / "escape-gif.gif")
    os.symlink(outside / "secret.txt", drop / "escape-txt.gif")
    os.symlink("/dev/zero", drop / "zero.gif")
    os.mkfifo(drop / "fifo.gif")
    (drop / "folder.gif").mkdir()
    os.symlink(outside / "sub", drop / "linkdir")
    os.symlink(drop / "nothing-here.gif", drop / "dangling.gif")
    os.symlink(first, drop / "alias.gif")  # relative symlink to a file inside the drop: allowed
    _add_rows(drop, [*HOSTILE, "alias.gif"])
    return drop, outside


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [1, 2])
def test_symlinks_and_special_files_in_a_drop_are_quarantined_not_read(hostile_drop, tmp_path, workers):
    drop, _ = hostile_drop
    out = tmp_path / drop.name
    report = ingest_drop(str(drop), out, IngestSettings(size=32, workers=workers), progress=False)
    cur = publish.current(out)
    quar = pq.read_table(cur / "quarantine.parquet").to_pandas().set_index("file")
    man = pq.read_table(cur / "manifest.parquet").to_pandas()
    for file, reason in HOSTILE.items():
        assert quar.loc[file, "reason"] == reason.value, (file, quar.loc[file, "message"])
        assert file in quar.loc[file, "message"], "the message names the drop-relative path"
    assert "alias.gif" not in set(man.file), "byte-identical to the sticker it points to"
    assert quar.loc["alias.gif", "reason"] == RejectReason.DUPLICATE_CONTENT.value  # i.e. it was read: allowed
    assert report.n_ingested == 4
    assert not any(f.startswith(("escape", "linkdir")) for f in man.file)


def test_symlink_to_text_file_leaks_no_bytes_into_quarantine_or_logs(hostile_drop, tmp_path, caplog):
    drop, outside = hostile_drop
    caplog.set_level(logging.DEBUG)
    ingest_drop(str(drop), tmp_path / drop.name, IngestSettings(size=32, workers=1), progress=False)
    quar = pq.read_table(publish.current(tmp_path / drop.name) / "quarantine.parquet").to_pandas()
    text = " ".join(quar.message) + " " + caplog.text
    assert "TOP-SECRET" not in text and "TOP-SE" not in text
    assert str(outside) not in text, "the resolved outside target is not named either"


@pytest.mark.timeout(60)
def test_symlink_to_dev_zero_is_not_read(tmp_path):
    os.symlink("/dev/zero", tmp_path / "zero.gif")
    fs = fsspec.filesystem("file")
    with pytest.raises(StickerRejected) as info:
        drop_files.read_member(fs, str(tmp_path), "zero.gif", max_bytes=1 << 20)
    assert info.value.reason is RejectReason.SYMLINK_ESCAPE and "/dev" not in info.value.message
    try:  # a device node inside the drop (needs root to create): rejected by type, never opened
        os.mknod(tmp_path / "dev.gif", stat.S_IFCHR | 0o666, os.makedev(1, 5))  # 1:5 is /dev/zero
    except PermissionError:
        return
    os.symlink("dev.gif", tmp_path / "devlink.gif")
    for name in ("dev.gif", "devlink.gif"):
        with pytest.raises(StickerRejected) as info:
            drop_files.read_member(fs, str(tmp_path), name, max_bytes=1 << 20)
        assert info.value.reason is RejectReason.NOT_REGULAR_FILE and "character device" in info.value.message


@pytest.mark.timeout(60)
def test_fifo_in_drop_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.gif")
    fs = fsspec.filesystem("file")
    with pytest.raises(StickerRejected) as info:
        drop_files.read_member(fs, str(tmp_path), "pipe.gif", max_bytes=1 << 20)
    assert info.value.reason is RejectReason.NOT_REGULAR_FILE and "FIFO" in info.value.message


def test_read_is_capped_even_when_the_reported_size_lies(tmp_path, monkeypatch):
    (tmp_path / "big.gif").write_bytes(b"GIF89a" + bytes(5000))
    fs = fsspec.filesystem("file")
    monkeypatch.setattr(os, "fstat", _lying_stat(os.fstat))
    monkeypatch.setattr(os, "stat", _lying_stat(os.stat))
    with pytest.raises(StickerRejected) as info:
        drop_files.read_member(fs, str(tmp_path), "big.gif", max_bytes=1000)
    assert info.value.reason is RejectReason.FILE_TOO_LARGE
    assert drop_files.read_member(fs, str(tmp_path), "big.gif", max_bytes=5006) == b"GIF89a" + bytes(5000)

    mem = fsspec.filesystem("memory")
    root = f"/lying-{uuid.uuid4().hex[:6]}"
    mem.pipe(f"{root}/big.gif", b"GIF89a" + bytes(5000))
    real_info = type(mem).info
    monkeypatch.setattr(type(mem), "info", lambda self, path, **kw: {**real_info(self, path, **kw), "size": 0})
    with pytest.raises(StickerRejected) as info:
        drop_files.read_member(mem, root, "big.gif", max_bytes=1000)
    assert info.value.reason is RejectReason.FILE_TOO_LARGE


def _lying_stat(real):
    """os.stat/fstat reporting st_size 0, like /proc files, growing files and hostile FUSE mounts."""

    def lie(*args, **kwargs):
        st = real(*args, **kwargs)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, 0,
                               st.st_atime, st.st_mtime, st.st_ctime))

    return lie


def test_directory_is_not_a_regular_file_on_fsspec_backends():
    mem = fsspec.filesystem("memory")
    root = f"/dirs-{uuid.uuid4().hex[:6]}"
    mem.pipe(f"{root}/folder.gif/inside.gif", b"GIF89a")
    with pytest.raises(StickerRejected) as info:
        drop_files.read_member(mem, root, "folder.gif", max_bytes=1 << 20)
    assert info.value.reason is RejectReason.NOT_REGULAR_FILE
    with pytest.raises(StickerRejected) as info:
        drop_files.read_member(mem, root, "absent.gif", max_bytes=1 << 20)
    assert info.value.reason is RejectReason.MISSING_FILE


def test_symlinked_caption_table_outside_the_drop_rejects_the_drop_without_leaking(tmp_path):
    (tmp_path / "outside.jsonl").write_bytes(b'{"id": "x", "file": "TOP-SECRET.gif", "caption": "TOP-SECRET"}\n')
    drop = tmp_path / "drops" / "d"
    drop.mkdir(parents=True)
    os.symlink(tmp_path / "outside.jsonl", drop / "captions.jsonl")
    assert find_caption_file(str(drop)) is not None, "the drop looks ready; reading it must refuse"
    with pytest.raises(ValueError, match="symbolic link") as info:
        read_caption_table(str(drop))
    assert "TOP-SECRET" not in str(info.value) and "outside.jsonl" not in str(info.value)
    with pytest.raises(ValueError, match="symbolic link"):
        ingest_drop(str(drop), tmp_path / "out" / "d", IngestSettings(workers=1), progress=False)


@pytest.mark.timeout(60)
def test_fifo_caption_table_does_not_hang(tmp_path):
    drop = tmp_path / "d"
    drop.mkdir()
    os.mkfifo(drop / "captions.jsonl")
    with pytest.raises(ValueError, match="not a regular file"):
        read_caption_table(str(drop))


def test_caption_table_is_read_with_a_cap(tmp_path):
    drop = tmp_path / "d"
    drop.mkdir()
    row = json.dumps({"id": "a", "file": "a.gif", "caption": "x" * 100}) + "\n"
    (drop / "captions.jsonl").write_text(row * 50)
    with pytest.raises(ValueError, match="max_caption_bytes=1000"):
        read_caption_table(str(drop), max_caption_bytes=1000)
    rows, _ = read_caption_table(str(drop), max_caption_bytes=len(row) * 50)
    assert len(rows) == 1  # the other 49 rows are duplicate ids
    with pytest.raises(ValueError, match="max_caption_bytes"):
        IngestSettings(max_caption_bytes=0)


def test_symlink_to_a_file_inside_the_drop_is_read(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "real.gif").write_bytes(b"GIF89a-bytes")
    os.symlink("sub/real.gif", tmp_path / "alias.gif")
    os.symlink("sub", tmp_path / "subalias")
    fs = fsspec.filesystem("file")
    assert drop_files.read_member(fs, str(tmp_path), "alias.gif", 1 << 20) == b"GIF89a-bytes"
    assert drop_files.read_member(fs, str(tmp_path), "subalias/real.gif", 1 << 20) == b"GIF89a-bytes"


def test_drop_folder_symlink_escaping_drops_root_is_skipped_with_a_warning(tmp_path, caplog):
    root, elsewhere = tmp_path / "drops", tmp_path / "elsewhere"
    (root / "real").mkdir(parents=True)
    (root / "real" / "captions.jsonl").write_text("")
    (elsewhere / "foreign").mkdir(parents=True)
    (elsewhere / "foreign" / "captions.jsonl").write_text("")
    os.symlink(elsewhere / "foreign", root / "foreign")
    os.symlink(root / "real", root / "alias")  # inside drops_root: it would only ingest "real" twice
    with caplog.at_level(logging.WARNING, logger="data.drops"):
        assert list_ready_drops(str(root)) == ["real"]
    assert "'foreign'" in caplog.text and "outside drops_root" in caplog.text
    assert "'alias'" in caplog.text and "inside drops_root" in caplog.text
    assert str(elsewhere) not in caplog.text
