"""The MLflow Model Registry side of a trained model: log the package, register a version, lineage, aliases.

A training ends as a checkpoint folder and an MLflow run. :func:`log_sticker_model` turns the exported diffusers
package (``model.pipeline.export_checkpoint``) into an MLflow model on that run — the ``pyfunc`` flavour of
``training/serving.py`` (models-from-code: the code is declared as ``code_paths``, nothing is pickled) with the
package as its ``pipeline`` artifact (safetensors weights), a signature and an input example — and
:func:`register_version` makes it a version of a registered model (default ``rdtf-dfgn``) tagged with its
evaluation metrics, ``weights``, the drops and shard-index hash it trained on, the Dagster run id and the git
commit. Aliases: ``challenger`` always names the latest candidate, ``champion`` only moves through the
promotion gate (``evaluation.promotion``).

Registration is idempotent: a version already registered for the same training run, checkpoint step and
evaluation protocol is reused (a re-materialization does not create duplicates).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from training.links import run_url, ui_base, version_url  # noqa: F401 - re-exported (assets use reg.run_url)

log = logging.getLogger(__name__)

REGISTERED_MODEL = "rdtf-dfgn"  # default registered-model name
MODEL_ARTIFACT = "sticker_model"  # name of the logged model on the training run
CHAMPION, CHALLENGER = "champion", "challenger"
ROOT = Path(__file__).resolve().parent.parent
SERVING_CODE = Path(__file__).with_name("serving.py")
CODE_PATHS = ("model", "data")  # packages the served model imports (copied into the model, not pickled)
# training-run tags that define how the evaluation numbers were computed (see protocol_fingerprint)
PROTOCOL_TAG_PREFIXES = ("fvd_", "clip_")
PIP_PACKAGES = ("torch", "diffusers", "transformers", "open_clip_torch", "safetensors", "numpy", "pandas", "pillow",
                "mlflow", "fsspec")


def client(tracking_uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


# ------------------------------------------------------------------------------------------ lineage


def shard_lineage(index_paths: Iterable[str]) -> dict[str, str]:
    """Drops and a content hash of the shard indexes a training read (order-independent; paths do not matter)."""
    from data.shards import read_index

    drops, digests = [], []
    for p in index_paths:
        doc = read_index(p)
        drops.append(str(doc.get("drop_id") or Path(str(p)).parent.parent.name))  # lake/shards/<drop>/<version>/
        digests.append(hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest())
    total = hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()[:16]
    return {"drops": ",".join(sorted(set(drops))), "shard_index_hash": total, "n_drops": str(len(set(drops)))}


def git_commit(root: Path = ROOT) -> str:
    """The commit of the code that registers the model ("unknown" outside a git checkout)."""
    try:
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_training_inputs(tracking_uri: str, run_id: str, index_paths: Iterable[str]) -> int:
    """The training data as MLflow dataset inputs of the run (one dataset per drop's shard index); returns the count.

    Each shows in the run's *Datasets used* with its source (the index path) and a digest of its content.
    """
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    from data.shards import read_index
    from data.storage import is_remote, lake_path

    inputs = []
    for p in index_paths:
        doc = read_index(p)
        drop = str(doc.get("drop_id") or Path(str(p)).parent.parent.name)
        digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
        path = lake_path(p)
        source = _dataset_source(str(path) if is_remote(path) else Path(str(path)).resolve().as_uri())
        ds = MetaDataset(source, name=f"shards/{drop}", digest=digest)
        inputs.append(DatasetInput(ds._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", "training")]))
    if inputs:
        client(tracking_uri).log_inputs(run_id, datasets=inputs)
    return len(inputs)


def _dataset_source(uri: str):
    from mlflow.data.dataset_source_registry import resolve_dataset_source

    return resolve_dataset_source(uri)


def protocol_fingerprint(run_tags: dict[str, str], sampling: dict) -> str:
    """Hash of everything that makes two evaluations comparable: metric-network weights and options (run tags
    ``fvd_*``, ``clip_*``) and the sampling settings (tasks, n_videos, steps, seed) of ``evaluation_samples``."""
    proto = {k: v for k, v in sorted(run_tags.items()) if k.startswith(PROTOCOL_TAG_PREFIXES)}
    proto["sampling"] = {k: sampling.get(k) for k in ("tasks", "n_videos", "steps", "seed")}
    return hashlib.sha256(json.dumps(proto, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------ model


def _pip_requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for name in PIP_PACKAGES:
        try:
            out.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            out.append(name)
    return out


def input_example() -> dict:
    """One request (columns of the signature); 1 DDIM step, because MLflow runs it once to validate the model."""
    return {"prompt": ["a cat waving"], "task": ["generate"], "steps": [1], "seed": [0], "format": ["gif"]}


def log_sticker_model(tracking_uri: str, run_id: str, package_dir: str | Path, *, tags: dict[str, str] | None = None) -> str:
    """Log the package as an MLflow pyfunc model on ``run_id``; returns its model URI (``models:/m-…``)."""
    import warnings

    import mlflow
    import pandas as pd

    from training import serving

    warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")  # see training/serving.py
    package_dir = Path(package_dir)
    if not (package_dir / "model_index.json").is_file():
        raise ValueError(f"{package_dir} is not an RDTF model package (no model_index.json): export the checkpoint first")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT, python_model=str(SERVING_CODE), artifacts={"pipeline": str(package_dir)},
            code_paths=[str(ROOT / p) for p in CODE_PATHS], signature=serving.signature(),
            input_example=pd.DataFrame(input_example()), pip_requirements=_pip_requirements(), tags=tags or None)
    return info.model_uri


def find_version(tracking_uri: str, name: str, run_id: str, step: int, protocol: str):
    """The version already registered for this training run, step and evaluation protocol, or None."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        versions = c.search_model_versions(f"name = '{_quote(name)}' and run_id = '{_quote(run_id)}'")
    except MlflowException:
        return None
    for v in versions:
        if v.tags.get("checkpoint_step") == str(step) and v.tags.get("eval_protocol") == protocol:
            return v
    return None


def _quote(text: str) -> str:
    if "'" in text or "\\" in text:
        raise ValueError(f"names may not contain quotes or backslashes: {text!r}")
    return text


def register_version(tracking_uri: str, name: str, model_uri: str, run_id: str, tags: dict[str, str]):
    """A new version of ``name`` (created if absent) from ``model_uri``, with ``tags``; returns the ModelVersion."""
    from mlflow.exceptions import MlflowException

    c = client(tracking_uri)
    try:
        c.create_registered_model(name, description="RDTF DFGN sticker generators (arXiv 2503.17735); aliases: "
                                                     "champion (promoted by the gate), challenger (latest candidate)")
    except MlflowException as e:
        if "RESOURCE_ALREADY_EXISTS" not in str(e.error_code):
            raise
    return c.create_model_version(name, model_uri, run_id=run_id, tags={k: str(v)[:5000] for k, v in tags.items()})


def alias_version(tracking_uri: str, name: str, alias: str):
    """The version holding ``alias``, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return client(tracking_uri).get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def set_alias(tracking_uri: str, name: str, alias: str, version: str) -> None:
    client(tracking_uri).set_registered_model_alias(name, alias, str(version))


def set_version_tags(tracking_uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    c = client(tracking_uri)
    for k, v in tags.items():
        c.set_model_version_tag(name, str(version), k, str(v)[:5000])


def version_metrics(version) -> dict[str, float]:
    """The ``eval/<task>/<metric>`` tags of a ModelVersion as floats."""
    out = {}
    for k, v in version.tags.items():
        if k.startswith("eval/"):
            try:
                out[k] = float(v)
            except ValueError:
                continue
    return out


# ------------------------------------------------------------------------------------------ use


def resolve_model_uri(model_uri: str, tracking_uri: str) -> tuple[str, str]:
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` -> (name, version); ValueError naming the forms."""
    import re

    from mlflow.exceptions import MlflowException

    m = re.fullmatch(r"models:/([A-Za-z0-9][A-Za-z0-9_.-]{0,127})(?:@([A-Za-z0-9_-]{1,64})|/(\d{1,9}))", model_uri or "")
    if m is None:
        raise ValueError(f"model URI {model_uri!r} must be models:/<name>@<alias> or models:/<name>/<version>")
    name, alias, version = m.groups()
    if tracking_uri.startswith("sqlite:///") and not Path(tracking_uri.removeprefix("sqlite:///")).is_file():
        raise ValueError(f"no MLflow store at {_shown(tracking_uri)} (set --tracking-uri or MLFLOW_TRACKING_URI)")
    c = client(tracking_uri)
    try:
        v = c.get_model_version_by_alias(name, alias) if alias else c.get_model_version(name, version)
    except MlflowException as e:
        raise ValueError(f"{model_uri} not found in the registry at {_shown(tracking_uri)}: {e.message}") from None
    return name, str(v.version)


def _shown(uri: str) -> str:
    from data.redact import redact_uri

    return redact_uri(uri)


def _package_path(mlmodel_text: str, model_uri: str) -> str:
    """The relative path of the ``pipeline`` artifact recorded in an MLmodel file (refusing anything outside)."""
    import yaml

    try:
        rel = yaml.safe_load(mlmodel_text)["flavors"]["python_function"]["artifacts"]["pipeline"]["path"]
    except (yaml.YAMLError, KeyError, TypeError):
        raise ValueError(f"{model_uri} is not an RDTF sticker model: its MLmodel names no 'pipeline' artifact") from None
    parts = Path(str(rel)).parts
    if not parts or Path(str(rel)).is_absolute() or ".." in parts:
        raise ValueError(f"{model_uri}: MLmodel's pipeline artifact path {rel!r} is not inside the model")
    return "/".join(parts)


def download_package(model_uri: str, tracking_uri: str, cache_root: str | Path) -> Path:
    """The diffusers package of a registered model version as a local folder (downloaded once per version).

    Only the package artifact is used: the model's own code is *not* executed here (the installed ``model``
    package loads it), so ``rdtf generate --model`` trusts the registry's weights, not its code.
    """
    import shutil
    import tempfile

    import mlflow
    import mlflow.exceptions

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar line per file otherwise
    name, version = resolve_model_uri(model_uri, tracking_uri)
    dest = Path(cache_root) / "models" / name / version
    if (dest / "model_index.json").is_file():
        return dest
    root = client(tracking_uri).get_model_version_download_uri(name, version)  # the logged model's artifact root
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=dest.parent))
    try:
        try:  # only the package (its path is in MLmodel): the model's code and environment files are not needed here
            root = root.rstrip("/")
            mlmodel = mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/MLmodel", dst_path=str(tmp / "meta"),
                                                          tracking_uri=tracking_uri)
            rel = _package_path(Path(mlmodel).read_text(), model_uri)
            got = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"{root}/{rel}", dst_path=str(tmp / "pkg"),
                                                           tracking_uri=tracking_uri))
        except (OSError, mlflow.exceptions.MlflowException) as e:
            raise ValueError(f"{model_uri} (version {version}) is not an RDTF sticker model: its artifacts/pipeline "
                             f"package cannot be read ({e})") from None
        if not (got / "model_index.json").is_file():
            raise ValueError(f"{model_uri} (version {version}) is not an RDTF sticker model: no artifacts/pipeline package")
        try:
            os.replace(got, dest)  # atomic: a concurrent download of the same version finds a complete folder
        except OSError:
            if not (dest / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
