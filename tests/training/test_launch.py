"""Single-node torchrun exposes nothing to the network: every listening socket of the launcher and its workers
is on loopback (measured with psutil while a real 2-rank training runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from tests.helpers import ROOT
from training.launch import LOCAL_TORCHRUN_ENV, local_torchrun_command

pytestmark = pytest.mark.slow  # end to end (subprocesses, servers): skipped by the fast loop


def _listeners(root_pid: int) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every LISTEN socket of ``root_pid`` and its descendants."""
    out = []
    try:
        procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return out
    for proc in procs:
        try:
            out += [(proc.pid, c.laddr.ip, c.laddr.port) for c in proc.net_connections(kind="inet")
                    if c.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return out


def _is_loopback(ip: str) -> bool:
    import ipaddress

    return ipaddress.ip_address(ip.split("%")[0]).is_loopback


def _watch(cmd: list[str], env: dict, timeout: float = 300) -> tuple[int, set, str]:
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: set = set()
    deadline = time.time() + timeout
    while proc.poll() is None and time.time() < deadline:
        seen |= {(ip, port) for _, ip, port in _listeners(proc.pid)}
        time.sleep(0.1)
    if proc.poll() is None:
        proc.kill()
    err = proc.communicate()[1]
    return proc.returncode, seen, err


def test_single_node_torchrun_listens_on_loopback_only(tmp_path, tiny_shards):
    cfg = {"index_paths": [str(tiny_shards)], "out_dir": str(tmp_path / "out"), "preset": "micro_pixel", "steps": 3, "batch_size": 2,
           "ckpt_every": 3, "warmup_steps": 1, "lr": 1e-3}
    (tmp_path / "train.json").write_text(json.dumps(cfg))
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"} | LOCAL_TORCHRUN_ENV
    env.pop("GLOO_SOCKET_IFNAME", None)
    cmd = local_torchrun_command(2, ["-m", "training", "--config", str(tmp_path / "train.json")])
    assert "--standalone" not in cmd
    rc, seen, err = _watch(cmd, env)
    assert rc == 0, err[-3000:]
    assert seen, "saw no listening socket at all: the probe did not work"  # the workers' store at least
    exposed = sorted(s for s in seen if not _is_loopback(s[0]))
    assert not exposed, f"listening on non-loopback addresses: {exposed}"
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["step"] == 3


def test_launchers_do_not_use_standalone():
    """Every single-node launch in the code goes through training.launch (``--standalone`` binds all interfaces)."""
    offenders = []
    for base in ("assets", "pipelines", "model", "benchmarks", "scripts"):
        for path in (ROOT / base).rglob("*.py"):
            text = path.read_text()
            if '"--standalone"' in text:
                offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders


def test_local_args_reject_bad_nproc():
    from training.launch import local_torchrun_args

    with pytest.raises(ValueError, match="nproc_per_node"):
        local_torchrun_args(0)
    assert sys.executable == local_torchrun_command(1, ["x"])[0]
