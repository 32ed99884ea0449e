"""Automation: retraining decision, the schedule against a real instance, sensors/conditions wired in defs."""

from __future__ import annotations

import pytest
from dagster import DagsterInstance, DefaultSensorStatus, SkipReason, build_schedule_context, materialize

from pipelines.schedules import retrain_decision, retrain_schedule


def test_retrain_decision_only_when_shards_are_newer():
    assert not retrain_decision(None, None).retrain  # nothing to train on
    assert retrain_decision(100.0, None).retrain  # never trained
    assert not retrain_decision(100.0, 100.0).retrain
    assert not retrain_decision(100.0, 150.0).retrain  # model newer than every shard
    d = retrain_decision(200.0, 150.0)
    assert d.retrain and d.run_key == "shards@200.000"
    assert retrain_decision(200.0, 150.0).run_key == d.run_key  # same shard state -> same key (idempotent)


def test_definitions_wire_automation():
    from pipelines.definitions import defs

    repo = defs.get_repository_def()
    sensors = {s.name: s for s in repo.sensor_defs}
    assert sensors["new_drop_sensor"].default_status is DefaultSensorStatus.RUNNING
    assert sensors["rdtf_automation_sensor"].default_status is DefaultSensorStatus.RUNNING
    assert repo.get_schedule_def("retrain_schedule").job_name == "train_job"
    graph = repo.asset_graph
    for key in ("frame_embeddings", "frame_clusters", "webdataset_shards", "evaluation_samples", "fvd",
                "model_comparison", "sample_gallery"):
        assert graph.get(__import__("dagster").AssetKey(key)).automation_condition is not None, key
    train = graph.get(__import__("dagster").AssetKey("trained_model"))
    assert train.pools == {"gpu"}
    assert defs.get_assets_def("trained_model").op.retry_policy.max_retries == 2  # resumes from its checkpoint


def test_retrain_schedule_against_instance(tmp_path, clean_drop):
    """Real instance: skip before shards exist, request a run after they are materialized, skip after training."""
    from assets.ingest import ingested_stickers
    from assets.resources import LakeResource
    from assets.shards import webdataset_shards

    instance = DagsterInstance.get()  # the test's own DAGSTER_HOME (conftest): schedules need an instance ref
    ctx = build_schedule_context(instance=instance)
    first = retrain_schedule(ctx)
    assert isinstance(first, SkipReason) and "no shards" in first.skip_message

    instance.add_dynamic_partitions("drops", [clean_drop.name])
    from assets.clusters import frame_clusters
    from assets.embeddings import frame_embeddings
    from assets.resources import ClipResource

    res = materialize([ingested_stickers, frame_embeddings, frame_clusters, webdataset_shards], instance=instance,
                      partition_key=clean_drop.name,
                      resources={"storage": LakeResource(drops_root=str(clean_drop.parent), lake_root=str(tmp_path)),
                                 "clip": ClipResource(device="cpu", num_workers=0)},
                      run_config={"ops": {"ingested_stickers": {"config": {"size": 48, "workers": 1}}}})
    assert res.success
    import datetime

    when = datetime.datetime(2026, 11, 23, 3, 0, tzinfo=datetime.UTC)
    req = retrain_schedule(build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert not isinstance(req, SkipReason)
    cfg = req.run_config["ops"]
    run_name = cfg["trained_model"]["config"]["run_name"]
    assert run_name == "retrain-20261123-0300" and cfg["evaluation_samples"]["config"]["run_name"] == run_name

    # a trained model newer than the shards -> skip (recorded directly: training itself is tested elsewhere)
    from dagster import AssetMaterialization

    instance.report_runless_asset_event(AssetMaterialization("trained_model", metadata={"checkpoint": "x/checkpoints/s"}))
    again = retrain_schedule(build_schedule_context(instance=instance, scheduled_execution_time=when))
    assert isinstance(again, SkipReason) and "unchanged" in again.skip_message


@pytest.mark.parametrize("bad", ["not a cron"])
def test_bad_cron_is_rejected(bad):
    from dagster import ScheduleDefinition
    from dagster._core.errors import DagsterInvalidDefinitionError

    with pytest.raises((DagsterInvalidDefinitionError, Exception)):
        ScheduleDefinition(name="x", cron_schedule=bad, job_name="train_job")


def test_cli_help_documents_every_command():
    from pipelines.cli import build_parser

    p = build_parser()
    text = p.format_help()
    sub = next(a for a in p._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sp in sub.choices.items():
        assert name in text
        assert sp.format_help().strip()  # every command has its own --help
    help_by_cmd = {a.dest: a.help for a in sub._choices_actions}
    assert all(help_by_cmd.values()), help_by_cmd  # one-line description per command in `rdtf --help`
    assert "examples:" in text
