"""Two torchrun "nodes" on this machine, the lake on the loopback S3 server, one node killed mid-run.

Each node is a torchrun agent started with exactly the command ``pipelines/k8s.py`` builds for a pod
(``torchrun_command``: ``--nnodes 2``, c10d rendezvous on 127.0.0.1, ``--max-restarts``), with its own
``RDTF_SCRATCH`` (a pod's node-local disk: nothing is shared but the object store). Node 0 runs under Dagster
Pipes (``PipesSubprocessClient``), so rank 0's summary comes back as the materialization's metadata.

The fault: once the first checkpoint is on S3, node 1's agent and its worker are SIGKILLed (a lost pod). Node 0's
worker fails in its next collective, node 0's agent restarts its worker group (``--max-restarts``) and waits in
the rendezvous; node 1 is started again (the Job controller's replacement pod) on an *empty* scratch disk, both
pull the latest checkpoint from S3 and finish. The final weights, EMA, optimizer moments, curriculum state and
data position must equal those of an uninterrupted two-node run bit for bit.
"""


import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import torch
from dagster import AssetExecutionContext, PipesSubprocessClient, asset, materialize
from safetensors.torch import load

from pipelines.k8s import torchrun_command, training_env
from tests.helpers import TRAIN_DEFAULTS
from tests.integration.test_fault_tolerance import _kill_tree
from tests.ui_servers import free_port

pytestmark = pytest.mark.slow

STEPS = 10
REPLACEMENT_DELAY_S = 20  # > the rendezvous keep-alive timeout of the dead node (3 missed 5 s heartbeats)


