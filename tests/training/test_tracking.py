"""The resilient MLflow tracker (training.tracking) against a fake backend: buffering while the server is down,
ordered flushes, no duplicate steps across restarts, refused entries set aside, back-off; and the trainer's
experiment artifact location. The real-server outages are in tests/integration/test_fault_tolerance.py."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

from training.tracking import (
    BUFFER_NAME,
    FILES_DIR,
    REJECTED_NAME,
    ResilientTracker,
)


def _read_buffer(out: Path) -> list[dict]:
    p = out / BUFFER_NAME
    return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []


class _FakeError(Exception):
    def __init__(self, msg: str, code: str | None = None):
        super().__init__(msg)
        self.error_code = code


class _FakeServer:
    """An in-memory tracking service that can be switched off, or lose the response of one call."""

    def __init__(self):
        self.up = True
        self.lose_response = False  # next metrics call: applied, but the caller sees an error
        self.experiments: dict[str, str] = {}
        self.runs: dict[str, dict] = {}
        self.calls = 0

    def backend(self, uri: str):
        return _FakeBackend(self)


class _FakeBackend:
    def __init__(self, server: _FakeServer):
        self.s = server

    def _check(self):
        self.s.calls += 1
        if not self.s.up:
            raise ConnectionError("connection refused")

    def experiment_id(self, name):
        self._check()
        return self.s.experiments.setdefault(name, str(len(self.s.experiments)))

    def find_run(self, experiment_id, run_key):
        self._check()
        return next((rid for rid, r in self.s.runs.items() if r["tags"].get("rdtf.run_key") == run_key), None)

    def create_run(self, experiment_id, run_name, tags):
        self._check()
        rid = f"run{len(self.s.runs)}"
        self.s.runs[rid] = {"name": run_name, "tags": dict(tags), "params": {}, "metrics": [], "artifacts": {},
                            "status": "RUNNING", "end_time": None}
        return rid

    def open_run(self, run_id, reopen):
        self._check()
        if run_id not in self.s.runs:
            raise _FakeError("no such run", "RESOURCE_DOES_NOT_EXIST")
        if reopen:
            self.s.runs[run_id]["status"] = "RUNNING"
        hwm = {}
        for k, _, _, step in self.s.runs[run_id]["metrics"]:
            hwm[k] = max(hwm.get(k, step), step)
        return hwm

    def log_metrics(self, run_id, metrics):
        self._check()
        self.s.runs[run_id]["metrics"] += metrics
        if self.s.lose_response:
            self.s.lose_response = False
            raise ConnectionError("read timed out")

    def log_params(self, run_id, params):
        self._check()
        run = self.s.runs[run_id]
        for k, v in params.items():
            if run["params"].get(k, v) != v:
                raise _FakeError(f"param {k} changed", "INVALID_PARAMETER_VALUE")
        run["params"].update(params)

    def set_tags(self, run_id, tags):
        self._check()
        self.s.runs[run_id]["tags"].update(tags)

    def log_artifact(self, run_id, path, artifact_path):
        self._check()
        self.s.runs[run_id]["artifacts"][f"{artifact_path or ''}/{Path(path).name}"] = Path(path).read_bytes()

    def end_run(self, run_id, status, end_time):
        self._check()
        self.s.runs[run_id].update(status=status, end_time=end_time)


class _Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def _tracker(tmp_path, server, clock=None, **kw) -> ResilientTracker:
    kw.setdefault("config", {"lr": 1})
    return ResilientTracker.for_training(tmp_path / "out", "fake://", "exp", run_name="r", backend_factory=server.backend,
                                         clock=clock or _Clock(), retry_after_s=30, **kw)


def _steps(run, key="loss"):
    return [m[3] for m in run["metrics"] if m[0] == key]


def test_unit_buffers_while_down_and_flushes_in_order_when_back(tmp_path, caplog):
    server, clock = _FakeServer(), _Clock()
    server.up = False
    tr = _tracker(tmp_path, server, clock)
    assert tr.start() is False and tr.run_id is None
    tr.log_params({"a": 1})
    tr.set_tags({"t": "x"})
    for step in range(1, 6):
        clock.t += 5  # inside the 30 s retry interval: no request at all
        assert tr.log_metrics({"loss": 1.0 / step}, step, timestamp_ms=step * 1000) is False
    assert server.calls == 1  # one failed attempt, then the interval is respected
    assert [e["kind"] for e in _read_buffer(tmp_path / "out")] == ["params", "tags"] + ["metrics"] * 5
    assert sum("unreachable or failing" in r.getMessage() for r in caplog.records) == 1
    server.up, clock.t = True, clock.t + 30
    assert tr.log_metrics({"loss": 0.1}, 6, timestamp_ms=6000) is True  # creates the run, flushes, then logs
    (run,) = server.runs.values()
    assert tr.run_id == "run0" and run["params"] == {"a": "1"} and run["tags"]["t"] == "x"
    assert [(m[3], m[2]) for m in run["metrics"]] == [(s, s * 1000) for s in range(1, 7)]  # order, original ts
    assert not (tmp_path / "out" / BUFFER_NAME).exists()
    assert tr.finish() and run["status"] == "FINISHED"


def test_unit_restart_continues_the_run_without_duplicate_steps(tmp_path):
    server = _FakeServer()
    a = _tracker(tmp_path, server)
    a.start()
    for step in range(1, 6):
        a.log_metrics({"loss": float(step)}, step)
    run_id = a.run_id  # the checkpoint at step 3 stored it; killed after step 5
    b = _tracker(tmp_path, server, run_id=run_id, resumed=True)
    b.start()
    for step in range(4, 9):  # steps 4 and 5 are re-done after resuming from step 3
        b.log_metrics({"loss": step + 100.0}, step)
    b.finish()
    (run,) = server.runs.values()
    assert _steps(run) == list(range(1, 9))
    assert [m[1] for m in run["metrics"]][3:5] == [4.0, 5.0]  # the first recording of a step is kept


def test_unit_kill_while_down_torn_line_restart_down_then_back(tmp_path):
    server = _FakeServer()
    server.up = False
    a = _tracker(tmp_path, server)
    a.start()
    a.log_params({"a": 1})
    for step in range(1, 5):
        a.log_metrics({"loss": float(step)}, step)
    with open(tmp_path / "out" / BUFFER_NAME, "a") as f:
        f.write('{"kind": "metrics", "step": 5, "metr')  # killed in the middle of a line
    # restart from a checkpoint at step 2 (no run id known yet), server still down
    b = _tracker(tmp_path, server, resumed=True)
    assert b.start() is False
    for step in range(3, 7):
        b.log_metrics({"loss": float(step)}, step)
    server.up = True
    assert b.finish()
    (run,) = server.runs.values()
    assert _steps(run) == list(range(1, 7)) and run["params"] == {"a": "1"} and run["status"] == "FINISHED"


def test_unit_lost_response_is_not_logged_twice(tmp_path):
    server, clock = _FakeServer(), _Clock()
    tr = _tracker(tmp_path, server, clock)
    tr.start()
    tr.log_metrics({"loss": 1.0}, 1)
    server.lose_response = True
    assert tr.log_metrics({"loss": 2.0}, 2) is False  # stored on the server, but we could not know: buffered
    clock.t += 31
    tr.log_metrics({"loss": 3.0}, 3)  # reconnect asks the server what it holds: step 2 is not sent again
    assert _steps(server.runs[tr.run_id]) == [1, 2, 3] and tr.pending() == 0


def test_unit_refused_entry_is_set_aside_not_blocking(tmp_path):
    server = _FakeServer()
    tr = _tracker(tmp_path, server)
    tr.start()
    tr.log_params({"a": 1})
    server.up = False
    tr.log_params({"a": 2})  # will be refused for good once the server is back
    tr.log_metrics({"loss": 1.0}, 1)
    server.up = True
    assert tr.flush()
    rejected = [json.loads(x) for x in (tmp_path / "out" / REJECTED_NAME).read_text().splitlines()]
    assert rejected[0]["entry"]["params"] == {"a": "2"} and "param a changed" in rejected[0]["error"]
    assert _steps(server.runs[tr.run_id]) == [1]


def test_unit_buffered_artifact_is_copied(tmp_path):
    server = _FakeServer()
    server.up = False
    tr = _tracker(tmp_path, server)
    src = tmp_path / "ckpt" / "trainer.json"
    src.parent.mkdir()
    src.write_text('{"step": 3}')
    tr.log_artifact(src, artifact_path="checkpoint")
    shutil.rmtree(src.parent)  # checkpoint rotated away before the server came back
    server.up = True
    assert tr.finish()
    assert server.runs[tr.run_id]["artifacts"] == {"checkpoint/trainer.json": b'{"step": 3}'}
    assert not (tmp_path / "out" / FILES_DIR).exists()


def test_unit_same_config_restart_from_scratch_keeps_run_new_config_starts_new(tmp_path):
    server = _FakeServer()
    a = _tracker(tmp_path, server, config={"lr": 1})
    a.start()
    a.log_metrics({"loss": 1.0}, 1)  # killed before the first checkpoint
    b = _tracker(tmp_path, server, config={"lr": 1})  # same training re-run from step 0
    b.start()
    assert b.run_id == a.run_id
    server.up = False
    b.log_metrics({"loss": 2.0}, 2)  # buffered, then the user starts a different training in the folder
    server.up = True
    c = _tracker(tmp_path, server, config={"lr": 2})
    c.start()
    assert c.run_id != a.run_id and len(server.runs) == 2
    (orphan,) = (tmp_path / "out").glob("mlflow_orphaned-*")
    assert ResilientTracker.from_dir(orphan, backend_factory=server.backend).flush()
    assert _steps(server.runs[a.run_id]) == [1, 2]


def test_unit_missing_run_starts_a_new_one_and_fail_fast_env(tmp_path, monkeypatch):
    for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "5")  # set by the operator: kept
    server = _FakeServer()
    tr = _tracker(tmp_path, server, run_id="gone", resumed=True)
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0" and os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
    assert os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] == "5"
    assert tr.start() and tr.run_id == "run0"


def test_unit_retry_interval_backs_off_while_down_and_resets(tmp_path):
    server, clock = _FakeServer(), _Clock()
    server.up = False
    tr = _tracker(tmp_path, server, clock)

    def attempts(start: int, stop: int) -> list[int]:
        seen = []
        for second in range(start, stop, 5):  # one metric every 5 s
            clock.t, before = 1000.0 + second, server.calls
            tr.log_metrics({"loss": 1.0}, second + 1)
            if server.calls > before:
                seen.append(second)
        return seen

    assert attempts(0, 400) == [0, 30, 90, 210]  # 30 s, doubling per failure (capped at 300 s)
    server.up = True
    assert attempts(400, 460) == [450, *range(455, 460, 5)]  # back: every call goes through
    server.up = False
    assert attempts(460, 520) == [460, 490]  # a new outage starts at the base interval again
    assert tr.pending() > 0 and len(_steps(server.runs[tr.run_id])) == len(range(0, 460, 5))


def test_trainer_creates_experiment_with_configured_artifact_location(tmp_path, tiny_shards, monkeypatch):
    """A plain `python -m training` run that creates the experiment puts artifacts in the configured store,
    not in ./mlruns of whatever directory it was started from."""
    from mlflow import MlflowClient

    from training.trainer import TrainConfig, Trainer

    cwd, arts = tmp_path / "cwd", tmp_path / "store" / "artifacts"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    cfg = TrainConfig(index_paths=[str(tiny_shards)], out_dir=str(tmp_path / "out"), preset="micro_pixel", steps=1, batch_size=2, lr=1e-3,
                      ckpt_every=1, warmup_steps=1, log_every=1, mlflow_uri=uri, mlflow_experiment="loc-test",
                      mlflow_artifact_location=str(arts))
    old = signal.getsignal(signal.SIGTERM)
    try:
        summary = Trainer(cfg).run()
    finally:
        signal.signal(signal.SIGTERM, old)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("loc-test")
    assert exp.artifact_location == arts.resolve().as_uri()
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.artifact_uri.startswith(arts.resolve().as_uri())
    assert any(p.is_file() for p in arts.rglob("*")) and not (cwd / "mlruns").exists()
