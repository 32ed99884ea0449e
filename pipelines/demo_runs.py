"""The demo's runs go through the Dagster instance the UI reads: the daemon ticks the sensor, runs are launched.

``pipelines.demo`` used to materialize with ``execute_in_process`` and to call the sensor function by hand, so the
UI's Jobs pages and Overview timeline showed "No runs found" and ``new_drop_sensor`` "never run". Here:

- :func:`daemon` starts ``dagster-daemon run -w workspace.yaml`` (its own process group, stopped on exit): the
  sensor ticks as a sensor, the queued-run coordinator launches runs with the code location's origin.
- :func:`launch` submits a job run with ``dagster job launch -w workspace.yaml`` (queued; the daemon starts it).
- :func:`follow` streams a run's step events and log lines (the training's live progress included) to the console
  until it ends, with a heartbeat line when a step is quiet for a while — the demo never goes silent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from pipelines.env import PROJECT_ROOT

BIN = Path(sys.executable).parent
ECHO_EVENTS = {DagsterEventType.STEP_START: "started", DagsterEventType.STEP_SUCCESS: "done",
               DagsterEventType.STEP_FAILURE: "FAILED", DagsterEventType.ASSET_CHECK_EVALUATION: "check"}
LIVE_PREFIXES = ("preparing", "training steps", "step ", "checkpoint step-", "resumed", "launching", "sampling ")
HEARTBEAT_S = 12.0
DONE = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}


def _env() -> dict:
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}


@contextlib.contextmanager
def daemon(log_dir: Path):
    """``dagster-daemon run`` for the duration (sensors, schedules, run queue); its log in ``log_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    with open(log_dir / "dagster-daemon.log", "ab") as log:
        proc = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=PROJECT_ROOT,
                                env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 5)):
            if proc.poll() is not None:
                break
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)


def launch(job: str, run_config: dict, tags: dict[str, str]) -> str:
    """Queue a run of ``job`` through the workspace (the daemon launches it); returns its run id."""
    run_id = str(uuid.uuid4())
    cmd = [str(BIN / "dagster"), "job", "launch", "-w", "workspace.yaml", "-j", job, "--run-id", run_id,
           "--config-json", json.dumps(run_config), "--tags", json.dumps(tags)]
    res = subprocess.run(cmd, cwd=PROJECT_ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    if res.returncode != 0:
        raise RuntimeError(f"dagster job launch {job} failed: {res.stderr.strip()[-2000:]}")
    return run_id


def _check_daemon(daemon: subprocess.Popen | None) -> None:
    if daemon is not None and daemon.poll() is not None:
        raise RuntimeError(f"dagster-daemon exited with code {daemon.returncode}; see its log under RDTF_HOME/logs")


def wait_for_sensor_run(instance: DagsterInstance, sensor: str, partition: str, timeout_s: float = 180.0, *,
                        daemon: subprocess.Popen | None = None) -> str | None:
    """The run a sensor tick requested for ``partition`` (None if it did not within ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_daemon(daemon)
        runs = instance.get_runs(RunsFilter(tags={"dagster/sensor_name": sensor, "dagster/partition": partition}),
                                 limit=1)
        if runs:
            return runs[0].run_id
        time.sleep(1.0)
    return None


def follow(instance: DagsterInstance, run_id: str, *, timeout_s: float = 3600.0, out=None,
           daemon: subprocess.Popen | None = None) -> DagsterRunStatus:
    """Print the run's progress until it ends; returns its final status (RuntimeError if ``daemon`` dies first:
    a queued run would wait for it forever)."""
    out = out or sys.stdout
    cursor, t0, last_print = None, time.monotonic(), time.monotonic()
    running: list[str] = []  # steps started and not yet ended, in start order (several run at once)
    while time.monotonic() - t0 < timeout_s:
        run = instance.get_run_by_id(run_id)
        page = instance.get_records_for_run(run_id, cursor=cursor)  # only the events since the last poll
        cursor = page.cursor
        for entry in (r.event_log_entry for r in page.records):
            line = None
            ev = entry.dagster_event
            if ev is not None and ev.event_type in ECHO_EVENTS:
                what = ECHO_EVENTS[ev.event_type]
                if ev.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
                    data = ev.event_specific_data
                    line = f"check {data.check_name}: {'passed' if data.passed else 'FAILED'}"
                else:
                    line = f"{ev.step_key}: {what}"
                    if ev.event_type == DagsterEventType.STEP_START:
                        running.append(ev.step_key)
                    elif ev.step_key in running:
                        running.remove(ev.step_key)
            elif ev is None and entry.user_message and entry.user_message.startswith(LIVE_PREFIXES):
                line = f"{entry.step_key or ''}: {entry.user_message}".lstrip(": ")
            if line:
                out.write(f"      {time.monotonic() - t0:6.0f}s  {line}\n")
                out.flush()
                last_print = time.monotonic()
        if run is not None and run.status in DONE:
            return run.status
        if run is None or run.status in (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED):
            _check_daemon(daemon)  # a started run goes on without the daemon (its own process)
        if time.monotonic() - last_print > HEARTBEAT_S:
            status = run.status.value.lower() if run is not None else "unknown"
            out.write(f"      {time.monotonic() - t0:6.0f}s  ... {', '.join(running) or 'waiting'} ({status})\n")
            out.flush()
            last_print = time.monotonic()
        time.sleep(1.0)
    raise TimeoutError(f"run {run_id} did not finish within {timeout_s:.0f} s")
