"""Production storage on a real PostgreSQL server: Dagster (dagster-postgres) and MLflow.

A throwaway server is started by ``tests/pg_server.py`` from the Debian package's binaries (installed by
``scripts/system_deps.sh``); the server tests skip, naming that script, where they are missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey, DagsterInstance, materialize
from dagster._core.errors import DagsterInvalidConfigError

from tests.helpers import ROOT
from tests.pg_server import _pid_alive, pg_server_fixture, start_pg_server, unavailable_reason

pytestmark = pytest.mark.slow  # end to end (subprocesses, servers): skipped by the fast loop

DEPLOY_YAML = ROOT / "deploy" / "postgres" / "dagster.yaml"
PG_VARS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")

pg = pytest.fixture(scope="module", name="pg")(pg_server_fixture)
needs_pg = pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or "")


@pytest.fixture
def pg_home(tmp_path, monkeypatch, pg) -> Path:
    """A DAGSTER_HOME holding deploy/postgres/dagster.yaml, with DAGSTER_PG_* pointing at the test server."""
    home = tmp_path / "dagster_home_pg"
    home.mkdir()
    shutil.copy(DEPLOY_YAML, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for k, v in pg.dagster_env().items():
        monkeypatch.setenv(k, v)
    return home


# --- the config file itself (no server needed) -------------------------------------------------------------

def test_deploy_yaml_reads_every_connection_value_from_env_and_keeps_dev_run_settings():
    prod = yaml.safe_load(DEPLOY_YAML.read_text())
    dev = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    conn = prod["storage"]["postgres"]["postgres_db"]
    assert conn == {"hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
                    "username": {"env": "DAGSTER_PG_USER"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
                    "db_name": {"env": "DAGSTER_PG_DB"}, "scheme": "postgresql+psycopg2"}
    assert set(prod) == set(dev)
    assert {k: v for k, v in prod.items() if k != "storage"} == {k: v for k, v in dev.items() if k != "storage"}


def test_deploy_yaml_without_env_is_a_clear_error(tmp_path, monkeypatch):
    shutil.copy(DEPLOY_YAML, tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    for k in PG_VARS:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(DagsterInvalidConfigError, match="DAGSTER_PG_"):
        DagsterInstance.get()


# --- the test server helper --------------------------------------------------------------------------------

def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and _pid_alive(int(p.name)):
            pids.append(int(p.name))
    return pids


@needs_pg
def test_pg_server_stops_and_cleans_up_even_when_the_body_fails():
    with pytest.raises(ZeroDivisionError):
        with start_pg_server(databases=("scratch",)) as s:
            pid, base = s.pid, s.base_dir
            assert s.host == "127.0.0.1" and s.is_running()
            assert s.query("scratch", "SELECT current_user, current_database()") == [(s.user, "scratch")]
            # the role is not a superuser and authenticates with its password over TCP
            assert s.query("scratch", "SELECT rolsuper FROM pg_roles WHERE rolname = current_user") == [(False,)]
            bad = s.dsn("scratch") | {"password": "wrong"}
            import psycopg2

            with pytest.raises(psycopg2.OperationalError, match="password"):
                psycopg2.connect(**bad)
            1 / 0  # noqa: B018
    deadline = time.monotonic() + 10
    while _processes_mentioning(str(base)) and time.monotonic() < deadline:  # backends exit after the postmaster
        time.sleep(0.1)
    assert not _pid_alive(pid)
    assert not base.exists()
    assert _processes_mentioning(str(base)) == []


# --- Dagster ----------------------------------------------------------------------------------------------

def test_dagster_instance_persists_runs_materializations_and_partitions_in_postgres(pg, pg_home, tmp_path):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    from assets.ingest import INGEST_ASSET, ingested_stickers
    from assets.resources import LakeResource
    from data.synthetic import SyntheticConfig, make_drop

    drops, lake_root, drop_id = tmp_path / "drops", tmp_path / "lake", "pg-drop"
    make_drop(str(drops / drop_id), n=6, seed=1, cfg=SyntheticConfig(min_size=48, max_size=64, max_frames=12),
              progress=False)

    with DagsterInstance.get() as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
        instance.add_dynamic_partitions("drops", [drop_id])
        result = materialize([ingested_stickers], partition_key=drop_id, instance=instance,
                             resources={"storage": LakeResource(drops_root=str(drops), lake_root=str(lake_root))},
                             run_config={"ops": {INGEST_ASSET: {"config": {"size": 48, "workers": 1}}}})
        assert result.success
        run_id = result.run_id

    # a fresh instance object (new engines, nothing cached) reads everything back from Postgres
    with DagsterInstance.get() as fresh:
        assert fresh.get_dynamic_partitions("drops") == [drop_id]
        assert fresh.get_run_by_id(run_id).is_success
        event = fresh.get_latest_materialization_event(AssetKey(INGEST_ASSET))
        assert event is not None and event.run_id == run_id
        mat = event.asset_materialization
        assert mat.partition == drop_id
        assert mat.metadata["n_ingested"].value == 6
        assert fresh.get_materialized_partitions(AssetKey(INGEST_ASSET)) == {drop_id}

    # ... and it is really in the database the env vars name
    q = pg.query
    assert q("dagster", "SELECT status FROM runs WHERE run_id = %s", (run_id,)) == [("SUCCESS",)]
    assert q("dagster", "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = "
             "'ASSET_MATERIALIZATION' AND partition = %s", (run_id, drop_id)) == [(1,)]
    assert q("dagster", "SELECT partition FROM dynamic_partitions WHERE partitions_def_name = 'drops'") == [(drop_id,)]
    assert q("mlflow", "SELECT count(*) FROM pg_tables WHERE tablename = 'runs'") == [(0,)]  # databases separate


def test_dagster_cli_uses_the_postgres_instance(pg, pg_home):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "dagster", "instance", "info"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    for line in ("run_storage: PostgresRunStorage", "event_log_storage: PostgresEventLogStorage",
                 "schedule_storage: PostgresScheduleStorage", "max_concurrent_runs: 4", "default_limit: 1"):
        assert line in out, out
    schema = yaml.safe_load(out.split("Storage schema state:", 1)[1].split("\n", 2)[2])["schema"]
    assert set(schema) == {"event_log_storage", "run_storage", "schedule_storage"}
    assert all(v["current"] == v["latest"] for v in schema.values()), schema  # tables created and migrated
    assert pg.password not in out  # the secret comes from the environment and is not echoed

    # the project's code location loads against the Postgres instance (it connects: a wrong port fails here)
    p = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr


# --- MLflow -----------------------------------------------------------------------------------------------

def test_mlflow_tracking_on_postgres_and_run_comparison(pg, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from evaluation.comparison import collect_runs
    from evaluation.suite import MetricReport, log_report
    from pipelines.resources import default_resources

    uri = pg.url("mlflow")
    assert uri.startswith("postgresql+psycopg2://") and "%40" in uri  # password URL-encoded
    monkeypatch.chdir(tmp_path)  # nothing may land in the repo's ./mlruns
    client = MlflowClient(tracking_uri=uri)
    exp_id = client.create_experiment("rdtf-pg", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(exp_id, run_name="tiny-pg", tags={"preset": "tiny_pixel", "weights": "random"}).info.run_id
    client.log_param(run_id, "train.seed", "0")
    client.log_metric(run_id, "loss", 0.25, step=1)
    report = MetricReport("fvd", metrics={"eval/i2v/fvd": 123.25}, tags={"fvd.weights": "random"})
    log_report(report, uri, run_id, step=7)  # the project's evaluation logging path
    client.set_terminated(run_id)

    df = collect_runs(uri, "rdtf-pg")
    assert len(df) == 1
    row = df.iloc[0]
    assert row["run_id"] == run_id and row["run_name"] == "tiny-pg" and row["preset"] == "tiny_pixel"
    assert row["eval/i2v/fvd"] == 123.25 and row["step"] == 7 and row["seed"] == "0" and row["random_weights"]
    assert (tmp_path / "artifacts" / run_id / "artifacts" / "evaluation" / "fvd.json").exists()

    assert pg.query("mlflow", "SELECT value FROM metrics WHERE run_uuid = %s AND key = %s",
                    (run_id, "eval/i2v/fvd")) == [(123.25,)]
    assert pg.query("mlflow", "SELECT value FROM tags WHERE run_uuid = %s AND key = 'fvd.weights'",
                    (run_id,)) == [("random",)]

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    assert default_resources()["mlflow"].tracking_uri == uri


def test_mlflow_server_on_postgres_as_documented(pg, tmp_path):
    """`mlflow server --backend-store-uri postgresql+psycopg2://... --artifacts-destination ...` (deploy/postgres)."""
    import signal
    import urllib.request

    from mlflow.tracking import MlflowClient

    from evaluation.comparison import collect_runs
    from tests.pg_server import _free_port

    port, artifacts = _free_port(), tmp_path / "mlflow-artifacts"
    log = tmp_path / "mlflow-server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", pg.url("mlflow"),
           "--artifacts-destination", artifacts.as_uri(), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with open(log, "wb") as lf:
        proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            assert proc.poll() is None, log.read_text()[-3000:]
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        client = MlflowClient(tracking_uri=url)
        exp_id = client.create_experiment("rdtf-pg-server")
        run_id = client.create_run(exp_id, run_name="via-server").info.run_id
        client.log_metric(run_id, "eval/i2v/fvd", 42.5)
        (tmp_path / "note.txt").write_text("hi")
        client.log_artifact(run_id, str(tmp_path / "note.txt"), artifact_path="evaluation")
        df = collect_runs(url, "rdtf-pg-server")
        assert list(df["eval/i2v/fvd"]) == [42.5]
        assert pg.query("mlflow", "SELECT value FROM metrics WHERE run_uuid = %s AND key = 'eval/i2v/fvd'",
                        (run_id,)) == [(42.5,)]
        assert list(artifacts.rglob("note.txt")) == [artifacts / exp_id / run_id / "artifacts" / "evaluation" / "note.txt"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)
