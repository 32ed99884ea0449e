"""The small surface of MLflow that training's tracker needs (``TrackingBackend``), its MLflow implementation, and
the classification of MLflow errors into transient / permanent / missing.

Tests substitute a fake backend to exercise the tracker's buffering without a server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

RUN_KEY_TAG = "rdtf.run_key"  # the tag that finds a run again whose creation response got lost

FAIL_FAST_HTTP_ENV = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",  # default 7 with exponential back-off; the buffer retries instead
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # seconds (an int in MLflow); default 2
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",  # default 1.0
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",  # seconds per request; default 120
}

# MLflow error codes that mean "this request will never succeed" (the entry is set aside, not retried).
PERMANENT_ERRORS = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "MALFORMED_REQUEST", "INVALID_STATE",
                              "RESOURCE_ALREADY_EXISTS", "RESOURCE_LIMIT_EXCEEDED"})
MISSING_ERRORS = frozenset({"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"})

MAX_METRICS_PER_BATCH = 1000  # MLflow log_batch limits
MAX_PARAMS_PER_BATCH = 100


def fail_fast_http_env(environ: dict | None = None) -> None:
    """Make MLflow's HTTP client give up within seconds (only variables not set already)."""
    env = os.environ if environ is None else environ
    for k, v in FAIL_FAST_HTTP_ENV.items():
        env.setdefault(k, v)


def error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "error_code", None)
    return code if isinstance(code, str) else None


def is_permanent(exc: BaseException) -> bool:
    return error_code(exc) in PERMANENT_ERRORS


def is_missing(exc: BaseException) -> bool:
    return error_code(exc) in MISSING_ERRORS


class TrackingBackend(Protocol):
    """What the tracker needs from a tracking service. Methods raise on failure (any exception)."""

    def experiment_id(self, name: str, artifact_location: str | None = None) -> str: ...

    def find_run(self, experiment_id: str, run_key: str) -> str | None: ...

    def create_run(self, experiment_id: str, run_name: str | None, tags: dict[str, str]) -> str: ...

    def open_run(self, run_id: str, reopen: bool) -> dict[str, int]:
        """Check the run exists (raise a RESOURCE_DOES_NOT_EXIST error if not), mark it RUNNING when ``reopen``,
        and return the highest step it holds per metric key."""
        ...

    def log_metrics(self, run_id: str, metrics: list[tuple[str, float, int, int]]) -> None:
        """(key, value, timestamp ms, step) rows."""
        ...

    def log_params(self, run_id: str, params: dict[str, str]) -> None: ...

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None: ...

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None: ...

    def end_run(self, run_id: str, status: str, end_time: int) -> None: ...


def ensure_experiment(client, name: str, artifact_location: str | None = None) -> str:
    """Id of experiment ``name``; created with ``artifact_location`` when it does not exist yet.

    ``client``: an ``MlflowClient`` or a tracking URI. A plain path becomes a ``file://`` URI; None keeps MLflow's
    default (``./mlruns`` of the *current* directory for local stores — rarely what a pipeline wants, hence the
    option everywhere an experiment can be created first: trainer, evaluation, comparison, ablation). An
    existing experiment keeps its location (MLflow cannot move it). Safe against concurrent creation.
    """
    if isinstance(client, str):
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=client)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    if artifact_location and "://" not in artifact_location:
        artifact_location = Path(artifact_location).expanduser().resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifact_location or None)
    except Exception as e:  # created concurrently
        if error_code(e) != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


class MlflowBackend:
    """``TrackingBackend`` over ``mlflow.MlflowClient`` (any tracking URI: http(s)://, sqlite:///, file:)."""

    def __init__(self, tracking_uri: str):
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)

    def experiment_id(self, name: str, artifact_location: str | None = None) -> str:
        return ensure_experiment(self.client, name, artifact_location)

    def find_run(self, experiment_id: str, run_key: str) -> str | None:
        runs = self.client.search_runs([experiment_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'",
                                       max_results=1)
        return runs[0].info.run_id if runs else None

    def create_run(self, experiment_id: str, run_name: str | None, tags: dict[str, str]) -> str:
        try:  # the default tags of mlflow.start_run (user, source name/type, git commit)
            from mlflow.tracking.context.registry import resolve_tags

            tags = resolve_tags(tags)
        except Exception:  # noqa: BLE001 - cosmetic only
            pass
        return self.client.create_run(experiment_id, run_name=run_name, tags=tags).info.run_id

    def open_run(self, run_id: str, reopen: bool) -> dict[str, int]:
        run = self.client.get_run(run_id)
        if reopen and run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        hwm = {}
        for key in run.data.metrics:
            steps = [m.step for m in self.client.get_metric_history(run_id, key)]
            if steps:
                hwm[key] = max(steps)
        return hwm

    def log_metrics(self, run_id: str, metrics: list[tuple[str, float, int, int]]) -> None:
        from mlflow.entities import Metric

        rows = [Metric(k, float(v), int(ts), int(step)) for k, v, ts, step in metrics]
        for i in range(0, len(rows), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=rows[i: i + MAX_METRICS_PER_BATCH], synchronous=True)

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        rows = [Param(k, str(v)) for k, v in params.items()]
        for i in range(0, len(rows), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=rows[i: i + MAX_PARAMS_PER_BATCH], synchronous=True)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        rows = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, len(rows), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(run_id, tags=rows[i: i + MAX_PARAMS_PER_BATCH], synchronous=True)

    def log_artifact(self, run_id: str, path: str, artifact_path: str | None) -> None:
        self.client.log_artifact(run_id, path, artifact_path=artifact_path)

    def end_run(self, run_id: str, status: str, end_time: int) -> None:
        self.client.set_terminated(run_id, status=status, end_time=end_time)


# ------------------------------------------------------------------------------------------- tracker
