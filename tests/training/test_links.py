"""Links into the MLflow UI and inline-sized image markdown for the Dagster UI (training/links.py)."""

from __future__ import annotations

import base64
import urllib.parse

from training.links import INLINE_MAX_CHARS, Image, artifact_url, image_markdown, run_url, version_url

PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")


def test_links_follow_the_configured_ui_and_vanish_without_one(monkeypatch):
    monkeypatch.setenv("RDTF_MLFLOW_UI", "http://127.0.0.1:5999/")
    assert run_url("3", "abc") == "http://127.0.0.1:5999/#/experiments/3/runs/abc"
    assert version_url("rdtf-dfgn", "2") == "http://127.0.0.1:5999/#/models/rdtf-dfgn/versions/2"
    url = artifact_url("r1", "gallery/00 a&b.png")
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)
    assert url.startswith("http://127.0.0.1:5999/get-artifact?") and q == {"path": ["gallery/00 a&b.png"], "run_uuid": ["r1"]}
    monkeypatch.setenv("RDTF_MLFLOW_UI", "")
    assert run_url("3", "abc") is None and artifact_url("r1", "x.png") is None


def test_image_rows_are_inline_sized_urls_with_a_ui(tmp_path, monkeypatch):
    monkeypatch.setenv("RDTF_MLFLOW_UI", "http://127.0.0.1:5000")
    (tmp_path / "a.png").write_bytes(PNG)
    tasks = ("generate_text", "generate_image", "interpolate", "predict_forward")
    rows = [[Image(t, tmp_path / "a.png", f"gallery/{i:02d}-{t}.png") for t in tasks] for i in range(6)]
    md = image_markdown(rows, "0123456789abcdef0123456789abcdef")
    assert len(md) <= INLINE_MAX_CHARS  # the Dagster UI renders it on the page, not behind "Show Markdown"
    assert md.splitlines()[0] == "| " + " | ".join(tasks) + " |"
    assert "data:" not in md and md.count("get-artifact?") % 4 == 0 and md.count("get-artifact?") >= 4
    assert "gallery%2F00-generate_text.png" in md  # the first row is always there


def test_images_are_embedded_without_a_ui_or_a_run(tmp_path, monkeypatch):
    (tmp_path / "a.png").write_bytes(PNG)
    img = Image("loss", tmp_path / "a.png", "training_curves.png")
    monkeypatch.setenv("RDTF_MLFLOW_UI", "")
    md = image_markdown([[img], [img]], "run")
    assert md.count(f"data:image/png;base64,{base64.b64encode(PNG).decode()}") == 2  # every row, viewable offline
    monkeypatch.setenv("RDTF_MLFLOW_UI", "http://127.0.0.1:5000")
    assert "data:image/png" in image_markdown([[img]], None)  # no MLflow run: nothing to link to
    assert image_markdown([], "run", title="no stickers") == "no stickers"
