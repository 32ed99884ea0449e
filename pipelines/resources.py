"""The one place where concrete resources are chosen.

Defaults are embedded and project-local: everything lives under ``RDTF_HOME`` (default ``./var``):
drops in ``var/drops``, stage outputs in ``var/lake``, MLflow in the SQLite file ``var/mlflow.db``.
Environment variables override them without code changes:

- ``RDTF_HOME``            base folder for the defaults below
- ``RDTF_DROPS_ROOT``      fsspec URL where drops arrive (e.g. ``s3://bucket/sticker-drops``)
- ``RDTF_LAKE_ROOT``       local directory for stage outputs
- ``MLFLOW_TRACKING_URI``  MLflow tracking URI (e.g. ``http://127.0.0.1:5000`` or a Postgres URI)
- ``RDTF_CLIP_MODEL`` / ``RDTF_CLIP_PRETRAINED`` / ``RDTF_CLIP_CACHE``  CLIP for embeddings (default: random
  ``rdtf-tiny-clip``; e.g. ``ViT-B-32`` + ``/models/open_clip_vit_b32.safetensors``); also used for CLIP similarity
- ``RDTF_I3D_WEIGHTS`` / ``RDTF_FASTVQA_WEIGHTS``  local ``i3d_pretrained_400.pt`` / ``FAST_VQA_B_1_4.pth`` for
  FVD / VQA (default: random-init presets, tagged ``weights=random``)
- ``RDTF_LAUNCHER``        ``local`` (default) | ``k8s``: training through PipesK8sClient + one pod per step
  (``RDTF_K8S_NAMESPACE``, ``RDTF_IMAGE``, ``RDTF_TRAIN_NNODES``, ``RDTF_TRAIN_CPU/MEMORY/SHM``, ``RDTF_LAKE_PVC``,
  ``RDTF_MODELS_PVC``; see pipelines/k8s.py and docs/scale-out.md)
"""

from __future__ import annotations

import os

from dagster import PipesSubprocessClient

from assets.resources import ClipResource, EvalModelsResource, LakeResource, MlflowResource
from pipelines.env import PROJECT_ROOT, clip_from_env, default_tracking_uri, rdtf_home  # noqa: F401 - re-exported


def pipes_client():
    """torchrun as a local subprocess; ``RDTF_LAUNCHER=k8s``: multi-node torchrun pods via PipesK8sClient (docs/scale-out.md)."""
    if os.environ.get("RDTF_LAUNCHER", "local").strip().lower() in ("", "local"):
        return PipesSubprocessClient()
    from pipelines.k8s import launcher  # validates RDTF_LAUNCHER
    from pipelines.k8s_client import k8s_pipes_client_from_env  # lazy: dagster_k8s is slow

    return k8s_pipes_client_from_env() if launcher() == "k8s" else PipesSubprocessClient()


def default_resources() -> dict:
    home = rdtf_home()
    return {
        "storage": LakeResource(
            drops_root=os.environ.get("RDTF_DROPS_ROOT", str(home / "drops")),
            lake_root=os.environ.get("RDTF_LAKE_ROOT", str(home / "lake")),
        ),
        "clip": ClipResource(**clip_from_env()),
        "mlflow": MlflowResource(
            tracking_uri=default_tracking_uri(),
            artifact_location=str(home / "mlartifacts"),
        ),
        "evaluators": EvalModelsResource(
            i3d_weights=os.environ.get("RDTF_I3D_WEIGHTS") or None,
            fastvqa_weights=os.environ.get("RDTF_FASTVQA_WEIGHTS") or None,
        ),
        # local: torchrun subprocess; RDTF_LAUNCHER=k8s: multi-node torchrun pods via PipesK8sClient
        "pipes_subprocess_client": pipes_client(),
    }
