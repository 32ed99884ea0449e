"""The lake in the training pods (``pipelines.k8s_lake``): an object-store lake mounts no volume and takes its
credentials from a Secret; a local/NFS lake keeps the ReadWriteMany claim; every pod has node-local /scratch."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from pipelines import k8s, k8s_client, k8s_lake
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy" / "k8s"
S3 = "s3://rdtf-lake/lake"


def _find(obj: Any, key: str) -> list[Any]:
    """Every value under ``key`` anywhere in a manifest."""
    if isinstance(obj, dict):
        return [v for k, v in obj.items() if k == key] + [x for v in obj.values() for x in _find(v, key)]
    if isinstance(obj, list):
        return [x for v in obj for x in _find(v, key)]
    return []


def _container(spec: dict) -> dict:
    (c,) = spec["containers"]
    return c


@pytest.mark.parametrize(("root", "remote"), [
    ("s3://b/lake", True), ("gs://b/lake", True), ("az://c/lake", True), ("abfs://c@acct/lake", True),
    ("S3://B/lake", True), ("/lake", False), ("/mnt/nfs/lake", False), ("file:///mnt/lake", False),
    ("C:\\lake", False), ("lake", False)])
def test_object_store_roots_are_urls_with_a_scheme_other_than_file(root, remote):
    assert k8s_lake.is_object_store(root) is remote


def test_local_lake_path():
    assert k8s_lake.local_lake_path("file:///mnt/lake/") == "/mnt/lake"
    assert k8s_lake.local_lake_path("/lake") == "/lake"
    for bad in ("var/lake", "file://relative/lake", ""):
        with pytest.raises(ValueError, match="absolute"):
            k8s_lake.local_lake_path(bad)
    with pytest.raises(ValueError, match="absolute"):  # a relative lake would differ per container
        k8s.training_pod_spec("img", 1, 1, group="rdtf-g", resources=k8s.PodResources(lake_root="var/lake"))


def test_s3_lake_mounts_no_volume_and_takes_credentials_from_the_secret():
    res = k8s.PodResources(lake_root=S3)
    launch = k8s.training_launch("img", 3, 8, f"{S3}/training/r/train.json", group="rdtf-r", namespace="rdtf",
                                 resources=res)
    worker_spec = launch.worker_job["spec"]["template"]["spec"]
    for spec in (launch.base_pod_spec, worker_spec):
        c = _container(spec)
        assert not _find(spec, "persistentVolumeClaim")  # no shared volume at all
        assert all(m["mountPath"] != "/lake" for m in c["volumeMounts"])
        assert c["envFrom"] == [{"secretRef": {"name": "rdtf-secrets"}}, {"secretRef": {"name": "rdtf-object-store"}}]
        vols = {v["name"]: v for v in spec["volumes"]}
        assert vols["scratch"] == {"name": "scratch", "emptyDir": {"sizeLimit": "100Gi"}}  # node-local, not shared
        assert {"name": "scratch", "mountPath": "/scratch"} in c["volumeMounts"]
    assert launch.env["RDTF_LAKE_ROOT"] == S3 and launch.env["RDTF_SCRATCH"] == "/scratch"
    wenv = {e["name"]: e.get("value") for e in _container(worker_spec)["env"]}
    assert wenv["RDTF_LAKE_ROOT"] == S3 and wenv["RDTF_SCRATCH"] == "/scratch"
    assert launch.command[-4:] == ["--config", f"{S3}/training/r/train.json", "--resume", "latest"]
    assert not _find(launch.service, "volumes")


def test_object_store_secret_is_configurable_and_optional():
    spec = k8s.training_pod_spec("img", 2, 8, group="rdtf-g",
                                 resources=k8s.PodResources(lake_root=S3, object_store_secret="minio-creds"))
    assert {"secretRef": {"name": "minio-creds"}} in _container(spec)["envFrom"]
    # IRSA / Workload Identity: no Secret; the same Secret as env_secrets is listed once
    none = k8s.training_pod_spec("img", 2, 8, group="rdtf-g",
                                 resources=k8s.PodResources(lake_root=S3, object_store_secret=None))
    assert _container(none)["envFrom"] == [{"secretRef": {"name": "rdtf-secrets"}}]
    same = k8s.training_pod_spec("img", 2, 8, group="rdtf-g",
                                 resources=k8s.PodResources(lake_root=S3, object_store_secret="rdtf-secrets"))
    assert _container(same)["envFrom"] == [{"secretRef": {"name": "rdtf-secrets"}}]


def test_gcs_lake_also_mounts_the_secret_as_files_for_the_key_file():
    spec = k8s.training_pod_spec("img", 2, 8, group="rdtf-g", resources=k8s.PodResources(lake_root="gs://b/lake"))
    vols = {v["name"]: v for v in spec["volumes"]}
    assert vols["object-store-key"]["secret"] == {"secretName": "rdtf-object-store"}
    mount = next(m for m in _container(spec)["volumeMounts"] if m["name"] == "object-store-key")
    assert mount == {"name": "object-store-key", "mountPath": k8s_lake.OBJECT_STORE_SECRET_MOUNT, "readOnly": True}
    assert not _find(spec, "persistentVolumeClaim")
    s3 = k8s.training_pod_spec("img", 2, 8, group="rdtf-g", resources=k8s.PodResources(lake_root=S3))
    assert "object-store-key" not in {v["name"] for v in s3["volumes"]}  # S3 keys are env only


@pytest.mark.parametrize(("root", "mount"), [("/lake", "/lake"), ("/mnt/nfs/lake", "/mnt/nfs/lake"),
                                             ("file:///mnt/nfs/lake", "/mnt/nfs/lake")])
def test_local_lake_keeps_the_pvc_at_the_lake_path(root, mount):
    res = k8s.PodResources(lake_root=root, lake_pvc="nfs-lake")
    spec = k8s.training_pod_spec("img", 2, 8, group="rdtf-g", resources=res)
    c = _container(spec)
    assert {"name": "lake", "mountPath": mount} in c["volumeMounts"]
    assert {"name": "lake", "persistentVolumeClaim": {"claimName": "nfs-lake"}} in spec["volumes"]
    assert c["envFrom"] == [{"secretRef": {"name": "rdtf-secrets"}}]  # no object-store Secret needed
    assert {"name": "scratch", "mountPath": "/scratch"} in c["volumeMounts"]


def test_default_pod_resources_are_the_old_pvc_layout():
    """Backwards compatible: no arguments -> the rdtf-lake claim at /lake, RDTF_LAKE_ROOT=/lake."""
    launch = k8s.training_launch("img", 2, 8, "/lake/c.json", group="rdtf-g", namespace="rdtf")
    assert {"name": "lake", "mountPath": "/lake"} in _container(launch.base_pod_spec)["volumeMounts"]
    assert launch.env["RDTF_LAKE_ROOT"] == "/lake" and k8s.training_env()["RDTF_LAKE_ROOT"] == "/lake"
    assert k8s.training_env(scratch=None).get("RDTF_SCRATCH") is None
    # an explicit env without the lake variables gets them
    bare = k8s.training_launch("img", 1, 1, "/lake/c.json", group="rdtf-g", namespace="rdtf", env={"X": "1"})
    assert (bare.env["RDTF_LAKE_ROOT"], bare.env["RDTF_SCRATCH"], bare.env["X"]) == ("/lake", "/scratch", "1")


def test_env_lake_that_disagrees_with_the_pods_lake_is_refused():
    with pytest.raises(ValueError, match="RDTF_LAKE_ROOT"):
        k8s.training_launch("img", 2, 8, "/lake/c.json", group="rdtf-g", namespace="rdtf",
                            env=k8s.training_env(lake_root="/lake"), resources=k8s.PodResources(lake_root=S3))


def test_client_from_env_follows_the_code_servers_lake(monkeypatch):
    monkeypatch.setenv("RDTF_LAKE_ROOT", S3)
    monkeypatch.setenv("RDTF_OBJECT_STORE_SECRET", "minio-creds")
    monkeypatch.setenv("RDTF_TRAIN_SCRATCH", "500Gi")
    c = k8s_client.k8s_pipes_client_from_env()
    assert c.pod_resources.lake_root == S3 and c.pod_resources.object_store_secret == "minio-creds"
    assert c.pod_resources.scratch_size == "500Gi" and c.train_env["RDTF_LAKE_ROOT"] == S3
    monkeypatch.setenv("RDTF_OBJECT_STORE_SECRET", "")  # workload identity: no Secret
    assert k8s_client.k8s_pipes_client_from_env().pod_resources.object_store_secret is None
    monkeypatch.delenv("RDTF_LAKE_ROOT")
    monkeypatch.delenv("RDTF_OBJECT_STORE_SECRET")
    assert k8s_client.k8s_pipes_client_from_env().pod_resources.lake_root == "/lake"


class _Ctx:
    run_id = "9f1e2d3c-aaaa-bbbb"
    retry_number = 0


def test_client_launch_for_an_s3_lake_has_no_volume():
    cmd = ["/venv/bin/python", "-m", "torch.distributed.run", "--nproc_per_node=8", "-m", "training", "--config",
           f"{S3}/training/paper/train.json", "--resume", "latest"]
    client = k8s_client.k8s_pipes_client("rdtf", image="img:1", nnodes=2, pod_resources=k8s.PodResources(lake_root=S3))
    launch = client.launch_for(_Ctx(), cmd, env={"PYTHONPATH": "/app"})
    assert launch.group == "rdtf-paper-9f1e2d3c"  # the run name still comes from .../training/<run>/train.json
    assert launch.env["RDTF_LAKE_ROOT"] == S3 and launch.env["PYTHONPATH"] == "/app"
    assert not _find([launch.base_pod_spec, launch.worker_job], "persistentVolumeClaim")


def test_example_files_show_both_layouts():
    s3_docs = list(yaml.safe_load_all((DEPLOY / "train-pod.yaml").read_text()))
    nfs_docs = list(yaml.safe_load_all((DEPLOY / "train-pod-nfs.yaml").read_text()))
    assert not _find(s3_docs, "persistentVolumeClaim") and _find(nfs_docs, "persistentVolumeClaim")
    assert {"secretRef": {"name": "rdtf-object-store"}} in _find(s3_docs, "envFrom")[0]


def test_docs_describe_the_object_store_setup():
    for rel in ("docs/scale-out.md", "deploy/k8s/README.md"):
        text = (ROOT / rel).read_text()
        assert "kubectl -n rdtf create secret generic rdtf-object-store" in text, rel
        for key in k8s_lake.OBJECT_STORE_ENV["s3"]:
            assert key in text, f"{rel}: {key}"
        for version in k8s.SUPPORTED_K8S_VERSIONS:
            assert version in text, f"{rel}: supported version {version}"
        assert "test_k8s_schema.py" in text, rel
    scale_out = (ROOT / "docs" / "scale-out.md").read_text()
    for keys in k8s_lake.OBJECT_STORE_ENV.values():
        for key in keys:
            assert key in scale_out, key
