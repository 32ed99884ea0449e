"""The publish protocol (data.publish) and the one id rule (data.ids) against hostile and racing use.

Each test is named after a defect that was observed before the protocol existed (issue "Trust the data").
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from assets.ingest import ingested_stickers
from assets.resources import LakeResource
from data import lake, publish
from data.ids import ID_RULE, contained, validate_id
from data.ingest import IngestSettings, ingest_drop
from data.lake import Lake
from pipelines.cli import main as rdtf
from tests.helpers import ROOT

HOSTILE_IDS = ["../victim", "..", ".", "a/b", "/abs", "", ".hidden", "x" * 129, "d1\x00", "d 1", "d1\n", "ü"]


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


# ------------------------------------------------------------------------------------------- ids


@pytest.mark.parametrize("bad", HOSTILE_IDS)
def test_lake_path_helpers_refuse_hostile_ids(tmp_path, bad):
    with pytest.raises(ValueError, match=r"must match"):
        Lake(tmp_path).partition(lake.Stage.SHARDS, bad)
    with pytest.raises(ValueError, match=r"must match"):
        Lake(tmp_path).evaluation(bad)
    with pytest.raises(ValueError, match=r"must match"):
        Lake(tmp_path).ablation(bad)
    with pytest.raises(ValueError, match=r"must match"):
        LakeResource(drops_root=str(tmp_path), lake_root=str(tmp_path)).drop_url(bad)


def test_symlinked_partition_escaping_the_lake_is_refused(tmp_path):
    (tmp_path / "lake" / "ingest").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "lake" / "ingest" / "d1").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(ValueError, match="escapes its root"):
        Lake(tmp_path / "lake").partition(lake.Stage.INGEST, "d1")
    assert contained(tmp_path, "a", "b") == (tmp_path / "a" / "b").resolve()


def test_reserved_run_names_cannot_shadow_shared_folders(tmp_path):
    with pytest.raises(ValueError, match="reserved"):
        Lake(tmp_path).evaluation("comparison")
    with pytest.raises(ValueError, match=r"unknown run area 'checkpoints'; allowed: \['training', 'gallery', 'evaluation', 'models'\]"):
        Lake(tmp_path).run("checkpoints", "r1")
    assert validate_id("run-1.b_2") == "run-1.b_2"


def test_partition_key_with_traversal_fails_the_step_and_writes_nothing(clean_drop, tmp_path):
    """A dynamic partition added by hand (UI/GraphQL/API) with key ``../victim`` used to write outside the lake."""
    instance = DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("drops", ["../victim"])
    lake_root = tmp_path / "lake" / "sub"
    res = materialize([ingested_stickers], partition_key="../victim", instance=instance, raise_on_error=False,
                      resources={"storage": LakeResource(drops_root=str(clean_drop.parent), lake_root=str(lake_root))})
    assert not res.success
    failure = next(e for e in res.all_events if e.event_type_value == "STEP_FAILURE")
    assert ID_RULE in str(failure.event_specific_data.error) or ID_RULE in failure.message
    assert not (tmp_path / "lake" / "victim").exists() and not lake_root.exists()
    assert len([e for e in res.all_events if e.event_type_value == "STEP_START"]) == 1  # no retry of a bad key


# ------------------------------------------------------------------------------------------- CLI


def test_build_drop_with_traversal_drop_id_writes_nothing_outside_the_lake(clean_drop, tmp_path, capsys):
    rc = rdtf(["build-drop", str(clean_drop), "--lake", str(tmp_path / "lake"), "--drop-id", "../../x", "--quiet"])
    assert rc == 2 and "must match" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "lake").exists()


@pytest.mark.parametrize("where", ["same", "inside", "parent"])
def test_ingest_into_its_own_drop_is_refused_and_the_drop_survives(clean_drop, tmp_path, capsys, where):
    import shutil

    drop = tmp_path / "drops" / "d1"
    shutil.copytree(clean_drop, drop)
    before = _digest(drop)
    out = {"same": drop, "inside": drop / "out", "parent": tmp_path / "drops"}[where]
    rc = rdtf(["ingest", str(drop), "--out", str(out), "--workers", "1", "--quiet"])
    assert rc == 2 and "overlaps the drop" in capsys.readouterr().err
    assert _digest(drop) == before


@pytest.mark.parametrize("args", [["--n", "-3"], ["--n", "0"], ["--n", "x"], ["--workers", "0"]])
def test_make_drop_with_bad_numbers_exits_2_and_publishes_nothing(tmp_path, capsys, args):
    with pytest.raises(SystemExit) as exc:
        rdtf(["make-drop", str(tmp_path / "d"), *args, "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and ("must be >=" in err or "expected an integer" in err)
    assert not (tmp_path / "d").exists()


def test_make_drop_library_refuses_non_positive_n(tmp_path):
    from data.synthetic import make_drop

    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        make_drop(str(tmp_path / "d"), n=-3, progress=False)
    assert not (tmp_path / "d").exists()


def test_ingest_from_a_backend_that_is_not_installed_names_the_extra(tmp_path):
    """``rdtf ingest s3://...`` without s3fs died with a raw ImportError traceback."""
    from fsspec.registry import known_implementations

    scheme = next(s for s in ("gs", "s3", "az") if not _importable(known_implementations[s]["class"].split(".")[0]))
    p = subprocess.run([sys.executable, "-m", "pipelines.cli", "ingest", f"{scheme}://bucket/drops/d1", "--out",
                        str(tmp_path / "o"), "--quiet"], env=os.environ | {"PYTHONPATH": str(ROOT)},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and "pip install 'rdtf-stickers[" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------------------------- protocol


def test_readers_see_the_old_version_until_the_commit(tmp_path):
    part = tmp_path / "p"
    with publish.publish(part) as v1:
        (v1 / "a").write_text("1")
    with publish.publish(part) as v2:
        (v2 / "a").write_text("2")
        assert publish.current(part) == v1  # in progress: readers still get the last committed version
    assert publish.current(part) == v2 and (v2 / "a").read_text() == "2"
    assert publish.read_pointer(part)["previous"] == v1.name and v1.exists()  # kept for in-flight readers
    with publish.publish(part) as v3:
        (v3 / "a").write_text("3")
    assert not v1.exists() and v2.exists() and publish.current(part) == v3


def test_failed_write_keeps_the_published_version_and_removes_its_own(tmp_path):
    part = tmp_path / "p"
    with publish.publish(part) as v1:
        (v1 / "a").write_text("1")
    with pytest.raises(RuntimeError), publish.publish(part) as v2:
        (v2 / "a").write_text("half")
        raise RuntimeError("stage failed")
    assert publish.current(part) == v1 and not v2.exists()


def test_garbage_collection_never_deletes_what_it_does_not_own(tmp_path):
    part = tmp_path / "p"
    foreign = [part / publish.VERSIONS / "user-notes", part / "README", tmp_path / ".staging-p-deadbeef"]
    foreign[0].mkdir(parents=True)
    foreign[1].write_text("x")
    foreign[2].mkdir()
    with publish.publish(part) as v:
        (v / "a").write_text("1")
    assert all(p.exists() for p in foreign)


def test_legacy_unversioned_partition_is_still_readable(tmp_path):
    part = tmp_path / "shards" / "d0"
    part.mkdir(parents=True)
    (part / "index.json").write_text("{}")
    assert publish.current(part) == part
    assert Lake(tmp_path).drops(lake.Stage.SHARDS) == ["d0"]


def test_corrupt_pointer_is_a_clear_error(tmp_path):
    part = tmp_path / "p"
    with publish.publish(part) as v:
        (v / "a").write_text("1")
    (part / publish.POINTER).write_text('{"version": "../../etc"}')
    with pytest.raises(ValueError, match="not a valid pointer"):
        publish.current(part)


def test_second_writer_waits_then_times_out_naming_the_holder(tmp_path):
    part = tmp_path / "p"
    held, release = threading.Event(), threading.Event()

    def holder():
        with publish.PartitionLock(part):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        t0 = time.monotonic()
        with pytest.raises(publish.PartitionBusy, match=rf"pid={os.getpid()}"), publish.publish(part, lock_timeout_s=0.5):
            pass
        assert time.monotonic() - t0 >= 0.5
    finally:
        release.set()
        t.join()
    with publish.publish(part, lock_timeout_s=5) as v:  # free again once the holder is gone
        (v / "a").write_text("1")


def test_lock_of_a_killed_holder_is_released_by_the_kernel(tmp_path):
    part = tmp_path / "p"
    code = ("import sys, time; from data.publish import PartitionLock\n"
            "l = PartitionLock(sys.argv[1]).__enter__(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(part)], stdout=subprocess.PIPE, text=True,
                         env=os.environ | {"PYTHONPATH": str(ROOT)})
    try:
        assert p.stdout.readline().strip() == "held"
        p.kill()
        p.wait(10)
        with publish.publish(part, lock_timeout_s=10) as v:
            (v / "a").write_text("1")
        assert publish.current(part) == v
    finally:
        p.kill()


# ------------------------------------------------------------------------------------------- races


def _race(*jobs) -> list[BaseException]:
    errors: list[BaseException] = []

    def run(fn):
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - collected and asserted on
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(fn,)) for fn in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    return errors


