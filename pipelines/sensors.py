"""New-drop sensor: list DROPS_ROOT, add a partition per new ready drop, request its data run."""


import json

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from assets.ingest import INGEST_ASSET
from assets.partitions import drop_partitions
from assets.resources import LakeResource
from data.drops import list_ready_drops
from pipelines.jobs import drop_data_job


def _known(cursor: str | None) -> set[str]:
    if not cursor:
        return set()
    try:
        return set(json.loads(cursor))
    except (json.JSONDecodeError, TypeError):
        return set()  # a corrupt cursor only costs a re-scan; run_keys keep launches idempotent


def _drop_request(storage: LakeResource, drop_id: str) -> RunRequest:
    """The drop's run; a caption-less drop (READY marker) is ingested with the caption source it names."""
    from data.drops import captionless_source

    try:
        source = captionless_source(storage.drop_url(drop_id))
    except ValueError:
        source = None  # a bad marker: the run's ingest step fails with the message, visibly, instead of the sensor
    config = {"ops": {INGEST_ASSET: {"config": {"caption_source": source.value}}}} if source else None
    return RunRequest(run_key=f"drop:{drop_id}", partition_key=drop_id, run_config=config or {})


@sensor(
    job=drop_data_job,
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Adds a dynamic partition for each new ready drop (caption table, or a caption-less drop's READY "
                "marker) and ingests it.",
)
def new_drop_sensor(context: SensorEvaluationContext, storage: LakeResource):
    known = _known(context.cursor)
    existing = set(context.instance.get_dynamic_partitions(drop_partitions.name))
    ready = list_ready_drops(storage.drops_root)
    new = [d for d in ready if d not in known and d not in existing]
    if not new:
        return SkipReason(f"no new ready drops under {storage.drops_root} ({len(ready)} known)")
    context.log.info(f"new drops: {new}")
    return SensorResult(
        run_requests=[_drop_request(storage, d) for d in new],
        dynamic_partitions_requests=[drop_partitions.build_add_request(new)],
        cursor=json.dumps(sorted(known | set(new))),
    )


# Evaluates the assets' automation conditions (eager: embeddings/clusters/shards follow a re-materialized
# ingest partition; gallery/evaluation/comparison follow a new trained_model). Running by default, like
# new_drop_sensor; the retraining schedule is the one switch that starts STOPPED (pipelines/schedules.py).
automation_sensor = AutomationConditionSensorDefinition(
    "rdtf_automation_sensor",
    target=AssetSelection.all(),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=60,
    description="Keeps downstream assets up to date with their declarative automation conditions.",
)
