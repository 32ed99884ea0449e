"""From a trained run to a registered, promoted, served model — through Dagster, MLflow's registry and its server."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest
from dagster import DagsterInstance, PipesSubprocessClient, materialize
from PIL import Image, ImageSequence

from assets.evaluation import EVALUATION_ASSETS, SAMPLES_ASSET
from assets.registry import (
    PROMOTION_ASSET,
    PROMOTION_CHECK,
    REGISTER_ASSET,
    REGISTRY_ASSETS,
    registered_model,
)
from assets.resources import ClipResource, EvalModelsResource, LakeResource, MlflowResource
from assets.training import TRAIN_ASSET, trained_model
from tests.helpers import ROOT
from tests.ui_servers import running, start_model_server

pytestmark = pytest.mark.slow  # end to end (torchrun, MLflow's model server): skipped by the fast loop

NAME = "rdtf-dfgn"


def _frames(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)])


def _md(result, node: str) -> dict:
    (mat,) = result.asset_materializations_for_node(node)
    return {k: v.value for k, v in mat.metadata.items()}


def _generate(args: list[str], env: dict) -> None:
    cmd = [sys.executable, "-m", "pipelines.generate_cli", "generate", *args, "--steps", "2", "--seed", "3", "--quiet"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def test_train_register_promote_refuse_generate_and_serve(tmp_path, tiny_shards, monkeypatch):
    monkeypatch.setenv("RDTF_SYSTEM_METRICS_INTERVAL_S", "0.5")  # a 3-step training is over in seconds
    lake_root = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    instance = DagsterInstance.ephemeral()
    resources = {"storage": LakeResource(drops_root=str(tmp_path), lake_root=str(lake_root)),
                 "mlflow": MlflowResource(tracking_uri=uri, experiment="registry-test",
                                          artifact_location=str(tmp_path / "mlartifacts")),
                 "clip": ClipResource(device="cpu"), "evaluators": EvalModelsResource(device="cpu"),
                 "pipes_subprocess_client": PipesSubprocessClient()}

    def ops(sample_seed: int, allow_random: bool) -> dict:
        return {SAMPLES_ASSET: {"config": {"run_name": "reg", "n_videos": 3, "steps": 2, "batch_size": 3,
                                           "seed": sample_seed}},
                "vqa": {"config": {"num_clips": 1, "clip_len": 8}}, "fvd": {"config": {"batch_size": 3}},
                PROMOTION_ASSET: {"config": {"allow_random": allow_random}}}

    # 1. train -> evaluate -> register v1 (challenger) -> the gate promotes it (no champion yet; random allowed)
    train = {TRAIN_ASSET: {"config": {"steps": 3, "ckpt_every": 3, "batch_size": 2, "preset": "micro_pixel",
                                      "run_name": "reg"}}}
    first = materialize([trained_model, *EVALUATION_ASSETS, *REGISTRY_ASSETS], instance=instance, resources=resources,
                        run_config={"ops": train | ops(0, True)})
    assert first.success
    tmd, rmd, pmd = _md(first, TRAIN_ASSET), _md(first, REGISTER_ASSET), _md(first, PROMOTION_ASSET)
    assert rmd["version"] == 1 and not rmd["reused"] and pmd["decision"] == "promoted", pmd["reason"]
    assert rmd["mlflow_model_version"].endswith(f"#/models/{NAME}/versions/1") and "/runs/" in rmd["mlflow_run"]
    assert "/runs/" in tmd["mlflow_run"] and tmd["mlflow_datasets"] == 1
    assert all("/runs/" in _md(first, n)["mlflow_run"] for n in (SAMPLES_ASSET, "fvd", "clip_similarity"))
    (check,) = first.get_asset_check_evaluations()
    assert check.check_name == PROMOTION_CHECK and check.passed

    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    v1 = client.get_model_version_by_alias(NAME, "champion")
    assert int(v1.version) == 1 and int(client.get_model_version_by_alias(NAME, "challenger").version) == 1
    tags = v1.tags
    assert tags["weights"] == "random" and tags["drops"] == "d0" and len(tags["shard_index_hash"]) == 16
    assert tags["dagster_run_id"] == first.run_id and len(tags["git_commit"]) in (40, 7) or tags["git_commit"] == "unknown"
    assert float(tags["eval/i2v/fvd"]) >= 0 and -1 <= float(tags["eval/t2v/clip_matched"]) <= 1
    assert tags["promotion.decision"] == "promoted" and tags["promotion.reason"].startswith("no champion yet")
    run = client.get_run(tmd["mlflow_run_id"])
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["shards/d0"]
    assert any(k.startswith("system/") for k in run.data.metrics), sorted(run.data.metrics)  # system metrics on
    assert v1.run_id == tmd["mlflow_run_id"]
    pkg = lake_root / "models" / "reg" / "step-000003"
    assert (pkg / "model_index.json").is_file() and not any(str(tmp_path) in p.read_text() for p in pkg.rglob("*.json"))

    # re-materializing the registration is idempotent: the same version, no duplicate
    again = materialize([registered_model], instance=instance, resources=resources)
    assert _md(again, REGISTER_ASSET)["version"] == 1 and _md(again, REGISTER_ASSET)["reused"]

    # 2. the same run evaluated with another sampling seed = a new candidate (v2) under another protocol:
    # refused for its random weights, and — with random allowed — because the protocols differ
    second = materialize([*EVALUATION_ASSETS, *REGISTRY_ASSETS], instance=instance, resources=resources,
                         run_config={"ops": ops(1, False)})
    assert second.success
    assert _md(second, REGISTER_ASSET)["version"] == 2
    pmd = _md(second, PROMOTION_ASSET)
    assert pmd["decision"] == "refused" and "weights=random" in pmd["reason"] and pmd["champion_version"] == 1
    third = materialize([REGISTRY_ASSETS[1]], instance=instance, resources=resources,
                        run_config={"ops": {PROMOTION_ASSET: {"config": {"allow_random": True}}}})
    assert "protocol differs" in _md(third, PROMOTION_ASSET)["reason"]
    assert client.get_model_version_by_alias(NAME, "champion").version == 1
    assert client.get_model_version_by_alias(NAME, "challenger").version == 2
    assert client.get_model_version(NAME, "2").tags["promotion.decision"] == "refused"
    assert all(e.passed for e in second.get_asset_check_evaluations() + third.get_asset_check_evaluations())

    # 3. use the champion: rdtf generate --model == --checkpoint for the same seed; and the served endpoint
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, RDTF_SCRATCH=str(tmp_path / "scratch"))
    _generate(["--checkpoint", tmd["checkpoint"], "--prompt", "a red ball", "--out", str(tmp_path / "ckpt.gif")], env)
    _generate(["--model", f"models:/{NAME}@champion", "--prompt", "a red ball", "--out", str(tmp_path / "model.gif")],
              env)
    reference = (tmp_path / "ckpt.gif").read_bytes()
    assert (tmp_path / "model.gif").read_bytes() == reference
    with running(start_model_server(f"models:/{NAME}@champion", uri, tmp_path / "logs")) as srv:
        body = json.dumps({"dataframe_records": [{"prompt": "a red ball", "steps": 2, "seed": 3, "format": "gif"}]})
        req = urllib.request.Request(f"{srv.url}/invocations", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            (pred,) = json.loads(r.read())["predictions"]
        assert pred["format"] == "gif" and pred["weights"] == "random" and pred["num_frames"] == 8
        np.testing.assert_array_equal(_frames(base64.b64decode(pred["sticker"])), _frames(reference))
        bad = urllib.request.Request(f"{srv.url}/invocations", headers={"Content-Type": "application/json"},
                                     data=json.dumps({"dataframe_records": [{"prompt": "x", "format": "bmp"}]}).encode())
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(bad, timeout=60)
        assert err.value.code == 400 and "format must be one of" in err.value.read().decode()
