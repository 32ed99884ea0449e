"""Fault tolerance end to end: SIGKILL during shard writing and during training, tracking-server outages.

What "coherent" means for the MLflow history (``training.tracking``): one run per training across kills and
restarts; per metric key every logged step appears exactly once. Steps re-done after a resume from an earlier
checkpoint were logged by the killed attempt already, so they are not logged again (the first recording —
same value, resume is deterministic — keeps its original timestamp). Metrics that could not be sent while the
server was down are buffered on disk and sent later with their original step and timestamp.

The process kills take down the whole tree (torchrun starts its workers in their own sessions, so killing the
process group alone would leave the trainer running as an orphan — like a node failure, nothing survives).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from data.lake import Lake
from tests.helpers import ROOT, write_train_config
from training.tracking import (
    BUFFER_NAME,
    FILES_DIR,
    REJECTED_NAME,
    STATE_NAME,
    ResilientTracker,
)

pytestmark = pytest.mark.slow  # end to end (subprocesses, servers): skipped by the fast loop


def _env(**kw: str) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(ROOT)} | kw


# ------------------------------------------------------------------------------------------- helpers


def _kill_tree(proc: subprocess.Popen | psutil.Process | int) -> None:
    """SIGKILL a process and all its descendants (frozen first, so none can spawn or outlive the others)."""
    pid = proc if isinstance(proc, int) else proc.pid
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    procs = [root]
    for _ in range(2):  # re-list after freezing: catches children spawned while listing
        for p in procs:
            try:
                p.suspend()
            except psutil.NoSuchProcess:
                pass
        try:
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    if isinstance(proc, subprocess.Popen):
        proc.wait(timeout=30)
    _, alive = psutil.wait_procs(procs, timeout=30)
    assert not alive, f"processes survived SIGKILL: {alive}"


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None, interval: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited (rc {proc.returncode}) before: {what}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


def _sha_tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_buffer(out: Path) -> list[dict]:
    p = out / BUFFER_NAME
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


def _latest(out: Path) -> str | None:
    marker = out / "checkpoints" / "latest"
    return marker.read_text().strip() if marker.exists() else None


@pytest.fixture(scope="session")
def mlflow_db_template(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store (creating the tables takes several seconds: do it once)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


class _MlflowServer:
    """A real ``mlflow server`` (SQLite store, proxied artifacts) that tests can kill and restart."""

    def __init__(self, root: Path, db: Path, port: int):
        self.root, self.db, self.port = root, db, port
        self.proc: subprocess.Popen | None = None
        self.uri = f"http://127.0.0.1:{port}"

    def start(self) -> _MlflowServer:
        exe = Path(sys.executable).parent / "mlflow"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
        self.log = open(self.root / f"server-{time.time_ns()}.log", "wb")  # noqa: SIM115 - closed in kill()
        self.proc = subprocess.Popen(
            [*cmd, "server", "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination",
             str(self.root / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            env=_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"), cwd=self.root, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 150) -> None:
        try:
            _wait(self.healthy, timeout, f"mlflow server on {self.uri}", proc=self.proc, interval=0.25)
        except AssertionError:
            self.log.flush()
            tail = Path(self.log.name).read_text(errors="replace")[-3000:]
            raise AssertionError(f"mlflow server did not come up:\n{tail}") from None

    def kill(self) -> None:
        if self.proc is not None:
            _kill_tree(self.proc)
            self.proc = None
            self.log.close()


@pytest.fixture
def mlflow_servers():
    started: list[_MlflowServer] = []

    def make(root: Path, db: Path, port: int) -> _MlflowServer:
        s = _MlflowServer(root, db, port)
        started.append(s)
        return s

    yield make
    for s in started:
        s.kill()


@pytest.fixture
def procs():
    """Popen objects registered here are killed (whole tree) at teardown."""
    live: list[subprocess.Popen] = []
    yield live
    for p in live:
        if p.poll() is None:
            _kill_tree(p)


# ------------------------------------------------------------------------------- (a) shard writing

_SHARDS_CHILD = r"""
import os, sys, time
import assets.shards as S
import data.sharding as engine

