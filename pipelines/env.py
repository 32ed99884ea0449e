"""The environment variables of the project, read in one place (light: no Dagster, no torch at import).

See ``pipelines.resources`` for the list; ``rdtf`` commands and the Dagster resources share these readers.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def rdtf_home() -> Path:
    return Path(os.environ.get("RDTF_HOME", PROJECT_ROOT / "var")).resolve()


def clip_from_env() -> dict:
    """The CLIP settings of ``RDTF_CLIP_MODEL`` / ``RDTF_CLIP_PRETRAINED`` / ``RDTF_CLIP_CACHE`` (one reading for the
    Dagster resources and ``rdtf build-drop``; default: the random ``rdtf-tiny-clip``)."""
    return {"model": os.environ.get("RDTF_CLIP_MODEL") or "rdtf-tiny-clip",
            "pretrained": os.environ.get("RDTF_CLIP_PRETRAINED") or None,
            "cache_dir": os.environ.get("RDTF_CLIP_CACHE") or None}


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI``, else the project's SQLite store ``$RDTF_HOME/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{rdtf_home() / 'mlflow.db'}"
