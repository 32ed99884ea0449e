"""Decode workers die with their parent.

Observed defect: after ``kill -9`` of an ingest, its spawn-context decode workers lived on (12 processes,
~790 MB, minutes later): each worker holds both ends of the pool's call queue, so the parent's death never
reaches a worker that is blocked on it or busy decoding. Now every worker asks the kernel for SIGKILL when its
parent dies (Linux prctl PR_SET_PDEATHSIG) and also watches its parent pid from a thread (other systems).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from data.synthetic import make_drop
from tests.conftest import SMALL
from tests.data.test_decode_budget import work_bomb_gif
from tests.helpers import ROOT


def _workers(proc: psutil.Process) -> list[psutil.Process]:
    out = []
    for child in proc.children(recursive=True):
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


@pytest.mark.timeout(180)
def test_decode_workers_die_within_seconds_of_a_sigkilled_parent(tmp_path):
    drop = tmp_path / "drops" / "kill-drop"
    make_drop(str(drop), n=8, seed=31, cfg=SMALL, progress=False)
    # two slow stickers (tens of seconds of decode each) keep both workers busy when the kill lands
    for sid in ("slow-a", "slow-b"):
        (drop / f"{sid}.gif").write_bytes(work_bomb_gif(4096, 30 + (sid == "slow-b")))  # under the work cap
    rows = (drop / "captions.jsonl").read_text()
    slow = "".join(json.dumps({"id": s, "file": f"{s}.gif", "caption": "slow"}) + "\n" for s in ("slow-a", "slow-b"))
    (drop / "captions.jsonl").write_text(slow + rows)
    code = (
        "from data.ingest import IngestSettings, ingest_drop; "
        f"ingest_drop({str(drop)!r}, {str(tmp_path / 'out' / drop.name)!r}, "
        "IngestSettings(size=32, workers=2, decode_timeout_s=0), progress=False)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env)
    parent = psutil.Process(proc.pid)
    workers: list[psutil.Process] = []
    try:
        deadline = time.time() + 120
        while len(workers) < 2:
            assert proc.poll() is None, f"ingest exited early (rc {proc.returncode})"
            assert time.time() < deadline, "the ingest never started 2 workers"
            time.sleep(0.2)
            workers = _workers(parent)
        time.sleep(3.0)  # imports done, both decoding a slow sticker
        assert proc.poll() is None and all(w.is_running() for w in workers), "the kill must land mid-ingest"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        t0 = time.time()
        _, alive = psutil.wait_procs(workers, timeout=10)
        assert not alive, f"workers outlived their SIGKILLed parent: {[w.pid for w in alive]}"
        assert time.time() - t0 < 10
    finally:
        for p in [parent, *workers]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