def test_two_concurrent_ingests_of_one_partition_both_succeed_identically(clean_drop, tmp_path):
    """Two materializations of the same partition at once made one fail with FileNotFoundError on a staging file."""
    ref = tmp_path / "ref" / "d1"
    ingest_drop(str(clean_drop), ref, IngestSettings(size=32, workers=1), drop_id="d1", progress=False)
    part = tmp_path / "lake" / "ingest" / "d1"
    reports = []

    def job():
        reports.append(ingest_drop(str(clean_drop), part, IngestSettings(size=32, workers=1), drop_id="d1", progress=False))

    assert _race(job, job) == []
    assert len(reports) == 2 and {r.n_ingested for r in reports} == {24}
    assert _digest(publish.current(part)) == _digest(publish.current(ref))
    assert len(list((part / publish.VERSIONS).iterdir())) == 2  # current + previous, nothing leaked


def test_prefix_sharing_drops_race_without_touching_each_other(clean_drop, tmp_path):
    """Cleaning drop ``d1`` used to delete the staging folder (and with bad luck the output) of ``d1-x``."""
    root = tmp_path / "lake"
    ids = ["d1", "d1-x", "d1-xy", "d1.x"]
    jobs = [lambda d=d: ingest_drop(str(clean_drop), Lake(root).partition(lake.Stage.INGEST, d),
                                    IngestSettings(size=32, workers=1), drop_id=d, progress=False) for d in ids * 2]
    assert _race(*jobs) == []
    digests = {d: _digest(Lake(root).ingest(d)) for d in ids}
    for dg in digests.values():
        dg.pop("report.json")  # names its drop id; everything else is the same input's output
    assert all(dg == digests["d1"] for dg in digests.values()) and "manifest.parquet" in digests["d1"]
    assert all(len(list((root / "ingest" / d / publish.VERSIONS).iterdir())) == 2 for d in ids)
    assert sorted(p.name for p in (root / "ingest").iterdir()) == sorted(ids)


