"""Ingest through real Dagster: definitions load, the sensor adds partitions, assets materialize."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import DagsterInstance, SensorResult, SkipReason, build_sensor_context, materialize
from dagster._core.errors import DagsterInvalidConfigError

from assets.ingest import INGEST_ASSET, REJECT_RATE_CHECK, ingested_stickers
from assets.resources import LakeResource
from data.lake import Lake
from pipelines.sensors import new_drop_sensor
from tests.helpers import ROOT


def _resources(drops_root: Path, lake_root: Path) -> dict:
    return {"storage": LakeResource(drops_root=str(drops_root), lake_root=str(lake_root))}


def _run_config(**overrides) -> dict:
    cfg = {"size": 48, "workers": 2} | overrides
    return {"ops": {INGEST_ASSET: {"config": cfg}}}


def test_definitions_load_and_validate():
    from pipelines.definitions import defs

    assert defs.resolve_job_def("drop_data_job") is not None
    assert defs.resolve_sensor_def("new_drop_sensor") is not None
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sensor_adds_partition_once(tmp_path, clean_drop):
    drops = tmp_path / "drops"
    drops.mkdir()
    shutil.copytree(clean_drop, drops / "drop-a")
    (drops / "pending").mkdir()  # no caption table yet -> not ready
    (drops / "pending" / "x.gif").write_bytes(b"GIF89a")
    instance = DagsterInstance.ephemeral()
    res = _resources(drops, tmp_path / "lake")

    result = new_drop_sensor(build_sensor_context(instance=instance, resources=res))
    assert isinstance(result, SensorResult)
    assert [r.partition_key for r in result.run_requests] == ["drop-a"]
    assert [r.run_key for r in result.run_requests] == ["drop:drop-a"]
    (add,) = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["drop-a"]
    instance.add_dynamic_partitions("drops", list(add.partition_keys))

    # same drop again -> nothing new, cursor or no cursor
    again = new_drop_sensor(build_sensor_context(instance=instance, cursor=result.cursor, resources=res))
    assert isinstance(again, SkipReason)
    again = new_drop_sensor(build_sensor_context(instance=instance, resources=res))
    assert isinstance(again, SkipReason)

    # the pending drop becomes ready -> exactly one new request
    shutil.copy(clean_drop / "captions.jsonl", drops / "pending" / "captions.jsonl")
    third = new_drop_sensor(build_sensor_context(instance=instance, cursor=result.cursor, resources=res))
    assert [r.partition_key for r in third.run_requests] == ["pending"]
    assert json.loads(third.cursor) == ["drop-a", "pending"]


def test_materialize_ingest_partition(tmp_path, faulty_drop):
    drop, faults = faulty_drop
    drops = drop.parent
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("drops", [drop.name])
    result = materialize([ingested_stickers], partition_key=drop.name, instance=instance,
                         resources=_resources(drops, tmp_path / "lake"), run_config=_run_config())
    assert result.success
    (mat,) = result.asset_materializations_for_node(INGEST_ASSET)
    md = {k: v.value for k, v in mat.metadata.items()}
    man = Lake(tmp_path / "lake").manifest(drop.name)
    quar = Lake(tmp_path / "lake").quarantine(drop.name)
    assert md["n_ingested"] == len(man) > 0
    assert md["n_rejected"] == len(quar) > 0
    assert md["rejects_by_reason"] == quar.reason.value_counts().sort_index().to_dict()
    assert md["rejects/empty_file"] == 1 and md["frames_per_s"] > 0
    (check,) = result.get_asset_check_evaluations()
    assert check.check_name == REJECT_RATE_CHECK and check.passed  # ~20 % rejects < 25 % default


def test_reject_rate_check_fails_above_threshold_but_keeps_good_data(tmp_path, faulty_drop):
    drop, _ = faulty_drop
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("drops", [drop.name])
    result = materialize([ingested_stickers], partition_key=drop.name, instance=instance,
                         resources=_resources(drop.parent, tmp_path / "lake"),
                         run_config=_run_config(max_reject_rate=0.01, workers=1), raise_on_error=False)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed and "reject rate" in (check.description or "")
    assert len(Lake(tmp_path / "lake").manifest(drop.name)) > 0


def test_bad_run_config_is_a_clear_error(tmp_path, clean_drop):
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("drops", [clean_drop.name])
    with pytest.raises(DagsterInvalidConfigError, match="caption_policy") as exc:
        materialize([ingested_stickers], partition_key=clean_drop.name, instance=instance,
                    resources=_resources(clean_drop.parent, tmp_path / "lake"),
                    run_config=_run_config(caption_policy="drop_it"), raise_on_error=False)
    assert "keep_empty" in str(exc.value) or "CaptionPolicy" in str(exc.value)
    assert not (tmp_path / "lake").exists()  # nothing half-written


def test_cli_make_drop_and_ingest(tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = tmp_path / "cli-drop"
    p = subprocess.run([sys.executable, "-m", "pipelines.cli", "make-drop", str(out), "--n", "6", "--seed", "1", "--quiet"],
                       env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert (out / "captions.jsonl").exists()
    p = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", str(out), "--out", str(tmp_path / "o"),
                        "--size", "32", "--workers", "1", "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["n_ingested"] == 6
    p = subprocess.run([sys.executable, "-m", "pipelines.cli", "build-drop", str(out), "--lake", str(tmp_path / "lake"),
                        "--size", "32", "--quiet"], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    index = Lake(tmp_path / "lake").shards("cli-drop") / "index.json"
    assert p.stdout.strip().endswith(str(index))  # the command prints the committed version's index
    assert json.loads(index.read_text())["counts"]["train"] == 6
    p = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", str(tmp_path / "missing"), "--out",
                        str(tmp_path / "o2")], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "caption table" in p.stderr


def test_a_caption_less_drop_with_a_ready_marker_is_requested_with_its_caption_source(tmp_path, clean_drop):
    drops = tmp_path / "drops"
    drops.mkdir()
    shutil.copytree(clean_drop, drops / "plain")
    (drops / "plain" / "captions.jsonl").unlink()
    (drops / "plain" / "READY").write_text("filename")
    result = new_drop_sensor(build_sensor_context(instance=DagsterInstance.ephemeral(),
                                                  resources=_resources(drops, tmp_path / "lake")))
    (req,) = result.run_requests
    assert req.partition_key == "plain"
    assert req.run_config == {"ops": {INGEST_ASSET: {"config": {"caption_source": "filename"}}}}
