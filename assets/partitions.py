"""Partitioning: one dynamic partition per sticker drop (added by ``pipelines.sensors``)."""

from dagster import DynamicPartitionsDefinition

DROPS_PARTITION = "drops"
drop_partitions = DynamicPartitionsDefinition(name=DROPS_PARTITION)
