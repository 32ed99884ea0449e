"""The project's single Dagster ``Definitions`` (loaded by workspace.yaml and ``dagster dev``)."""

from dagster import Definitions

from assets.ingest import ingested_stickers
from pipelines.jobs import drop_data_job
from pipelines.resources import default_resources
from pipelines.sensors import new_drop_sensor

defs = Definitions(
    assets=[ingested_stickers],
    jobs=[drop_data_job],
    sensors=[new_drop_sensor],
    resources=default_resources(),
)
