"""A source read again: the fields of rows the pool already holds, as the source has them now.

A row's id hashes its conversation alone, so a source whose other fields were edited (a label fixed, a field
added) reads back as rows "already present"; ``curate run`` curates the source as it is now, so its pool takes
the source's fields. The derived columns and caches are keyed by id and stay.
"""

from __future__ import annotations

from typing import Any

COMPARE_ROWS = 10_000  # rows compared at a time


def source_as_now(current: Any, source_tables: list[Any], json_columns: set[str]) -> Any | None:
    """The source's rows as one Arrow table when they differ from ``current`` (the pool about to be written, which
    holds the source's ids: the rows it already had and those just added) in any field, value or in their order;
    None when they agree. ``json_columns``: fields the pool holds as JSON text that the source's table typed (converted here)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate.pools.table import json_text

    fresh = pa.concat_tables(source_tables)
    for name in sorted(json_columns & set(fresh.column_names)):
        fresh = fresh.set_column(fresh.schema.get_field_index(name), name, json_text(fresh.column(name).to_pylist()))
    if len(fresh) != len(current) or set(fresh.column_names) != set(current.column_names):
        return fresh
    current = current.select(fresh.column_names)
    if not current.schema.equals(fresh.schema):
        return fresh
    positions = pc.index_in(fresh.column("id"), value_set=current.column("id"))
    if positions.null_count:
        return fresh
    if not pc.all(pc.equal(positions, pa.array(np.arange(len(positions), dtype=np.int32)))).as_py():
        return fresh  # the source's order: a row added at its top came last, and "the first copy" was history's
    for start in range(0, len(fresh), COMPARE_ROWS):
        if not _comparable(current.slice(start, COMPARE_ROWS)).equals(_comparable(fresh.slice(start, COMPARE_ROWS))):
            return fresh
    return None


def _comparable(table: Any) -> Any:
    """``table`` with each float column as (its values with NaN as 0, where it is NaN): Arrow's ``equals`` holds
    NaN unequal to itself, so a source with a NaN rating read as changed on every re-run."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for i, field in reversed(list(enumerate(table.schema))):
        if pa.types.is_floating(field.type):
            column = table.column(i)
            nan = pc.is_nan(column)
            table = table.set_column(i, field.name, pc.if_else(nan, pa.scalar(0, field.type), column))
            table = table.append_column(f"{field.name} is NaN", nan)
    return table
