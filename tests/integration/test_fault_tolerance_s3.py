"""kill -9 against the lake on the loopback S3 server: the shard build through Dagster, killed while shards are
being uploaded, then re-run -- nothing half-visible, the dead writer's lease and objects cleaned up, the output
byte-identical to an uninterrupted local build. (Training killed on S3: tests/integration/test_multinode.py.)"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import uuid

import pytest

from data import publish
from data.lake import Lake
from data.shards import verify_shards
from data.storage import lake_path
from tests.integration.test_fault_tolerance import (
    _SHARDS_CHILD,
    ROOT,
    _copy_inputs,
    _kill_tree,
    _sha_tree,
    _wait,
)

pytestmark = pytest.mark.slow


def _sha_remote(root) -> dict[str, str]:
    base = root.path.rstrip("/")
    return {k[len(base) + 1:]: hashlib.sha256(root.fs.cat_file(k)).hexdigest() for k in sorted(root.fs.find(base))
            if not k.endswith(publish.MARKER)}


def test_sigkill_during_shard_upload_to_s3_then_rerun_is_byte_identical(s3_server, tmp_path, tiny_shards):
    from data.sharding import build_shards
    from data.shards import FrameEncoding

    src = tiny_shards.parents[4]  # <lake>/shards/<drop>/versions/<v>/index.json
    ref = tmp_path / "ref"
    _copy_inputs(src, ref)
    build_shards(ref, "d0", encoding=FrameEncoding.WEBP, max_count=3, max_bytes=512 << 20)  # local, uninterrupted
    ref_files = _sha_tree(Lake(ref).shards("d0"))

    lake_url = s3_server.url(f"ft-{uuid.uuid4().hex[:8]}")
    lake = lake_path(lake_url)
    staged = tmp_path / "inputs"
    _copy_inputs(src, staged)
    lake.fs.put(str(staged) + "/", lake.path + "/", recursive=True)  # the upstream stages, as published locally
    part = lake / "shards" / "d0"
    env = os.environ | {"PYTHONPATH": str(ROOT), "RDTF_LEASE_TTL_S": "2", "RDTF_SCRATCH": str(tmp_path)}

    p = subprocess.Popen([sys.executable, "-c", _SHARDS_CHILD, lake_url], env=env | {"FT_SAMPLE_DELAY": "0.4"},
                         cwd=tmp_path, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def mid_upload():  # at least one tar uploaded into the uncommitted version, no index yet
            found = lake.fs.find(f"{part.path}/versions")
            return [k for k in found if k.endswith(".tar")] and not [k for k in found if k.endswith("index.json")]

        _wait(mid_upload, 120, "a shard uploaded into an uncommitted version", proc=p)
    finally:
        _kill_tree(p)
    assert publish.read_pointer(part) is None  # nothing published
    assert Lake(lake_url).shard_indexes() == []  # training would see nothing
    assert (part / ".lock").exists()  # the dead writer's lease ...
    leftovers = {k.split("/versions/")[1].split("/")[0] for k in lake.fs.find(f"{part.path}/versions")}
    assert len(leftovers) == 1

    r = subprocess.run([sys.executable, "-c", _SHARDS_CHILD, lake_url], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)  # ... expires (2 s) and the re-run takes over
    assert r.returncode == 0, r.stderr[-3000:]
    good = Lake(lake_url).shards("d0")
    assert _sha_remote(good) == ref_files  # byte-identical to the uninterrupted local build
    assert verify_shards(good / "index.json") == []
    names = {k.split("/versions/")[1].split("/")[0] for k in lake.fs.find(f"{part.path}/versions")}
    assert names == {good.name} and not (leftovers & names)  # the dead writer's objects are gone
    assert not (part / ".lock").exists()
    shutil.rmtree(staged)
