"""The project's single Dagster ``Definitions`` (loaded by workspace.yaml and ``dagster dev``)."""

import os
import warnings

from dagster import Definitions, PreviewWarning

from assets.ablation import ABLATION_ASSETS
from assets.clusters import frame_clusters
from assets.embeddings import frame_embeddings
from assets.evaluation import EVALUATION_ASSETS
from assets.gallery import sample_gallery
from assets.ingest import ingested_stickers
from assets.registry import REGISTRY_ASSETS
from assets.shards import webdataset_shards
from assets.training import trained_model
from pipelines.jobs import ablation_job, ablation_report_job, drop_data_job, evaluate_job, train_job
from pipelines.resources import default_resources
from pipelines.schedules import retrain_schedule
from pipelines.sensors import automation_sensor, new_drop_sensor

# Dagster's own Pipes client uses a preview API internally (not something this project calls): noise in every run log
warnings.filterwarnings("ignore", category=PreviewWarning, message=r".*PipesMessageReader\.expected_writer_count")


def _executor():
    """Default in-process/multiprocess executor locally; ``RDTF_LAUNCHER=k8s``: one pod per step (k8s_job_executor)."""
    if os.environ.get("RDTF_LAUNCHER", "local").strip().lower() in ("", "local"):
        return None
    from pipelines.k8s import default_executor

    return default_executor()


defs = Definitions(
    assets=[ingested_stickers, frame_embeddings, frame_clusters, webdataset_shards, trained_model, sample_gallery,
            *EVALUATION_ASSETS, *REGISTRY_ASSETS, *ABLATION_ASSETS],
    jobs=[drop_data_job, train_job, evaluate_job, ablation_job, ablation_report_job],
    schedules=[retrain_schedule],
    sensors=[new_drop_sensor, automation_sensor],
    resources=default_resources(),
    executor=_executor(),
)