def _lake_with_shards(s3_server, tiny_shards: Path) -> str:
    """Upload the session's tiny shards (index + tars) under a fresh lake prefix; returns the index URL."""
    import fsspec

    lake = s3_server.url(f"mn-{uuid.uuid4().hex[:8]}")
    fs, _ = fsspec.core.url_to_fs(lake, endpoint_url=s3_server.endpoint)
    dest = f"{lake.removeprefix('s3://')}/shards/d0"
    for f in sorted(tiny_shards.parent.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            fs.put_file(str(f), f"{dest}/{f.name}")
    return f"{lake}/shards/d0/index.json", lake, fs


def _write_config(fs, lake: str, index_url: str, run: str) -> str:
    url = f"{lake}/training/{run}/train.json"
    cfg = {"index_paths": [index_url], "out_dir": f"{lake}/training/{run}"} | TRAIN_DEFAULTS | {
        "steps": STEPS, "ckpt_every": 2}
    fs.pipe_file(url.removeprefix("s3://"), json.dumps(cfg).encode())
    return url


def _node_cmd(cfg_url: str, port: int, node: int, run: str) -> list[str]:
    # 127.0.0.1 / 127.0.0.2: both loopback; distinct addresses order the node ranks (node 0 -> global rank 0),
    # as the pods' DNS names do on Kubernetes
    return torchrun_command(2, 1, f"127.0.0.1:{port}", cfg_url, rdzv_id=run, local_addr=f"127.0.0.{node + 1}",
                            is_host=node == 0, max_restarts=2, join_timeout_s=120, python=sys.executable)


def _env(scratch: Path) -> dict[str, str]:
    root = str(Path(__file__).resolve().parents[2])
    pod = training_env(lake_root="s3://unused", nccl_socket_ifname=None, scratch=str(scratch))  # the pods' env
    keep = {k: v for k, v in pod.items() if k.startswith(("TORCH", "RDTF_SCRATCH"))}
    return os.environ | keep | {"OMP_NUM_THREADS": "1", "PYTHONPATH": root}


def _start(cmd: list[str], scratch: Path, log: Path) -> subprocess.Popen:
    scratch.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(cmd, env=_env(scratch), stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def _final_state(fs, lake: str, run: str) -> dict:
    root = f"{lake.removeprefix('s3://')}/training/{run}/checkpoints"
    name = fs.cat_file(f"{root}/latest").decode().strip()
    assert name == f"step-{STEPS:06d}", name
    ck = f"{root}/{name}"
    state = {f: load(fs.cat_file(f"{ck}/{f}")) for f in
             ("model/diffusion_pytorch_model.safetensors", "ema.safetensors", "text_proj.safetensors")}
    import io

    state["optimizer"] = torch.load(io.BytesIO(fs.cat_file(f"{ck}/optimizer.pt")), weights_only=True)
    state["trainer"] = json.loads(fs.cat_file(f"{ck}/trainer.json"))
    return state


def _run_two_nodes(cfg_url: str, run: str, tmp: Path) -> None:
    port = free_port()
    procs = [_start(_node_cmd(cfg_url, port, n, run), tmp / f"scratch{n}", tmp / f"node{n}.log") for n in (0, 1)]
    try:
        for n, p in enumerate(procs):
            assert p.wait(timeout=400) == 0, (tmp / f"node{n}.log").read_text()[-4000:]
    finally:
        for p in procs:
            if p.poll() is None:
                _kill_tree(p)


def test_two_node_elastic_restart_resumes_bit_identically_from_s3(s3_server, tiny_shards, tmp_path):
    index_url, lake, fs = _lake_with_shards(s3_server, tiny_shards)

    # the reference: two nodes, no fault
    _run_two_nodes(_write_config(fs, lake, index_url, "straight"), "straight", tmp_path / "straight")

    # the faulted run: node 0 through Dagster Pipes, node 1 killed after the first checkpoint and replaced
    cfg_url = _write_config(fs, lake, index_url, "elastic")
    port = free_port()
    latest = f"{lake.removeprefix('s3://')}/training/elastic/checkpoints/latest"
    events: dict[str, object] = {}

    def node1() -> None:
        log = tmp_path / "node1.log"
        p = _start(_node_cmd(cfg_url, port, 1, "elastic"), tmp_path / "scratch1", log)
        deadline = time.monotonic() + 300
        while not fs.exists(latest) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        events["killed_at"] = fs.cat_file(latest).decode().strip() if fs.exists(latest) else None
        events["running_when_killed"] = p.poll() is None
        _kill_tree(p)
        # the replacement pod, a while later (a pod is rescheduled in seconds, not instantly: by then node 0's agent
        # has seen its worker fail, restarted it and is waiting in the next rendezvous round), on an empty disk
        time.sleep(REPLACEMENT_DELAY_S)
        p2 = _start(_node_cmd(cfg_url, port, 1, "elastic"), tmp_path / "scratch1-replacement", log)
        events["replacement_rc"] = p2.wait(timeout=400)

    @asset
    def elastic_training(context: AssetExecutionContext, pipes: PipesSubprocessClient):
        (tmp_path / "scratch0").mkdir(exist_ok=True)
        return pipes.run(command=_node_cmd(cfg_url, port, 0, "elastic"), context=context,
                         env=_env(tmp_path / "scratch0")).get_materialize_result()

    t = threading.Thread(target=node1, daemon=True)
    t.start()
    result = materialize([elastic_training], resources={"pipes": PipesSubprocessClient()}, raise_on_error=False)
    t.join(timeout=420)
    log1 = (tmp_path / "node1.log").read_text()[-3000:]
    assert result.success, log1
    assert events.get("running_when_killed") and events.get("killed_at"), events
    assert events.get("killed_at") != f"step-{STEPS:06d}", "the fault must hit mid-run"
    assert events.get("replacement_rc") == 0, log1

    # rank 0 reported through Dagster Pipes
    (mat,) = result.asset_materializations_for_node("elastic_training")
    md = {k: v.value for k, v in mat.metadata.items()}
    assert md["step"] == STEPS and str(md["checkpoint"]).startswith(f"{lake}/training/elastic/checkpoints/")

    # the elastic restart really happened, and the replacement node resumed from S3 on an empty disk
    assert (tmp_path / "scratch1-replacement" / "rdtf-runs").is_dir()

    a, b = _final_state(fs, lake, "straight"), _final_state(fs, lake, "elastic")
    for f in ("model/diffusion_pytorch_model.safetensors", "ema.safetensors", "text_proj.safetensors"):
        assert a[f].keys() == b[f].keys()
        for k in a[f]:
            assert torch.equal(a[f][k], b[f][k]), (f, k)
    for k in a["optimizer"]["state"]:
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.equal(a["optimizer"]["state"][k][name], b["optimizer"]["state"][k][name])
    ta, tb = a["trainer"], b["trainer"]
    assert ta["curriculum"] == tb["curriculum"] and ta["data_batches"] == tb["data_batches"] == STEPS
