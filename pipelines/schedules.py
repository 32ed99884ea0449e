"""Retraining schedule: weekly by default, and only when the shards changed since the last trained model.

The decision is a pure function of two timestamps (:func:`retrain_decision`) so it is testable without a
daemon. Each retraining is a fresh run folder ``lake/training/retrain-<YYYYMMDD-HHMM>`` trained on every
drop's shards; ``train_job`` then samples its gallery, evaluates it and refreshes the run comparison, so
every retrained model lands in the MLflow comparison next to the previous ones.

Configuration (environment, read when the code location loads):

- ``RDTF_RETRAIN_CRON``   cron string (default ``0 3 * * 1``: Mondays 03:00)
- ``RDTF_RETRAIN_TZ``     IANA time zone of the cron (default ``UTC``)
- ``RDTF_RETRAIN_STEPS``  optimizer steps per retraining (default 2000)
- ``RDTF_RETRAIN_PRESET`` DFGN preset (default ``tiny_pixel``; ``paper`` on a GPU cluster)
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from assets.shards import SHARD_ASSET
from assets.training import TRAIN_ASSET
from pipelines.jobs import train_job

DEFAULT_CRON = "0 3 * * 1"


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool  # launch a run?
    reason: str  # shown in the UI (tick history) either way
    run_key: str | None = None  # idempotency key: one retraining per shard state


def retrain_decision(latest_shards_ts: float | None, latest_model_ts: float | None) -> RetrainDecision:
    """Retrain iff some drop's shards were (re)materialized after the latest trained model."""
    if latest_shards_ts is None:
        return RetrainDecision(False, "no shards materialized yet: nothing to train on")
    if latest_model_ts is not None and latest_shards_ts <= latest_model_ts:
        return RetrainDecision(False, "shards unchanged since the last trained model")
    return RetrainDecision(True, "shards changed since the last trained model", run_key=f"shards@{latest_shards_ts:.3f}")


def _latest_ts(context: ScheduleEvaluationContext, asset: str) -> float | None:
    """Timestamp (s) of the newest materialization of ``asset``, over all its partitions."""
    from dagster import AssetRecordsFilter

    recs = context.instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey(asset)), limit=1)
    return recs.records[0].timestamp if recs.records else None


def retrain_run_config(run_name: str, steps: int, preset: str) -> dict:
    return {"ops": {
        TRAIN_ASSET: {"config": {"run_name": run_name, "steps": steps, "preset": preset, "ckpt_every": max(1, steps // 10)}},
        "sample_gallery": {"config": {"run_name": run_name}},
        "evaluation_samples": {"config": {"run_name": run_name}},
    }}


@schedule(
    job=train_job,
    cron_schedule=os.environ.get("RDTF_RETRAIN_CRON", DEFAULT_CRON),
    execution_timezone=os.environ.get("RDTF_RETRAIN_TZ", "UTC"),
    default_status=DefaultScheduleStatus.STOPPED,  # switched on deliberately (UI Automation tab or CLI)
    description="Weekly retraining on all drops' shards, only when shards changed since the last trained model; "
                "then gallery, evaluation and run comparison.",
)
def retrain_schedule(context: ScheduleEvaluationContext):
    d = retrain_decision(_latest_ts(context, SHARD_ASSET), _latest_ts(context, TRAIN_ASSET))
    if not d.retrain:
        return SkipReason(d.reason)
    when = context.scheduled_execution_time  # set by the daemon (and by build_schedule_context in tests)
    run_name = f"retrain-{when:%Y%m%d-%H%M}"
    steps = int(os.environ.get("RDTF_RETRAIN_STEPS", "2000"))
    preset = os.environ.get("RDTF_RETRAIN_PRESET", "tiny_pixel")
    return RunRequest(run_key=d.run_key, run_config=retrain_run_config(run_name, steps, preset),
                      tags={"rdtf/trigger": "retrain_schedule", "rdtf/reason": d.reason})
