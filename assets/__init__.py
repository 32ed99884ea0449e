"""Dagster assets, one module per pipeline stage, plus the pure helpers they wrap.

Deliberately import-free: ingest worker processes import ``assets.ingest_engine`` and must not
pay for importing Dagster.
"""
