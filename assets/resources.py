"""Resource types the assets depend on. Concrete instances are chosen in ``pipelines.resources``."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource

from assets.drops import join


class LakeResource(ConfigurableResource):
    """Where drops arrive and where pipeline outputs go."""

    drops_root: str  # fsspec URL of the folder/prefix that holds one sub-folder per drop
    lake_root: str  # local directory for stage outputs (manifests, frames, shards, checkpoints)

    def drop_url(self, drop_id: str) -> str:
        return join(self.drops_root, drop_id)

    def stage_dir(self, stage: str, drop_id: str) -> Path:
        return Path(self.lake_root) / stage / drop_id


class MlflowResource(ConfigurableResource):
    """MLflow tracking location shared by training and evaluation assets."""

    tracking_uri: str  # e.g. sqlite:///var/mlflow.db (default) or http://127.0.0.1:5000
    experiment: str = "rdtf-stickers"  # experiment that training/evaluation runs are logged to
    artifact_location: str | None = None  # where new experiments store artifacts (None: MLflow default)
