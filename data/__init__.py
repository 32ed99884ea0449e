"""The data half: drops (the contract), media decode/encode, the lake and its publish protocol, and the engines of
the data stages (ingest, embed, cluster, shard), the training loader, synthetic drops and faults.

Import-light on purpose (no torch, no Dagster at import time): ingest worker processes import ``data.media`` and
``data.ingest`` and must start fast.
"""
