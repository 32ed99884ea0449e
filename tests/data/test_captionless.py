"""Caption-less drops: a plain folder of stickers ingests when chosen explicitly; hostile entries are quarantined."""

from __future__ import annotations

import os
import shutil

import pytest

from data.captionless import CaptionSource, caption_from_name
from data.drops import captionless_source, list_ready_drops, read_drop_rows
from data.ingest import IngestSettings, ingest_drop
from data.lake import read_parquet


@pytest.mark.parametrize("name,caption", [
    ("cats/cat_waving-hello_003.gif", "cat waving hello"),
    ("IMG_0042.GIF", "IMG"),
    ("0042.webp", ""),
    ("happy.dance+v2.mp4", "happy dance v2"),
    ("a  b__c.png", "a b c"),
])
def test_the_file_name_rule(name, caption):
    assert caption_from_name(name) == caption


@pytest.fixture
def plain_folder(clean_drop, tmp_path):
    """The clean drop's media without its caption table, plus a FIFO and a link leaving the folder."""
    folder = tmp_path / "plain" / "gifs-only"
    shutil.copytree(clean_drop, folder)
    (folder / "captions.jsonl").unlink()
    os.mkfifo(folder / "stuck_pipe.gif")
    (tmp_path / "secret.gif").write_bytes(b"GIF89a secret")
    os.symlink(tmp_path / "secret.gif", folder / "escape_link.gif")
    (folder / ".hidden.gif").write_bytes(b"x")
    return folder


def test_a_plain_folder_is_refused_by_default_and_ingests_when_chosen(plain_folder, tmp_path):
    with pytest.raises(FileNotFoundError, match="no caption table"):
        ingest_drop(str(plain_folder), tmp_path / "lake" / "t", IngestSettings(size=32, workers=1), progress=False)
    rep = ingest_drop(str(plain_folder), tmp_path / "lake" / "f",
                      IngestSettings(size=32, workers=1, caption_source=CaptionSource.FILENAME), progress=False)
    media = [p for p in os.listdir(plain_folder) if not p.startswith(".")]
    assert rep.n_rows == len(media)  # every visible media file is a row; the hidden one is not
    assert rep.n_ingested == len(media) - 2 and rep.n_rejected == 2  # the FIFO and the escaping link
    from data.storage import lake_path

    q = read_parquet(lake_path(os.path.join(rep.out_dir, "quarantine.parquet"))).to_pandas()
    assert set(q.file) == {"stuck_pipe.gif", "escape_link.gif"} and q.message.str.len().min() > 0
    man = read_parquet(lake_path(os.path.join(rep.out_dir, "manifest.parquet"))).to_pandas()
    assert all(caption_from_name(f) == c for f, c in zip(man.file, man.caption))
    rows, _ = read_drop_rows(str(plain_folder), CaptionSource.NONE)
    assert rows and all(r.caption == "" and r.caption_status.value == "missing" for r in rows)
    assert [r.id for r in rows] == sorted(r.id for r in rows)  # ids = relative paths, stable across re-ingests


def test_a_ready_marker_makes_a_caption_less_drop_visible_and_names_its_source(plain_folder):
    root = str(plain_folder.parent)
    assert list_ready_drops(root) == []  # no table, no marker: not ready
    (plain_folder / "READY").write_text("filename\n")
    assert list_ready_drops(root) == ["gifs-only"] and captionless_source(str(plain_folder)) is CaptionSource.FILENAME
    (plain_folder / "READY").write_text("")
    assert captionless_source(str(plain_folder)) is CaptionSource.NONE
    (plain_folder / "READY").write_text("table-please")
    with pytest.raises(ValueError, match="allowed: \\['none', 'filename'\\]"):
        captionless_source(str(plain_folder))