def test_concurrent_rdtf_ingest_processes_on_one_partition(clean_drop, tmp_path):
    out = tmp_path / "o" / "d1"
    cmd = [sys.executable, "-m", "pipelines.cli", "ingest", str(clean_drop), "--out", str(out), "--drop-id", "d1",
           "--size", "32", "--workers", "1", "--quiet"]
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for p in procs:
        assert p.wait(300) == 0, p.stderr.read()
    assert pq.read_metadata(publish.current(out) / "manifest.parquet").num_rows == 24
    assert len(list((out / publish.VERSIONS).iterdir())) == 2


def test_dagster_queues_a_second_run_of_the_same_partition(tmp_path):
    """The instance config (dagster.yaml) limits runs to one per partition key; others queue."""
    import shutil

    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = DagsterInstance.from_config(str(tmp_path))
    limits = instance.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1} in limits


def test_sensor_skips_drop_folders_with_invalid_names_and_says_so(tmp_path, clean_drop, caplog):
    import shutil

    from dagster import build_sensor_context

    from pipelines.sensors import new_drop_sensor

    drops = tmp_path / "drops"
    for name in ("good-1", "bad name", "-dash", "x" * 129):
        shutil.copytree(clean_drop, drops / name)
    res = {"storage": LakeResource(drops_root=str(drops), lake_root=str(tmp_path / "lake"))}
    with caplog.at_level("WARNING", logger="data.drops"):
        result = new_drop_sensor(build_sensor_context(instance=DagsterInstance.ephemeral(), resources=res))
    assert [r.partition_key for r in result.run_requests] == ["good-1"]
    assert sum("not a valid drop id" in r.getMessage() for r in caplog.records) == 3


def test_generate_refuses_to_overwrite_its_input_image_or_write_into_the_checkpoint(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    img = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(img)
    before = img.read_bytes()
    for out, words in ((img, "one of the input images"), (ckpt / "x.gif", "inside the checkpoint folder")):
        rc = rdtf(["generate", "--checkpoint", str(ckpt), "--image", str(img), "--out", str(out), "--quiet"])
        assert rc == 2 and words in capsys.readouterr().err
    assert img.read_bytes() == before and not (ckpt / "x.gif").exists()


def test_model_packages_live_under_lake_models_with_validated_names(tmp_path):
    assert Lake(tmp_path).model_package("nightly", 200) == Lake(tmp_path).root / "models" / "nightly" / "step-000200"
    for bad in ("../x", "a/b", ""):
        with pytest.raises(ValueError):
            Lake(tmp_path).model_package(bad, 1)
    with pytest.raises(ValueError, match="step must be an int"):
        Lake(tmp_path).model_package("r", -1)
