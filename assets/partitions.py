"""Partitioning: one dynamic partition per sticker drop (added by ``pipelines.sensors``)."""

from dagster import AssetExecutionContext, DynamicPartitionsDefinition, Failure

from data.ids import validate_id

DROPS_PARTITION = "drops"
drop_partitions = DynamicPartitionsDefinition(name=DROPS_PARTITION)


def drop_id_of(context: AssetExecutionContext) -> str:
    """The run's partition key as a drop id, validated before it becomes a path.

    Dynamic partitions can be added from the UI, GraphQL or the Python API with any string, so the
    sensor's filtering is not enough: a key such as ``../victim`` fails the step here, with the rule in
    the message and no retries (retrying cannot make the key valid).
    """
    try:
        return validate_id(context.partition_key, "partition key")
    except ValueError as exc:
        raise Failure(description=str(exc), allow_retries=False) from None
