"""The publish protocol and the lake on object stores: ``memory://`` for the logic, the loopback S3 server for
the real thing (conditional PUTs, multipart uploads, other processes, kill -9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from data import publish
from data.atomic import atomic_path, atomic_write
from data.lake import Lake, Stage
from data.object_lock import ObjectLease
from data.storage import is_remote, lake_path, local_output, remove_tree

ROOT = Path(__file__).resolve().parents[2]


def _memory_root() -> str:
    return f"memory://lake-{uuid.uuid4().hex[:8]}"


def test_lake_path_local_file_url_and_object_stores():
    assert lake_path("/data/lake") == Path("/data/lake") and not is_remote(lake_path("/data/lake"))
    assert lake_path("file:///data/my%20lake") == Path("/data/my lake")
    assert is_remote(lake_path("memory://x/lake"))
    with pytest.raises(ValueError, match="unsupported protocol 'ftp'.*allowed"):
        lake_path("ftp://host/lake")
    with pytest.raises(ValueError, match="non-empty"):
        lake_path("")


def test_missing_backend_names_the_extra(monkeypatch):
    import fsspec

    real = fsspec.get_filesystem_class

    def no_gcsfs(protocol):
        if protocol == "gs":
            raise ImportError("Install gcsfs to access Google Storage")
        return real(protocol)

    monkeypatch.setattr(fsspec, "get_filesystem_class", no_gcsfs)
    with pytest.raises(ValueError, match=r"pip install 'rdtf-stickers\[gcs\]'"):
        Lake("gs://bucket/lake")


def test_publish_commits_by_pointer_and_a_failed_write_leaves_the_last_version():
    part = lake_path(_memory_root()) / "shards" / "d1"
    with publish.publish(part) as v1:
        atomic_write(v1 / "index.json", "one")
    assert publish.current(part).name == v1.name and (publish.current(part) / "index.json").read_text() == "one"
    with pytest.raises(RuntimeError, match="boom"), publish.publish(part) as v2:
        atomic_write(v2 / "index.json", "two")
        raise RuntimeError("boom")
    assert publish.current(part).name == v1.name  # readers still see the good version
    assert not (part / "versions" / v2.name).exists()  # and the failed one is gone
    assert not (part / ".lock").exists()  # the lease is released


def test_gc_keeps_current_and_previous_only():
    part = lake_path(_memory_root()) / "embeddings" / "d1"
    names = []
    for i in range(4):
        with publish.publish(part) as v:
            atomic_write(v / "x.json", str(i))
        names.append(v.name)
    left = sorted(p.name for p in (part / "versions").iterdir())
    assert left == sorted(names[-2:])
    doc = publish.read_pointer(part)
    assert doc["version"] == names[-1] and doc["previous"] == names[-2]


def test_pointer_naming_an_incomplete_version_is_an_error():
    part = lake_path(_memory_root()) / "ingest" / "d1"
    with publish.publish(part) as v:
        atomic_write(v / "a.json", "{}")
    remove_tree(v)  # as if the version's objects were deleted behind the pointer's back
    with pytest.raises(FileNotFoundError, match="missing"):
        publish.current(part)


def test_atomic_path_on_an_object_store_uploads_on_success_only():
    dest = lake_path(_memory_root()) / "t" / "table.bin"
    with atomic_path(dest) as tmp:
        tmp.write_bytes(b"abc")
        assert not dest.exists()  # nothing visible before the block ends
    assert dest.read_bytes() == b"abc" and not tmp.exists()
    with pytest.raises(OSError), atomic_path(dest) as tmp:
        tmp.write_bytes(b"half")
        raise OSError("disk full")
    assert dest.read_bytes() == b"abc" and not tmp.exists()


def test_lease_is_exclusive_times_out_naming_the_holder_and_breaks_when_expired():
    part = lake_path(_memory_root()) / "clusters" / "d1"
    with ObjectLease(part, timeout_s=5, busy=publish.PartitionBusy, ttl_s=30):
        with pytest.raises(publish.PartitionBusy, match="being written by another run.*pid"):
            with ObjectLease(part, timeout_s=0.3, busy=publish.PartitionBusy, poll_s=0.05):
                pass
    # a dead holder: its lease expired and is never renewed
    dead = {"token": "dead", "pid": 1, "host": "gone", "expires_unix": time.time() - 1}
    (part / ".lock").write_bytes(json.dumps(dead).encode())
    with ObjectLease(part, timeout_s=2, busy=publish.PartitionBusy) as lease:
        assert json.loads((part / ".lock").read_text())["token"] == lease.token
    assert not (part / ".lock").exists()


def test_two_threads_publishing_one_partition_serialize_and_lose_no_version():
    part = lake_path(_memory_root()) / "shards" / "d1"
    seen, errors = [], []

    def writer(i: int) -> None:
        try:
            with publish.publish(part, lock_timeout_s=30) as v:
                atomic_write(v / "who", str(i))
                time.sleep(0.05)
                seen.append(v.name)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(seen) == 3
    doc = publish.read_pointer(part)
    assert doc["version"] == seen[-1] and doc["previous"] == seen[-2]  # each commit saw the one before it


def test_local_output_uploads_on_success_and_nothing_on_error():
    dest = lake_path(_memory_root()) / "evaluation" / "r1" / "samples"
    with local_output(dest, last=("manifest.json",)) as work:
        (work / "real.npy").write_bytes(b"x")
        (work / "manifest.json").write_text("{}")
    assert sorted(p.name for p in dest.iterdir()) == ["manifest.json", "real.npy"] and not work.exists()
    other = dest.parent / "failed"
    with pytest.raises(ValueError), local_output(other) as work:
        (work / "a").write_text("x")
        raise ValueError("boom")
    assert not other.exists()


# ----------------------------------------------------------------------------------- the loopback S3 server


def test_s3_exclusive_create_is_enforced_by_the_server(s3_server):
    part = lake_path(s3_server.url(f"lock-{uuid.uuid4().hex[:6]}"))
    with ObjectLease(part, timeout_s=5, busy=publish.PartitionBusy):
        with pytest.raises(publish.PartitionBusy):
            with ObjectLease(part, timeout_s=0.5, busy=publish.PartitionBusy, poll_s=0.1):
                pass
    with ObjectLease(part, timeout_s=1, busy=publish.PartitionBusy):
        pass  # released: free again


_KILLED_WRITER = """
import sys, time
from data import publish
from data.atomic import atomic_write
from data.storage import lake_path
part = lake_path(sys.argv[1])
with publish.publish(part) as v:
    atomic_write(v / "a.json", "new")
    print(v.name, flush=True)
    time.sleep(600)  # killed here: half a version on S3, the lease held