delay = float(os.environ.get("FT_SAMPLE_DELAY", "0"))
if delay:  # test hook: slow the sample stream so the kill lands while a tar is open
    orig = engine._samples

    def slow(*a, **k):
        for s in orig(*a, **k):
            yield s
            time.sleep(delay)

    engine._samples = slow
from dagster import DagsterInstance, materialize

from assets.resources import LakeResource

lake = sys.argv[1]
instance = DagsterInstance.ephemeral()
instance.add_dynamic_partitions("drops", ["d0"])
res = materialize([S.webdataset_shards], instance=instance, partition_key="d0",
                  resources={"storage": LakeResource(drops_root=lake, lake_root=lake)},
                  run_config={"ops": {"webdataset_shards": {"config": {"max_count": 3}}}}, raise_on_error=False)
sys.exit(0 if res.success else 1)
"""


def _copy_inputs(src_lake: Path, dst_lake: Path) -> None:
    for stage in ("ingest", "embeddings", "clusters"):
        shutil.copytree(src_lake / stage / "d0", dst_lake / stage / "d0")


def _uncommitted(partition: Path) -> list[Path]:
    """Version folders of a partition that its pointer does not name (a writer's work in progress)."""
    from data import publish

    doc = publish.read_pointer(partition) or {}
    vdir = partition / publish.VERSIONS
    return sorted(p for p in vdir.iterdir() if p.name != doc.get("version")) if vdir.is_dir() else []


def test_sigkill_during_shard_writing_then_rerun_is_byte_identical(tmp_path, tiny_shards, procs):
    from data import publish
    from data.sharding import build_shards
    from data.shards import FrameEncoding, verify_shards

    src = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    ref, lake = tmp_path / "ref", tmp_path / "lake"
    _copy_inputs(src, ref)
    _copy_inputs(src, lake)
    build_shards(ref, "d0", encoding=FrameEncoding.WEBP, max_count=3, max_bytes=512 << 20)  # uninterrupted run
    ref_files = _sha_tree(Lake(ref).shards("d0"))
    assert len([f for f in ref_files if f.endswith(".tar")]) >= 4 and "index.json" in ref_files

    # 1. SIGKILL the Dagster materialization while a shard is open and an earlier one is complete
    shards = lake / "shards"
    part = shards / "d0"
    p = subprocess.Popen([sys.executable, "-c", _SHARDS_CHILD, str(lake)], env=_env(FT_SAMPLE_DELAY="0.4"),
                         cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(p)

    def mid_write():  # a finished shard and an open one (the writer sleeps 0.4 s after each sample)
        stage = _uncommitted(part) if part.exists() else []
        return stage and list(stage[0].glob("*.tar")) and list(stage[0].glob(".*.tar.tmp"))

    _wait(mid_write, 120, "a partial shard in an uncommitted version after a complete one", proc=p)
    _kill_tree(p)
    assert publish.read_pointer(part) is None, "a killed first materialization must not publish anything"
    assert Lake(lake).shard_indexes() == []  # what training would pick up: nothing
    (stage,) = _uncommitted(part)  # the kill landed mid-run: some shards written, no index yet
    assert list(stage.glob("*.tar")) and not (stage / "index.json").exists()

    # 2. re-run to completion: the dead writer's version removed, output byte-identical to the uninterrupted run
    r = subprocess.run([sys.executable, "-c", _SHARDS_CHILD, str(lake)], env=_env(), cwd=tmp_path, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _sha_tree(Lake(lake).shards("d0")) == ref_files
    assert [p.name for p in shards.iterdir()] == ["d0"] and _uncommitted(part) == []  # nothing left behind
    assert verify_shards(Lake(lake).shards("d0") / "index.json") == []
    good = Lake(lake).shards("d0")

    # 3. SIGKILL a re-materialization over the complete output: the published version stays intact
    p = subprocess.Popen([sys.executable, "-c", _SHARDS_CHILD, str(lake)], env=_env(FT_SAMPLE_DELAY="0.4"),
                         cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    procs.append(p)
    _wait(mid_write, 120, "a partial shard in an uncommitted version (re-materialization)", proc=p)
    _kill_tree(p)
    assert Lake(lake).shards("d0") == good and _sha_tree(good) == ref_files
    assert verify_shards(good / "index.json") == []
    assert Lake(lake).shard_indexes() == [str(good / "index.json")]


_COMMIT_CHILD = r"""
import sys, time
import data.publish as P
from data.sharding import build_shards
from data.shards import FrameEncoding

orig = P._commit

def slow_commit(*a, **k):  # test hook: the kill lands after index.json is written, before the pointer moves
    open(sys.argv[2], "w").close()
    time.sleep(60)
    orig(*a, **k)

P._commit = slow_commit
build_shards(sys.argv[1], "d0", encoding=FrameEncoding.WEBP, max_count=3, max_bytes=512 << 20)
"""


def test_sigkill_between_index_and_commit_publishes_no_second_index(tmp_path, tiny_shards, procs):
    from data.sharding import build_shards
    from data.shards import FrameEncoding

    lake = tmp_path / "lake"
    _copy_inputs(tiny_shards.parents[4], lake)  # <lake>/shards/<drop>/versions/<v>/index.json
    build_shards(lake, "d0", encoding=FrameEncoding.WEBP, max_count=3, max_bytes=512 << 20)
    good = Lake(lake).shards("d0")
    before = _sha_tree(good)
    flag = tmp_path / "at_commit"
    p = subprocess.Popen([sys.executable, "-c", _COMMIT_CHILD, str(lake), str(flag)], env=_env(), cwd=tmp_path,
                         start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(p)
    _wait(flag.exists, 120, "the shard writer reaching the commit", proc=p)
    _kill_tree(p)
    assert Lake(lake).shards("d0") == good and _sha_tree(good) == before  # the published version is untouched
    (unpublished,) = _uncommitted(lake / "shards" / "d0")
    assert (unpublished / "index.json").exists()  # the complete, unpublished build
    assert Lake(lake).shard_indexes() == [str(good / "index.json")]
    # the next writer removes the dead one's build and publishes normally
    build_shards(lake, "d0", encoding=FrameEncoding.WEBP, max_count=3, max_bytes=512 << 20)
    assert not unpublished.exists() and _sha_tree(Lake(lake).shards("d0")) == before


_INGEST_CHILD = r"""
import os, sys, time
import data.lake as L

delay = float(os.environ.get("FT_STICKER_DELAY", "0"))
if delay:  # test hook: slow the frame writer so the kill lands mid-ingest, after frames were written
    orig = L.FramePartWriter.add_sticker

    def slow(self, *a, **k):
        out = orig(self, *a, **k)
        open(os.environ["FT_FLAG"], "a").close()
        time.sleep(delay)
        return out

    L.FramePartWriter.add_sticker = slow
from pipelines.cli import main

sys.exit(main(sys.argv[1:]))
"""


def test_sigkill_during_ingest_with_a_waiting_twin_and_a_prefix_sharing_drop(clean_drop, tmp_path, procs):
    """kill -9 of one ingest while a second run of the same partition waits and ``d1-x`` runs beside it.

    The waiting run takes over (the kernel frees the dead writer's lock), removes its leftovers and
    publishes a version byte-identical to an undisturbed run; ``d1-x`` is untouched by either; no process
    of the killed run survives.
    """
    from data import publish

    def cmd(drop_id: str, lake_root: str = "lake") -> list[str]:
        return [sys.executable, "-c", _INGEST_CHILD, "ingest", str(clean_drop), "--drop-id", drop_id, "--out",
                str(tmp_path / lake_root / "ingest" / drop_id), "--size", "32", "--workers", "2", "--quiet"]

    ref = subprocess.run(cmd("d1", "ref"), env=_env(), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-3000:]
    ref_files = _sha_tree(Lake(tmp_path / "ref").ingest("d1"))
    flag = tmp_path / "frames_written"
    victim = subprocess.Popen(cmd("d1"), env=_env(FT_STICKER_DELAY="0.5", FT_FLAG=str(flag)), cwd=tmp_path,
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(victim)
    _wait(flag.exists, 120, "the first ingest writing frames", proc=victim)
    workers = psutil.Process(victim.pid).children(recursive=True)
    twin = subprocess.Popen(cmd("d1"), env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cousin = subprocess.Popen(cmd("d1-x"), env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    procs += [twin, cousin]
    assert cousin.wait(300) == 0, cousin.stderr.read()[-3000:]
    assert twin.poll() is None, "the twin must wait for the partition lock while the first run is alive"
    _kill_tree(victim)
    assert twin.wait(300) == 0, twin.stderr.read()[-3000:]
    assert _sha_tree(Lake(tmp_path / "lake").ingest("d1")) == ref_files
    cousin_files = _sha_tree(Lake(tmp_path / "lake").ingest("d1-x"))
    assert {k: v for k, v in cousin_files.items() if k != "report.json"} == {
        k: v for k, v in ref_files.items() if k != "report.json"}
    for d in ("d1", "d1-x"):  # exactly the one committed version each: the dead run's leftovers are gone
        assert len(list((tmp_path / "lake" / "ingest" / d / publish.VERSIONS).iterdir())) == 1
    assert sorted(p.name for p in (tmp_path / "lake" / "ingest").iterdir()) == ["d1", "d1-x"]
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


# ------------------------------------------------------------------------------- (b) training

_TRAIN_CHILD = r"""
import json, sys
from pathlib import Path
from dagster import DagsterInstance, PipesSubprocessClient, materialize

from assets.resources import LakeResource, MlflowResource
from assets.training import TRAIN_ASSET, trained_model

lake, uri, out = sys.argv[1:4]
res = materialize(
    [trained_model], instance=DagsterInstance.ephemeral(),
    resources={"storage": LakeResource(drops_root=lake, lake_root=lake),
               "mlflow": MlflowResource(tracking_uri=uri, experiment="ft-train"),
               "pipes_subprocess_client": PipesSubprocessClient()},
    run_config={"ops": {TRAIN_ASSET: {"config": {"steps": 11, "ckpt_every": 3, "batch_size": 1, "lr": 1e-3, "preset": "micro_pixel",
                                                 "run_name": "ft"}}}},
    raise_on_error=False)
if res.success:
    (mat,) = res.asset_materializations_for_node(TRAIN_ASSET)
    Path(out).write_text(json.dumps({k: v.value for k, v in mat.metadata.items()}))
sys.exit(0 if res.success else 1)
"""


def test_sigkill_during_training_through_dagster_resumes_one_mlflow_run(tmp_path, tiny_shards, mlflow_db_template, procs):
    """trained_model (Dagster -> Pipes -> torchrun) killed after step 10 was logged (last checkpoint: 9), re-run."""
    lake = tmp_path / "lake"
    shutil.copytree(tiny_shards.parent, lake / "shards" / "d0")
    db = tmp_path / "mlflow.db"
    shutil.copyfile(mlflow_db_template, db)
    uri, out = f"sqlite:///{db}", lake / "training" / "ft"
    # steps 11, checkpoints at 3/6/9/11; metrics at log_every (10) and the last step: kill between 10 and 11
    args = [sys.executable, "-c", _TRAIN_CHILD, str(lake), uri, str(tmp_path / "md.json")]

    def max_logged_step() -> int:
        with sqlite3.connect(db, timeout=10) as c:
            (s,) = c.execute("SELECT max(step) FROM metrics WHERE key = 'loss'").fetchone()
        buffered = [e["step"] for e in _read_buffer(out) if e["kind"] == "metrics"]
        return max([s or 0, *buffered])

    with open(tmp_path / "attempt1.log", "wb") as log1:
        p = subprocess.Popen(args, env=_env(), cwd=tmp_path, stdout=log1, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(p)
        _wait(lambda: max_logged_step() >= 10, 400, "step 10 logged", proc=p)
        _kill_tree(p)  # Dagster process, torchrun agent and the trainer (its own session)
    t_kill = time.time() * 1000
    assert _latest(out) == "step-000009", f"kill landed late: latest={_latest(out)} (the machine is too slow?)"
    assert not (out / "summary.json").exists()

    r = subprocess.run(args, env=_env(), cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert "resumed from" in r.stderr and "at step 9" in r.stderr, r.stderr[-3000:]
    md = json.loads((tmp_path / "md.json").read_text())
    assert md["step"] == 11 and md["checkpoint"].endswith("step-000011")
    assert _latest(out) == "step-000011"

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("ft-train")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]  # one coherent run across the kill
    run = runs[0]
    assert run.info.run_id == md["mlflow_run_id"] and run.info.run_name == "ft" and run.info.status == "FINISHED"
    assert json.loads((out / "checkpoints" / "step-000011" / "trainer.json").read_text())["mlflow_run_id"] == run.info.run_id
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, steps)  # no step twice
    loss = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in loss] == [10, 11]
    assert loss[0].timestamp < t_kill  # step 10 re-done after the resume was not logged again
    assert run.data.params["train.steps"] == "11" and run.data.tags["checkpoint"].endswith("step-000011")
    assert not (out / BUFFER_NAME).exists()


# ------------------------------------------------------------------------------- (c) tracking server down


OUTAGE_STEPS = 20  # long enough that the server is killed mid-run even on a loaded machine (10 was flaky)


def test_tracking_server_killed_mid_training_then_flushed(tmp_path, tiny_shards, mlflow_db_template, mlflow_servers,
                                                         procs, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # this process polls the server
    db = tmp_path / "store.db"
    shutil.copyfile(mlflow_db_template, db)
    port = _free_port()
    server = mlflow_servers(tmp_path, db, port).start()
    out = tmp_path / "outage"
    cfg = write_train_config(tmp_path, tiny_shards, "outage", steps=OUTAGE_STEPS, ckpt_every=OUTAGE_STEPS // 2, mlflow_uri=server.uri, mlflow_experiment="ft-outage",
                     run_name="outage")
    with open(tmp_path / "train.log", "wb") as tlog:
        # started together: if the server is not up yet when the trainer connects, that is buffered too
        trainer = subprocess.Popen([sys.executable, "-m", "training", "--config", str(cfg)], cwd=ROOT,
                                   env=_env(OMP_NUM_THREADS="1", RDTF_MLFLOW_RETRY_S="2"),
                                   stdout=tlog, stderr=subprocess.STDOUT, start_new_session=True)
        procs.append(trainer)
        server.wait_ready()
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=server.uri)

        def logged_on_server() -> int:
            run_id = json.loads((out / STATE_NAME).read_text()).get("run_id") if (out / STATE_NAME).exists() else None
            if not run_id:
                return 0
            return max((m.step for m in client.get_metric_history(run_id, "loss")), default=0)

        live = _wait(lambda: (n := logged_on_server()) >= 2 and n, 300, "two steps logged live to the server", proc=trainer, interval=0.3)
        server.kill()  # the tracking server dies mid-training
        assert trainer.wait(timeout=400) == 0, (tmp_path / "train.log").read_text()[-4000:]
    text = (tmp_path / "train.log").read_text()
    assert "unreachable or failing" in text and "remain buffered" in text and "Traceback" not in text

    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == OUTAGE_STEPS
    run_id = json.loads((out / STATE_NAME).read_text())["run_id"]
    assert summary["mlflow_run_id"] == run_id
    buf = _read_buffer(out)
    buffered_steps = [e["step"] for e in buf if e["kind"] == "metrics"]
    assert buffered_steps and buffered_steps == sorted(buffered_steps) and buffered_steps[-1] == OUTAGE_STEPS
    assert [e["kind"] for e in buf][-1] == "end" and sum(e["kind"] == "artifact" for e in buf) == 2
    assert all((out / e["file"]).exists() for e in buf if e["kind"] == "artifact")  # copies survive rotation

    server = mlflow_servers(tmp_path, db, port).start()  # the server comes back: same port, same store
    server.wait_ready()
    client = MlflowClient(tracking_uri=server.uri)
    live_steps = [m.step for m in client.get_metric_history(run_id, "loss")]
    assert len(live_steps) >= live >= 2 and set(live_steps) | set(buffered_steps) == set(range(1, OUTAGE_STEPS + 1))
    t_flush = time.time() * 1000
    r = subprocess.run([sys.executable, "-m", "training.tracking", "flush", str(out)], env=_env(), cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["pending"] == 0
    assert not (out / BUFFER_NAME).exists() and not (out / FILES_DIR).exists() and not (out / REJECTED_NAME).exists()

    exp = client.get_experiment_by_name("ft-outage")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]
    run = runs[0]
    assert run.info.run_name == "outage" and run.info.status == "FINISHED" and run.info.end_time < t_flush
    loss = sorted(client.get_metric_history(run_id, "loss"), key=lambda m: m.step)
    assert [m.step for m in loss] == list(range(1, OUTAGE_STEPS + 1))  # every step exactly once
    ts = [m.timestamp for m in loss]
    assert ts == sorted(ts) and ts[-1] < t_flush  # original timestamps, not the time of the flush
    for key in run.data.metrics:  # per-task losses exist only at steps that sampled the task
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert len(steps) == len(set(steps)) and set(steps) <= set(range(1, OUTAGE_STEPS + 1)), (key, steps)
        if key in ("lr", "grad_norm", "samples_per_s") or key.startswith("curriculum_"):
            assert sorted(steps) == list(range(1, OUTAGE_STEPS + 1)), (key, steps)
    assert run.data.params["train.steps"] == str(OUTAGE_STEPS) and run.data.tags["checkpoint"].endswith(f"step-{OUTAGE_STEPS:06d}")
    arts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "checkpoint")}
    assert {"training_curves.png", "checkpoint/trainer.json"} <= arts


def test_tracking_never_reachable_training_completes_then_run_created_later(tmp_path, tiny_shards, caplog,
                                                                             mlflow_db_template, mlflow_servers):
    """In-process trainer against a closed port: it finishes and the buffer holds every call in order; when a
    server appears there later, the flush creates the run and attaches the whole history."""
    from training.trainer import TrainConfig, Trainer

    out = tmp_path / "offline"
    cfg = TrainConfig(index_paths=[str(tiny_shards)], out_dir=str(out), preset="micro_pixel", steps=3, batch_size=2, lr=1e-3, ckpt_every=2,
                      warmup_steps=2, log_every=1, mlflow_uri=f"http://127.0.0.1:{(port := _free_port())}")
    old = signal.getsignal(signal.SIGTERM)
    caplog.set_level(logging.WARNING, logger="rdtf.tracking")
    try:
        t0 = time.time()
        summary = Trainer(cfg).run()
        elapsed = time.time() - t0
    finally:
        signal.signal(signal.SIGTERM, old)
    assert summary["step"] == 3 and summary["mlflow_run_id"] is None
    buf = _read_buffer(out)
    kinds = [e["kind"] for e in buf]
    assert kinds == ["params", "tags", "metrics", "metrics", "metrics", "artifact", "artifact", "tags", "end"], kinds
    metrics = [e for e in buf if e["kind"] == "metrics"]
    assert [e["step"] for e in metrics] == [1, 2, 3] and all("loss" in e["metrics"] for e in metrics)
    assert [e["ts"] for e in metrics] == sorted(e["ts"] for e in metrics)
    assert all((out / e["file"]).exists() for e in buf if e["kind"] == "artifact")
    warnings = [r for r in caplog.records if "unreachable or failing" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not an exception, not every step
    assert elapsed < 120
    state = json.loads((out / STATE_NAME).read_text())
    assert state["run_id"] is None and state["run_key"]

    db = tmp_path / "store.db"
    shutil.copyfile(mlflow_db_template, db)
    server = mlflow_servers(tmp_path, db, port).start()
    server.wait_ready()
    tracker = ResilientTracker.from_dir(out)
    assert tracker.flush() and not (out / BUFFER_NAME).exists() and not (out / FILES_DIR).exists()
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=server.uri)
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.mlflow_experiment).experiment_id])
    assert run.info.run_id == tracker.run_id == json.loads((out / STATE_NAME).read_text())["run_id"]
    assert run.data.tags["rdtf.run_key"] == state["run_key"] and run.info.status == "FINISHED"
    loss = sorted(client.get_metric_history(run.info.run_id, "loss"), key=lambda m: m.step)
    assert [(m.step, m.timestamp) for m in loss] == [(e["step"], e["ts"]) for e in metrics]
    assert run.data.params["train.steps"] == "3" and run.data.tags["checkpoint"].endswith("step-000003")
    arts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_curves.png", "checkpoint"} <= arts
