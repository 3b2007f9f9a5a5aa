"""The pool as an Arrow table: id, conversation, format first, then every original column.

Original columns are kept as they came whenever Arrow can store them; one it cannot (mixed types, an
integer beyond 64 bits, nesting deeper than ``datasets`` handles) is kept as JSON text, never dropped.
"""

from __future__ import annotations

import json
from typing import Any

# ``datasets`` recurses over nested column types and fails from about 45 levels; a deeper column is kept as JSON text.
MAX_STORED_NESTING = 32


def nesting(data_type: Any) -> int:
    """Levels of an Arrow type (a scalar 1, a list of scalars 2, ...)."""
    depth, level = 0, [data_type]
    while level:
        depth += 1
        level = [t.field(i).type for t in level for i in range(t.num_fields)]
    return depth


def json_text(values: list[Any]):
    """``values`` as an Arrow string array of their JSON text (None stays null): how a pool holds a field whose
    values mix types; a value JSON cannot hold (a date from a Parquet file) is written as its text."""
    import pyarrow as pa

    return pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in values], pa.string())


def to_table(rows: list[dict[str, Any]]):
    """Build an Arrow table: id, conversation, format first, then every original column.

    A column whose values Arrow cannot type together (int in one row, str in another), cannot hold
    (an integer beyond 64 bits) or that nests deeper than ``datasets`` can store (MAX_STORED_NESTING)
    is kept as JSON text rather than dropped; its name is returned so callers can say so.
    """
    import pyarrow as pa

    names: dict[str, None] = {"id": None, "conversation": None, "format": None}
    for row in rows:
        for k in row:
            names.setdefault(k, None)
    arrays, as_json = {}, []
    for name in names:
        values = [row.get(name) for row in rows]
        kinds = {type(v) is bool for v in values if v is not None and not isinstance(v, str | list | dict)}
        try:  # Arrow would read a true among numbers as 1.0: booleans mixed with numbers are mixed types
            array = pa.array(values) if len(kinds) < 2 else None
        except (pa.ArrowException, OverflowError):  # mixed types, or an integer beyond 64 bits
            array = None
        if array is None or nesting(array.type) > MAX_STORED_NESTING:
            array = json_text(values)
            as_json.append(name)
        arrays[name] = array
    return pa.table(arrays), as_json