"""


def test_sigkill_mid_publish_on_s3_keeps_the_last_version_and_the_next_writer_cleans_up(s3_server):
    url = s3_server.url(f"kill-{uuid.uuid4().hex[:6]}", "shards", "d1")
    part = lake_path(url)
    with publish.publish(part) as good:
        atomic_write(good / "a.json", "good")
    env = os.environ | {"PYTHONPATH": str(ROOT), "RDTF_LEASE_TTL_S": "2"}
    p = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, url], env=env, stdout=subprocess.PIPE, text=True)
    half = p.stdout.readline().strip()
    assert half.startswith("v")
    p.send_signal(signal.SIGKILL)
    p.wait(timeout=30)
    assert (publish.current(part) / "a.json").read_text() == "good"  # readers never see the half version
    assert (part / ".lock").exists()  # the dead writer's lease is still there ...
    t0 = time.monotonic()
    with publish.publish(part, lock_timeout_s=30) as new:  # ... until it expires (its TTL was 2 s)
        atomic_write(new / "a.json", "new")
    assert time.monotonic() - t0 < 20
    assert (publish.current(part) / "a.json").read_text() == "new"
    left = {p.name for p in (part / "versions").iterdir()}
    assert half not in left and left == {good.name, new.name}  # the dead writer's leftovers are collected


@pytest.mark.parametrize("parts", [("..", "etc"), ("a/../../b",), (".",), ("",)])
def test_object_store_paths_cannot_escape_the_lake(parts):
    from data.ids import contained

    root = lake_path(_memory_root())
    with pytest.raises(ValueError, match="escapes its root"):
        contained(root, *parts)
    assert str(contained(root, "ingest", "d1")) == f"{root}/ingest/d1"


def test_hostile_drop_ids_and_run_names_are_refused_on_an_object_store_lake():
    lake = Lake(_memory_root())
    for bad in ("../x", "a/b", ".hidden", "", "x" * 200):
        with pytest.raises(ValueError, match="invalid drop id"):
            lake.partition(Stage.SHARDS, bad)
        with pytest.raises(ValueError, match="invalid run name"):
            lake.training(bad)
