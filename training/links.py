"""Links into the MLflow UI, and images that Dagster shows inline (previews, charts) without "Show Markdown".

Why images go by URL: the Dagster UI renders a markdown metadata value inline on the asset page only when it is
shorter than 1,000 characters; longer values (any PNG as a ``data:`` URI) hide behind *[Show Markdown]*. So
a preview is a short markdown that points at the image where MLflow already keeps it — an artifact of the run,
served by the MLflow UI's ``/get-artifact`` route (``bash scripts/dev.sh ui`` starts that UI next to Dagster's).
Where no MLflow UI is configured (``RDTF_MLFLOW_UI=""``) or the image is not an MLflow artifact, the image is
embedded as a ``data:`` URI instead: still viewable, behind *Show Markdown*.

Import-light (no mlflow, no dagster): the trainer's rank 0 uses it when it reports through Dagster Pipes.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

UI_ENV = "RDTF_MLFLOW_UI"
DEFAULT_UI = "http://127.0.0.1:5000"
INLINE_MAX_CHARS = 999  # the Dagster UI expands markdown metadata shorter than 1,000 characters


def ui_base() -> str | None:
    """Base URL of the MLflow UI for links (``RDTF_MLFLOW_UI``, default ``http://127.0.0.1:5000``; "" = no links)."""
    url = os.environ.get(UI_ENV, DEFAULT_UI).rstrip("/")
    return url or None


def run_url(experiment_id: str, run_id: str, base: str | None = None) -> str | None:
    base = base or ui_base()
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}" if base else None


def version_url(name: str, version: str, base: str | None = None) -> str | None:
    base = base or ui_base()
    return f"{base}/#/models/{name}/versions/{version}" if base else None


def artifact_url(run_id: str, path: str, base: str | None = None) -> str | None:
    """The MLflow UI's URL of one artifact file of a run (its ``get-artifact`` route), or None without a UI."""
    base = base or ui_base()
    if not base or not run_id:
        return None
    return f"{base}/get-artifact?" + urllib.parse.urlencode({"path": path, "run_uuid": run_id})


@dataclass(frozen=True)
class Image:
    label: str  # caption above the image (a task name, "loss")
    file: Path  # the local image file (embedded when there is no URL)
    artifact: str = ""  # its path among the MLflow run's artifacts ("" = not logged)


def _src(img: Image, run_id: str | None) -> str:
    url = artifact_url(run_id, img.artifact) if run_id and img.artifact else None
    if url:
        return url
    mime = mimetypes.guess_type(img.file.name)[0] or "image/png"
    return f"data:{mime};base64,{base64.b64encode(Path(img.file).read_bytes()).decode()}"


def image_markdown(rows: list[list[Image]], run_id: str | None, *, title: str = "") -> str:
    """Rows of images as a markdown table (one image per cell, labels in the header row).

    With an MLflow UI and artifacts, whole rows are added while the markdown stays inline-sized (at least the
    first row is always kept); without, every image is embedded (``data:`` URIs, shown behind *Show Markdown*).
    """
    rows = [r for r in rows if r]
    if not rows:
        return title or "no images"
    width = max(len(r) for r in rows)
    head = "| " + " | ".join(img.label for img in rows[0]) + " |" + " |" * (width - len(rows[0])) + "\n"
    head += "|" + "---|" * width + "\n"
    text = (f"{title}\n\n" if title else "") + head
    for i, row in enumerate(rows):
        line = "| " + " | ".join(f"![{img.label}]({_src(img, run_id)})" for img in row) + " |\n"
        if i and len(text) + len(line) > INLINE_MAX_CHARS and not line.count("data:"):
            break  # URL rows: keep the markdown short enough to render inline
        text += line
    return text.rstrip("\n")
