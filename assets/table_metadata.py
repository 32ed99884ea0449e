"""Dagster's table metadata for the lake's Parquet outputs: column schema and row count on the asset page.

``dagster/column_schema`` (a ``TableSchema``) and ``dagster/row_count`` are the keys the Dagster UI shows in the
asset's *Columns* panel and overview; the schema is read from the published file's footer, so it is exactly what
readers get (no second, hand-kept list of columns).
"""

from dagster import TableColumn, TableSchema

from data.lake import parquet_rows, parquet_schema


def table_metadata(paths: list, description: str = "") -> dict:
    """Column schema (of the first file) and total rows (of all ``paths``: one table split into parts)."""
    if not paths:
        return {}
    schema = parquet_schema(paths[0])
    cols = [TableColumn(name=f.name, type=str(f.type), description=description if i == 0 else None)
            for i, f in enumerate(schema)]
    return {"dagster/column_schema": TableSchema(columns=cols),
            "dagster/row_count": sum(parquet_rows(p) for p in paths)}
