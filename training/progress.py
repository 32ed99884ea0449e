"""Rank-0 training progress, live: Dagster Pipes log events and console lines while training runs.

Why: the Dagster asset used to hear from the trainer only at the end (Pipes was opened after training), so a
17-minute demo training — or an hours-long one at scale — showed one empty bar, and a hang looked like
progress. Now rank 0 opens Pipes when it starts (``open_pipes``); :class:`Progress` then reports, at most every
``interval_s`` seconds (``RDTF_PROGRESS_INTERVAL_S``, default 10) and on the first and last step, one line::

    step 40/200 (20%) | loss 0.1834 | 5.2 samples/s | ETA 0:00:31 | p(gen) 0.62 p(interp) 0.21 p(pred) 0.17

as a Dagster log event (the run's event log and timeline) and on stderr (the console and the compute logs).
Phases before the first step (building the model, opening the data) are reported too, so nothing is silent
for longer than the first step takes. The final metadata (with the loss and task-probability chart) is the
materialization reported by ``training.trainer`` at the end through the same Pipes connection.

Plain ``torchrun`` (no Dagster) gets the console lines only.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import sys
import time

log = logging.getLogger(__name__)

INTERVAL_ENV = "RDTF_PROGRESS_INTERVAL_S"
DEFAULT_INTERVAL_S = 10.0
TASK_LABELS = (("p_generation", "gen"), ("p_interpolation", "interp"), ("p_prediction", "pred"))


@contextlib.contextmanager
def open_pipes(rank: int):
    """The Dagster Pipes context on rank 0 of a Dagster-launched training (else ``None``), open for the whole run."""
    from dagster_pipes import DAGSTER_PIPES_CONTEXT_ENV_VAR, open_dagster_pipes

    if rank != 0 or DAGSTER_PIPES_CONTEXT_ENV_VAR not in os.environ:
        yield None
        return
    with open_dagster_pipes() as pipes:
        yield pipes


def format_eta(seconds: float) -> str:
    if not seconds == seconds or seconds < 0 or seconds == float("inf"):  # NaN / negative / inf: unknown
        return "?"
    return str(dt.timedelta(seconds=int(round(seconds))))


def progress_line(step: int, target: int, metrics: dict, samples_per_s: float, eta_s: float) -> str:
    """One human line with step, loss, throughput, ETA and the curriculum's task probabilities (pure)."""
    pct = 100.0 * step / target if target else 100.0
    parts = [f"step {step}/{target} ({pct:.0f}%)"]
    if "loss" in metrics:
        parts.append(f"loss {metrics['loss']:.4f}")
    parts += [f"{samples_per_s:.1f} samples/s", f"ETA {format_eta(eta_s)}"]
    probs = [f"p({label}) {metrics[f'curriculum_{key}']:.2f}" for key, label in TASK_LABELS
             if f"curriculum_{key}" in metrics]
    if probs:
        parts.append(" ".join(probs))
    return " | ".join(parts)


def throttled(report, interval_s: float | None = None, clock=time.monotonic):
    """``report(message)`` at most every ``interval_s`` seconds (``RDTF_PROGRESS_INTERVAL_S``, default 10);
    ``force=True`` always reports (a first or last line). For long loops outside training (evaluation sampling,
    the gallery) whose caller hands in ``context.log.info``, so the Dagster run log moves while they work."""
    interval = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)) if interval_s is None else interval_s
    last = [-float("inf")]

    def tick(message: str, force: bool = False) -> bool:
        now = clock()
        if not force and now - last[0] < interval:
            return False
        last[0] = now
        report(message)
        return True

    return tick


class Progress:
    """Throttled progress reports of rank 0 (see the module docstring)."""

    def __init__(self, pipes, target: int, start_step: int, *, interval_s: float | None = None,
                 clock=time.monotonic, stream=None):
        self.pipes, self.target, self.start_step = pipes, int(target), int(start_step)
        self.interval_s = float(os.environ.get(INTERVAL_ENV, DEFAULT_INTERVAL_S)) if interval_s is None else interval_s
        self.clock, self.stream = clock, stream if stream is not None else sys.stderr
        self.t0 = clock()
        self._last = -float("inf")
        self.lines = 0

    def say(self, message: str) -> None:
        """Report one line now (a phase change, a warning worth seeing live)."""
        self.stream.write(f"[train] {message}\n")
        self.stream.flush()
        if self.pipes is not None:
            try:
                self.pipes.log.info(message)
            except Exception as e:  # noqa: BLE001 - a broken Pipes channel must not stop training
                log.warning("Dagster Pipes log failed (%s); progress continues on the console", e)
                self.pipes = None
        self.lines += 1

    def update(self, step: int, metrics: dict) -> bool:
        """Report if the interval passed (or on the first / last step); returns whether a line was written."""
        now = self.clock()
        first, last = step == self.start_step + 1, step >= self.target
        if not (first or last or now - self._last >= self.interval_s):
            return False
        done = step - self.start_step
        elapsed = max(now - self.t0, 1e-9)
        rate_steps = done / elapsed
        samples_per_s = float(metrics.get("samples_per_s", 0.0))
        eta = (self.target - step) / rate_steps if rate_steps > 0 else float("inf")
        self.say(progress_line(step, self.target, metrics, samples_per_s, eta))
        self._last = now
        return True
