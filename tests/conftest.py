"""Shared fixtures: small synthetic drops (real files, real decoders) and isolated Dagster homes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from data.synthetic import SyntheticConfig, make_drop
from data.synthetic_faults import inject_faults
from training.tracking_backend import FAIL_FAST_HTTP_ENV

# Small canvases keep the suite fast on a 2-core CI machine; every code path is still exercised.
SMALL = SyntheticConfig(min_size=48, max_size=96, max_frames=40)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    """Never touch the developer's ./var: every test gets its own RDTF_HOME/DAGSTER_HOME."""
    home = tmp_path_factory.mktemp("rdtf_home")
    monkeypatch.setenv("RDTF_HOME", str(home))
    monkeypatch.delenv("RDTF_DROPS_ROOT", raising=False)
    monkeypatch.delenv("RDTF_LAKE_ROOT", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from pipelines.dagster_home import write_home

    monkeypatch.setenv("DAGSTER_HOME", str(write_home(home / "dagster_home")))
    yield home


@pytest.fixture(scope="session")
def clean_drop(tmp_path_factory) -> Path:
    """24 well-formed stickers (all formats), drop id 'clean-drop'."""
    root = tmp_path_factory.mktemp("drops")
    make_drop(str(root / "clean-drop"), n=24, seed=3, cfg=SMALL, progress=False)
    return root / "clean-drop"


@pytest.fixture(scope="session")
def faulty_drop(tmp_path_factory) -> tuple[Path, dict[str, list[str]]]:
    """60 good stickers plus one hostile entry per bad-input class (~20 % of rows rejected)."""
    root = tmp_path_factory.mktemp("drops")
    drop = root / "faulty-drop"
    make_drop(str(drop), n=60, seed=5, cfg=SMALL, progress=False)
    faults = inject_faults(str(drop), seed=5)
    return drop, faults


def cpu_workers() -> int:
    return min(2, os.cpu_count() or 1)


@pytest.fixture(scope="session")
def tiny_shards(clean_drop, tmp_path_factory) -> Path:
    """Real train/test shards of the clean drop (64 px frames), built by the pipeline's own stages.

    Returns the shard ``index.json`` path.
    """
    from data.embed import EmbedSettings
    from data.ingest import IngestSettings
    from data.splits import SplitConfig
    from data.stages import run_data_stages

    root = tmp_path_factory.mktemp("shard_lake")
    return run_data_stages(str(clean_drop), root, "d0", ingest=IngestSettings(size=64, workers=1),
                           embed=EmbedSettings(num_workers=0), split=SplitConfig(max_test_fraction=0.25, n_semantic_clusters=3),
                           max_count=4, max_bytes=64 << 20)


@pytest.fixture(autouse=True)
def _restore_http_env():
    """training.tracking sets MLflow's HTTP retry variables (setdefault) in the process that tracks: undo it here."""
    saved = {k: os.environ.get(k) for k in FAIL_FAST_HTTP_ENV}
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def s3_server():
    """The loopback S3 API server (moto, 127.0.0.1) of the session; ``AWS_*`` point every process at it.

    Tests take a fresh prefix each (``s3_server.url(<unique>)``) rather than a server each: fsspec caches
    filesystem instances, and one endpoint per session keeps them valid.
    """
    from pipelines.s3_server import start_s3_server

    with start_s3_server(bucket="rdtf-test") as s3, s3.environment():
        yield s3
