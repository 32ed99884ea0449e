"""Where the lake is inside the training pods (``pipelines.k8s`` builds the pods around this).

Two layouts, chosen by the lake root alone:

- **object store** (``s3://bucket/lake``, ``gs://...``, ``az://...``: any ``scheme://`` except ``file://``): no
  lake volume at all; ``RDTF_LAKE_ROOT`` is the URL and the credentials come from the Secret
  ``object_store_secret`` through ``envFrom`` (keys: ``OBJECT_STORE_ENV``). Nothing has to be shared between
  nodes, so no ReadWriteMany storage class is needed.
- **local / NFS path** (``/lake``, ``file:///mnt/lake``): the ReadWriteMany claim ``lake_pvc`` mounted at that
  same path in every pod (the training config lists absolute paths, so every pod must agree on it).

Both get a node-local ``emptyDir`` at ``/scratch`` (``RDTF_SCRATCH``): the trainer stages a checkpoint there
before it is published to the lake, so a half-written checkpoint never lands in the lake and, with an object
store, the upload reads a complete local file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

LAKE_MOUNT = "/lake"
SCRATCH_MOUNT = "/scratch"
OBJECT_STORE_SECRET = "rdtf-object-store"
# gcsfs/google-auth read the service-account key from a *file* (GOOGLE_APPLICATION_CREDENTIALS is its path),
# so for gs:// lakes the Secret is also mounted here; a key `key.json` in it is at .../key.json
OBJECT_STORE_SECRET_MOUNT = "/var/run/secrets/rdtf-object-store"

# The keys of the object-store Secret that the fsspec backends read from the environment (documented in
# docs/scale-out.md and deploy/k8s/README.md; the tests check the docs name every one).
OBJECT_STORE_ENV: dict[str, tuple[str, ...]] = {
    # s3fs / botocore; AWS_ENDPOINT_URL only for MinIO, Ceph RGW and other S3-compatible stores
    "s3": ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL"),
    # gcsfs / google-auth: path of the key file inside the mounted Secret, and the project
    "gs": ("GOOGLE_APPLICATION_CREDENTIALS", "GCSFS_DEFAULT_PROJECT"),
    # adlfs: an account key, a SAS token, a connection string or a service principal
    "az": ("AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_SAS_TOKEN",
           "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET",
           "AZURE_STORAGE_TENANT_ID"),
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_GCS_SCHEMES = ("gs", "gcs")


def url_scheme(root: str) -> str | None:
    """``s3`` for ``s3://bucket/lake``, None for a plain path (``C:\\lake`` has no ``://``, so it is a path)."""
    m = _SCHEME.match(root)
    return m.group(1).lower() if m else None


def is_object_store(root: str) -> bool:
    """True for a lake root that is an object-store URL: any ``scheme://`` other than ``file://``."""
    return url_scheme(root) not in (None, "file")


def local_lake_path(root: str) -> str:
    """The mount path of a local/NFS lake root (``file:///mnt/lake`` -> ``/mnt/lake``); must be absolute,
    since a relative path would mean a different directory in each container."""
    path = root[len("file://"):] if url_scheme(root) == "file" else root
    if not path.startswith("/"):
        raise ValueError(f"a lake root on a volume must be an absolute path, got {root!r}")
    return path.rstrip("/") or "/"


@dataclass(frozen=True)
class LakeStorage:
    """The container and pod fragments (camelCase, Kubernetes API shape) that put the lake into a pod."""

    env: dict[str, str]  # RDTF_LAKE_ROOT, RDTF_SCRATCH
    env_from: list[dict[str, Any]]  # the object-store Secret, if any
    volume_mounts: list[dict[str, Any]]
    volumes: list[dict[str, Any]]


def lake_storage(lake_root: str, *, lake_pvc: str = "rdtf-lake", object_store_secret: str | None = OBJECT_STORE_SECRET,
                 scratch_size: str | None = "100Gi") -> LakeStorage:
    """The lake part of a training pod for ``lake_root`` (see the module docstring).

    ``object_store_secret=None``: no Secret, for pods that get their credentials from the platform (EKS IRSA /
    pod identity, GKE Workload Identity, AKS workload identity). ``scratch_size`` bounds the scratch
    ``emptyDir`` (the pod is evicted beyond it; None: unbounded, up to the node's disk).
    """
    scratch: dict[str, Any] = {"name": "scratch", "emptyDir": {"sizeLimit": scratch_size} if scratch_size else {}}
    mounts: list[dict[str, Any]] = [{"name": "scratch", "mountPath": SCRATCH_MOUNT}]
    volumes: list[dict[str, Any]] = [scratch]
    env_from: list[dict[str, Any]] = []
    if is_object_store(lake_root):
        if object_store_secret:
            env_from.append({"secretRef": {"name": object_store_secret}})
            if url_scheme(lake_root) in _GCS_SCHEMES:
                mounts.append({"name": "object-store-key", "mountPath": OBJECT_STORE_SECRET_MOUNT, "readOnly": True})
                volumes.append({"name": "object-store-key", "secret": {"secretName": object_store_secret}})
    else:
        path = local_lake_path(lake_root)
        mounts.append({"name": "lake", "mountPath": path})
        volumes.append({"name": "lake", "persistentVolumeClaim": {"claimName": lake_pvc}})
    return LakeStorage(env={"RDTF_LAKE_ROOT": lake_root, "RDTF_SCRATCH": SCRATCH_MOUNT}, env_from=env_from,
                       volume_mounts=mounts, volumes=volumes)
