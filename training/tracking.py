"""Resilient MLflow tracking for the trainer (rank 0): an unreachable tracking server never stops training.

Every MLflow call of a training (create/resume the run, params, tags, metrics, artifacts, end) goes through
:class:`ResilientTracker`. When the tracking server (or store) cannot be reached or fails, the call is
appended to a durable buffer in the training folder and a warning is logged once; training goes on. The
buffer is sent, in order and with each entry's original step and timestamp, on the next call after the
retry interval, at finish, when a restarted trainer resumes, or with::

    python -m training.tracking flush OUT_DIR [--tracking-uri URI]     # exit 0 when nothing is left buffered
    python -m training.tracking status OUT_DIR

Files in ``OUT_DIR`` (one writer per folder, like the checkpoints):

- ``mlflow_state.json`` — tracking URI, experiment, run name, the MLflow run id once known, and a run key
  (a uuid, also the run's ``rdtf.run_key`` tag) so a run created while a response got lost is found again
  instead of being created twice. With the run id stored in the checkpoints too, a training stays ONE
  MLflow run across kills, restarts and server outages — also when the server was down at the start: the
  run is created when the server answers and the buffered history is attached to it.
- ``mlflow_buffer.jsonl`` — one JSON entry per line (``kind`` params | tags | metrics | artifact | end, ``ts``
  in ms, ``step``), fsync'd on append; rewritten atomically (temp file + rename) after a (partial) flush, and
  deleted once empty. A line torn by a kill is dropped when the buffer is next opened. Buffered artifacts are
  copied to ``mlflow_buffer_files/`` (checkpoint folders rotate away before the server may return).
- ``mlflow_rejected.jsonl`` — entries the server refused for good (invalid parameter, …): kept with the error
  instead of blocking the buffer forever.

Coherent metric history, nothing lost or duplicated: per metric key the steps must increase. The tracker
knows the highest step the run already holds for every key (asked from the server whenever it (re)connects,
updated on every successful write), and drops a metric whose step is not above it. That is exactly the case
of steps re-done after a resume from an earlier checkpoint (the killed attempt had logged them already —
resume is deterministic, so it is the same value), and of entries re-sent after a flush whose confirmation
got lost. Each step therefore appears once, with the value and timestamp of its first recording. Params,
tags, artifacts and the end status are idempotent and simply re-sent.

Which run a (re)started trainer continues: the run id of the checkpoint it resumed from; else, when it
resumed (step > 0) or its TrainConfig is unchanged (``fingerprint``), the run in ``mlflow_state.json`` (a
kill before the first checkpoint re-runs the same training into the same run); otherwise a new run — the
previous state and its unsent buffer are moved to ``mlflow_orphaned-<time>/`` (flushable with the CLI).

MLflow's own HTTP retries (7 retries with exponential back-off, 120 s timeout: minutes per call) are cut to
one attempt with a 10 s timeout (``FAIL_FAST_HTTP_ENV``, only where not set already; the buffer is the retry).
After a failure the server is left alone for ``retry_after_s`` (``RDTF_MLFLOW_RETRY_S``, default 30 s), doubling
per consecutive failure up to ``MAX_RETRY_S`` (a hung server costs a timeout per attempt), and everything goes
straight to the buffer meanwhile.

``TrackingBackend`` (``training.tracking_backend``) is the small surface the tracker needs from MLflow; the buffer
files are ``training.tracking_buffer``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data.atomic import atomic_write
from data.redact import redact_text, redact_uri  # shown URIs never carry credentials
from training.tracking_backend import (  # noqa: F401 - FAIL_FAST_HTTP_ENV: re-exported
    FAIL_FAST_HTTP_ENV,
    RUN_KEY_TAG,
    MlflowBackend,
    TrackingBackend,
    ensure_experiment,
    fail_fast_http_env,
    is_missing,
    is_permanent,
)
from training.tracking_buffer import (  # noqa: F401 - the file names are part of this module's interface
    BUFFER_NAME,
    FILES_DIR,
    REJECTED_NAME,
    STATE_NAME,
    TrackingBuffer,
    set_aside,
)

log = logging.getLogger("rdtf.tracking")

RETRY_ENV = "RDTF_MLFLOW_RETRY_S"
DEFAULT_RETRY_S = 30.0
MAX_RETRY_S = 300.0


def fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _now_ms() -> int:
    return int(time.time() * 1000)


class _Down(Exception):
    """Internal: the tracking service failed transiently (wraps the cause)."""


class ResilientTracker:
    """Rank-0 MLflow logging that buffers to disk instead of failing; see the module docstring.

    Build it with :meth:`for_training` (the trainer) or :meth:`from_dir` (flush an existing folder).
    ``log_*``/``set_tags``/``finish`` never raise because of the tracking service; they return True when the
    entry reached it (or was already there) and False when it was buffered.
    """

    def __init__(self, out_dir: str | Path, state: dict, *, reopen: bool = True, retry_after_s: float | None = None,
                 backend_factory: Callable[[str], TrackingBackend] | None = None, clock: Callable[[], float] = time.monotonic):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.buffer = TrackingBuffer(self.dir)
        self.state = state
        self.reopen = reopen
        self.retry_after_s = float(os.environ.get(RETRY_ENV, DEFAULT_RETRY_S)) if retry_after_s is None else retry_after_s
        self._factory = backend_factory or MlflowBackend
        self._clock = clock
        self._backend: TrackingBackend | None = None
        self._connected = False
        self._next_try = 0.0
        self._failures = 0  # consecutive failed attempts (back-off)
        self._down = False
        self._hwm: dict[str, int] = {}  # highest step the run holds per metric key (valid while connected)
        self._save_state()
        self.buffer.repair()

    # -------------------------------------------------------------------------- construction

    @classmethod
    def for_training(cls, out_dir: str | Path, tracking_uri: str, experiment: str, *, run_name: str | None = None,
                     run_id: str | None = None, resumed: bool = False, config: Any = None,
                     artifact_location: str | None = None, **kw) -> ResilientTracker:
        """The tracker of a (re)started training in ``out_dir``.

        ``artifact_location``: where the experiment stores artifacts if this training creates it (see
        :func:`ensure_experiment`).
        ``run_id``: the MLflow run id stored in the checkpoint it resumed from (None: none known);
        ``resumed``: it continues from a checkpoint; ``config``: its TrainConfig (as a dict) — an unchanged
        config restarted from scratch continues the same run.
        """
        fail_fast_http_env()
        out = Path(out_dir)
        old = _read_json(out / STATE_NAME)
        fp = fingerprint(config) if config is not None else None
        same_target = bool(old) and old.get("tracking_uri") == tracking_uri and old.get("experiment") == experiment
        fresh = {"tracking_uri": tracking_uri, "experiment": experiment, "run_name": run_name, "run_id": run_id,
                 "run_key": uuid.uuid4().hex, "fingerprint": fp}
        if run_id:
            state = {**old, "fingerprint": fp, "run_name": run_name} if same_target and old.get("run_id") == run_id else fresh
        elif same_target and (resumed or (fp is not None and old.get("fingerprint") == fp)):
            state = {**old, "fingerprint": fp}
        else:
            state = fresh
        if old and state is fresh:
            set_aside(out, old)
        state["artifact_location"] = artifact_location
        return cls(out, state, **kw)

    @classmethod
    def from_dir(cls, out_dir: str | Path, tracking_uri: str | None = None, **kw) -> ResilientTracker:
        """The tracker of an existing folder (its ``mlflow_state.json``), e.g. to flush what is left buffered.

        Does not mark the run RUNNING again (``reopen=False``) unless asked.
        """
        fail_fast_http_env()
        state = _read_json(Path(out_dir) / STATE_NAME)
        if not state:
            raise FileNotFoundError(f"no {STATE_NAME} in {out_dir}: nothing was tracked there")
        if tracking_uri:
            state["tracking_uri"] = tracking_uri
        kw.setdefault("reopen", False)
        return cls(out_dir, state, **kw)

    # -------------------------------------------------------------------------- public API

    @property
    def run_id(self) -> str | None:
        return self.state.get("run_id")

    @property
    def tracking_uri(self) -> str:
        return self.state["tracking_uri"]

    @property
    def buffer_path(self) -> Path:
        return self.buffer.path

    def start(self) -> bool:
        """Connect (create or resume the run) and send what an earlier attempt left buffered."""
        return self._connect_and_flush(force=True)

    def log_params(self, params: dict[str, Any]) -> bool:
        return self._submit({"kind": "params", "params": {k: str(v) for k, v in params.items()}})

    def set_tags(self, tags: dict[str, Any]) -> bool:
        return self._submit({"kind": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: int | None = None) -> bool:
        return self._submit({"kind": "metrics", "step": int(step), "ts": timestamp_ms or _now_ms(),
                             "metrics": {k: float(v) for k, v in metrics.items()}})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> bool:
        return self._submit({"kind": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def finish(self, status: str = "FINISHED") -> bool:
        """End the run (tries the server even inside the retry interval); True when nothing is left buffered."""
        self._submit({"kind": "end", "status": status}, force=True)
        left = self.pending()
        if left:
            log.warning("MLflow: %d entries remain buffered in %s; they are sent when this training resumes or with "
                        "`python -m training.tracking flush %s`", left, self.buffer_path, self.dir)
        return left == 0

    def flush(self, force: bool = True) -> bool:
        """Send the buffer now; True when nothing is left buffered."""
        self._connect_and_flush(force=force)
        return self.pending() == 0

    def pending(self) -> int:
        return len(self.buffer.read())

    # -------------------------------------------------------------------------- internals

    def _submit(self, entry: dict, force: bool = False) -> bool:
        entry.setdefault("ts", _now_ms())
        if self._connect_and_flush(force):
            try:
                self._apply([entry])
                return True
            except _Down:
                pass
        try:
            self.buffer.append([entry])
        except OSError as e:  # e.g. disk full: the checkpoints will fail too; do not kill training for a metric
            log.error("MLflow: could not buffer a %s entry to %s: %s", entry["kind"], self.buffer_path, e)
        return False

    def _connect_and_flush(self, force: bool) -> bool:
        if not force and self._clock() < self._next_try:
            return False
        try:
            if not self._connected:
                self._connect()
            self._flush_buffer()
            return True
        except _Down:
            return False
        except Exception as e:  # refused while connecting (e.g. a deleted experiment): keep buffering, retry later
            self._went_down(e)
            return False

    def _call(self, fn: Callable, *args):
        """Run a backend call; transient failures mark the service down and raise _Down."""
        try:
            return fn(*args)
        except Exception as e:
            if is_permanent(e):
                raise
            self._went_down(e)
            raise _Down() from e

    def _went_down(self, exc: BaseException) -> None:
        self._connected = False
        self._failures += 1
        wait = min(self.retry_after_s * 2 ** min(self._failures - 1, 16), max(MAX_RETRY_S, self.retry_after_s))
        self._next_try = self._clock() + wait
        if not self._down:
            log.warning("MLflow tracking at %s is unreachable or failing (%s: %s); training continues and logging "
                        "is buffered to %s (next attempt in %.0f s)", redact_uri(self.tracking_uri), type(exc).__name__,
                        redact_text(str(exc))[:300], self.buffer_path, wait)
        self._down = True

    def _connect(self) -> None:
        if self._backend is None:
            self._backend = self._call(self._factory, self.tracking_uri)
        b, run_id = self._backend, self.state.get("run_id")
        hwm = None
        if run_id:
            try:
                hwm = b.open_run(run_id, self.reopen)
            except Exception as e:
                if not is_missing(e):
                    if is_permanent(e):
                        raise
                    self._went_down(e)
                    raise _Down() from e
                log.warning("MLflow run %s does not exist at %s: logging to a new run", run_id, redact_uri(self.tracking_uri))
                run_id, hwm = None, None
                self.state["run_key"] = uuid.uuid4().hex
        if not run_id:
            loc = self.state.get("artifact_location")
            exp_id = self._call(b.experiment_id, self.state["experiment"], *([loc] if loc else []))
            run_id = self._call(b.find_run, exp_id, self.state["run_key"])
            if run_id:
                hwm = self._call(b.open_run, run_id, self.reopen)
            else:
                run_id = self._call(b.create_run, exp_id, self.state.get("run_name"), {RUN_KEY_TAG: self.state["run_key"]})
                hwm = {}
            self.state["run_id"] = run_id
            self._save_state()
        self._hwm = dict(hwm or {})
        self._connected, self._failures = True, 0
        if self._down:
            log.warning("MLflow tracking at %s is reachable again (run %s)", redact_uri(self.tracking_uri), run_id)
        self._down = False

    def _flush_buffer(self) -> None:
        entries = self.buffer.read()
        if not entries:
            return
        done = 0
        try:
            while done < len(entries):
                n = 1
                if entries[done]["kind"] == "metrics":  # consecutive metric entries go in one request
                    while done + n < len(entries) and entries[done + n]["kind"] == "metrics" and n < 200:
                        n += 1
                self._apply(entries[done: done + n])
                done += n
        finally:
            if done:
                self.buffer.rewrite(entries[done:])
        log.info("MLflow: sent %d buffered entries to run %s", done, self.run_id)

    def _apply(self, entries: list[dict]) -> None:
        """Send entries of one kind (several only for metrics); permanent refusals go to the rejected file."""
        b, run_id, kind = self._backend, self.state["run_id"], entries[0]["kind"]
        try:
            if kind == "metrics":
                hwm, rows = dict(self._hwm), []
                for e in entries:
                    for k, v in e["metrics"].items():
                        if e["step"] > hwm.get(k, -(2**62)):  # not above: already recorded (re-done step)
                            rows.append((k, v, e["ts"], e["step"]))
                            hwm[k] = e["step"]
                if rows:
                    self._call(b.log_metrics, run_id, rows)
                self._hwm = hwm
            elif kind == "params":
                self._call(b.log_params, run_id, entries[0]["params"])
            elif kind == "tags":
                self._call(b.set_tags, run_id, entries[0]["tags"])
            elif kind == "artifact":
                e = entries[0]
                path = self.dir / e["file"] if e.get("file") else Path(e["path"])
                if not path.exists():
                    raise FileNotFoundError(f"artifact {path} vanished before it could be sent")
                self._call(b.log_artifact, run_id, str(path), e.get("artifact_path"))
            elif kind == "end":
                self._call(b.end_run, run_id, entries[0].get("status", "FINISHED"), entries[0]["ts"])
            else:
                raise ValueError(f"unknown buffer entry kind {kind!r}")
        except _Down:
            raise
        except Exception as e:  # permanent: refused for good, or a broken entry
            self.buffer.reject(entries, e)

    def _save_state(self) -> None:
        atomic_write(self.dir / STATE_NAME, json.dumps(self.state, indent=2, sort_keys=True).encode())


SYSTEM_METRICS_INTERVAL_ENV = "RDTF_SYSTEM_METRICS_INTERVAL_S"  # seconds between samples (default 10; 0 = off)


def start_system_metrics(run_id: str | None, tracking_uri: str, interval_s: float | None = None):
    """MLflow's system-metrics monitor (CPU, memory, disk, network; GPU with pynvml) on the training run, or None.

    Started on rank 0 only, after the run exists; a tracking outage at start just leaves the run without these
    charts (``None``), it never stops training. Stop it with ``.finish()``.
    """
    if interval_s is None:
        interval_s = float(os.environ.get(SYSTEM_METRICS_INTERVAL_ENV, "10"))
    if not run_id or interval_s <= 0:
        return None
    try:
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

        monitor = SystemMetricsMonitor(run_id, sampling_interval=interval_s, resume_logging=True, tracking_uri=tracking_uri)
        monitor.start()
        return monitor
    except Exception as e:  # noqa: BLE001 - optional telemetry: never fail training for it
        log.warning("MLflow system metrics are off for run %s: %s", run_id, redact_text(str(e))[:200])
        return None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


# ------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Inspect or send the MLflow buffer of a training folder.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    fl = sub.add_parser("flush", help="send the buffered entries; exit 0 when nothing is left buffered")
    fl.add_argument("out_dir")
    fl.add_argument("--tracking-uri", default=None, help="override the URI stored in mlflow_state.json")
    st = sub.add_parser("status", help="print the run id, tracking URI and number of buffered entries")
    st.add_argument("out_dir")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.cmd == "flush":
        tracker = ResilientTracker.from_dir(args.out_dir, args.tracking_uri)
        ok = tracker.flush()
        print(json.dumps({"run_id": tracker.run_id, "tracking_uri": redact_uri(tracker.tracking_uri),
                          "pending": tracker.pending()}))
        return 0 if ok else 1
    tracker = ResilientTracker.from_dir(args.out_dir)
    print(json.dumps({"run_id": tracker.run_id, "tracking_uri": redact_uri(tracker.tracking_uri),
                      "pending": tracker.pending()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
