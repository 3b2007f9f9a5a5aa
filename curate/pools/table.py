"""The pool as an Arrow table: id, conversation, format first, then every original column.

Original columns are kept as they came whenever Arrow can store them; one it cannot (mixed types, an
integer beyond 64 bits, objects with different keys, nesting deeper than ``datasets`` handles, an object that is
always empty, which Parquet cannot write) is kept as JSON text, never dropped or altered.
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


def uneven_objects(values: list[Any]) -> bool:
    """Whether objects (dicts) at one place in the values have different keys: Arrow types them as one struct of
    every key, so a row would come back with keys it never had (as nulls; a chat message with ``"name": null``).
    Walked a level at a time (each place's values in one list), several times faster than value by value."""
    level: list[list[Any]] = [values]
    while level:
        deeper: list[list[Any]] = []
        for place in level:
            dicts = [v for v in place if isinstance(v, dict)]
            if dicts:
                keys = {frozenset(d) for d in dicts}
                if len(keys) > 1:
                    return True
                deeper.extend([d[k] for d in dicts] for k in next(iter(keys)))
            lists = [v for v in place if isinstance(v, list)]
            if lists:
                deeper.append([x for items in lists for x in items])
        level = deeper
    return False


def has_empty_struct(data_type: Any) -> bool:
    """Whether an Arrow type holds a struct of no fields (every value ``{}``) at any level: Parquet cannot store it."""
    import pyarrow as pa

    return (pa.types.is_struct(data_type) and data_type.num_fields == 0) or any(
        has_empty_struct(data_type.field(i).type) for i in range(data_type.num_fields))


def has_struct(data_type: Any) -> bool:
    """Whether an Arrow type holds a struct at any level."""
    return bool(struct_keys(data_type))


def struct_keys(data_type: Any, path: tuple = ()) -> set[tuple[tuple, frozenset]]:
    """Every struct in an Arrow type, as (where it sits, its field names): two parts or loads whose structs differ
    here would be promoted to one struct of every key (nulls for the keys a row never had)."""
    import pyarrow as pa

    out = {(path, frozenset(data_type.names))} if pa.types.is_struct(data_type) else set()
    for i in range(data_type.num_fields):
        field = data_type.field(i)
        out |= struct_keys(field.type, (*path, field.name if pa.types.is_struct(data_type) else None))
    return out


def uneven_struct_types(types: list[Any]) -> bool:
    """Whether Arrow types of one column hold structs of different keys at one place (see :func:`struct_keys`); a
    type with no struct there (null, a list of nulls: a part or load whose values were all null or empty) agrees."""
    keys: dict[tuple, frozenset] = {}
    for t in types:
        for path, names in struct_keys(t):
            if keys.setdefault(path, names) != names:
                return True
    return False


def json_text(values: list[Any]):
    """``values`` as an Arrow string array of their JSON text (None stays null): how a pool holds a field whose
    values mix types; a value JSON cannot hold (a date from a Parquet file) is written as its text."""
    import pyarrow as pa

    return pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in values], pa.string())


def to_table(rows: list[dict[str, Any]]):
    """Build an Arrow table: id, conversation, format first, then every original column.

    A column whose values Arrow cannot type together (int in one row, str in another), cannot hold
    (an integer beyond 64 bits), would change (objects with different keys: :func:`uneven_objects`), that
    nests deeper than ``datasets`` can store (MAX_STORED_NESTING) or holds only empty objects (Parquet cannot
    write a struct of no fields) is kept as JSON text rather than dropped or altered; its name is returned so
    callers can say so.
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
        if array is None or nesting(array.type) > MAX_STORED_NESTING or has_empty_struct(array.type) or (
                name != "conversation" and has_struct(array.type) and uneven_objects(values)):
            array = json_text(values)
            as_json.append(name)
        arrays[name] = array
    return pa.table(arrays), as_json
