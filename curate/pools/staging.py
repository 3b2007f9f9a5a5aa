"""A source's rows written to disk as Arrow files part by part, so reading a pool holds one part in memory, not
the pool (:func:`curate.pools.stage`; ``Workspace.load`` adds the staged rows to the pool from these files).

Each part is typed on its own rows, as :func:`curate.pools.table.to_table` types a whole pool; when the parts are
done their types are unified once (an int column whose later rows hold floats becomes float, a dict column gains the
keys later rows have, a column absent from a part is null there) and a column the parts cannot agree on is kept as
JSON text in every part, as ``to_table`` keeps a column whose rows cannot agree. The staged pool is what
``to_table`` makes of all rows at once, with one difference: a dict column kept as JSON text for that reason shows,
in the parts where it was typed as a struct, the keys other rows of that part had as null (Arrow's struct fills
them).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curate.pools.formats import TURN_FIELDS, turn_keys_not_kept
from curate.pools.table import MAX_STORED_NESTING, json_text, nesting, to_table, uneven_struct_types
from curate.storage.write_errors import writing

PART_ROWS = 20_000  # rows per staged part: the read holds one part's rows as Python objects (~20-200 MB)


@dataclass
class StagedPool:
    """A read source on disk: its rows as Arrow parts (``id`` assigned), its rejects as JSON Lines, and counts."""

    source: str
    folder: Path
    parts: list[Path] = field(default_factory=list)
    rows_read: int = 0
    formats: Counter = field(default_factory=Counter)
    empty_responses: int = 0
    instruction_only: int = 0
    without_reply_text: int = 0  # rows with no assistant turn that holds text (none, or only empty ones)
    rejects: int = 0
    first_reject: Any = None  # a curate.pools.Reject
    columns_kept_as_json: list[str] = field(default_factory=list)
    turn_keys_not_kept: Counter = field(default_factory=Counter)  # key -> rows whose source turns have it
    turn_fields: dict[str, str] = field(default_factory=lambda: dict(TURN_FIELDS))  # chat shape -> its turns' field

    @property
    def rejects_file(self) -> Path:
        return self.folder / "rejects.jsonl"

    def tables(self, *, in_memory: bool = False) -> Iterator[Any]:
        """Each part as a memory-mapped ``pyarrow.Table`` (all parts share one schema); ``in_memory``: read into
        memory instead, for a table that outlives the folder."""
        for path in self.parts:
            yield _read(path, in_memory)

    def ids(self) -> Any:
        """Every staged row's id, in order, as one Arrow array (no Python string per row)."""
        import pyarrow as pa

        chunks = [chunk for table in self.tables() for chunk in table.column("id").chunks]
        return pa.concat_arrays(chunks) if chunks else pa.array([], pa.string())


class PoolWriter:
    """Collects rows (with ids) and rejects into a :class:`StagedPool` under ``folder``, ``part_rows`` rows at a time."""

    def __init__(self, source: str, folder: str | Path, part_rows: int = PART_ROWS,
                 turn_fields: dict[str, str] | None = None):
        self.staged = StagedPool(source=source, folder=Path(folder), turn_fields=dict(turn_fields or TURN_FIELDS))
        self.staged.folder.mkdir(parents=True, exist_ok=True)
        self.part_rows = part_rows
        self._rows: list[dict[str, Any]] = []
        self._raw: list[tuple[Path, set[str]]] = []  # each part as typed on its own rows, and its JSON columns
        self._rejects = None

    def add(self, row: dict[str, Any]) -> None:
        staged = self.staged
        staged.rows_read += 1
        staged.formats[row["format"]] += 1
        empty, instruction_only = reply_state(row["conversation"])
        staged.empty_responses += empty
        staged.instruction_only += instruction_only
        staged.without_reply_text += instruction_only or not any(
            t["content"].strip() for t in row["conversation"] if t["role"] == "assistant")
        if (turns := staged.turn_fields.get(row["format"])) is not None:
            staged.turn_keys_not_kept.update(turn_keys_not_kept(row.get(turns)))
        self._rows.append(row)
        if len(self._rows) >= self.part_rows:
            self._flush()

    def reject(self, reject: Any) -> None:
        with writing(self.staged.rejects_file):  # a full disk names the file
            if self._rejects is None:
                self._rejects = open(self.staged.rejects_file, "w", encoding="utf-8")  # noqa: SIM115 (closed in finish)
                self.staged.first_reject = reject
            self._rejects.write(reject_line(reject))
        self.staged.rejects += 1

    def _flush(self) -> None:
        if not self._rows:
            return
        table, as_json = to_table(self._rows)
        path = self.staged.folder / f"raw-{len(self._raw):05d}.arrow"
        _write(path, table)
        self._raw.append((path, set(as_json)))
        self._rows = []

    def finish(self) -> StagedPool:
        """Write the last part, give every part the same schema, and return the staged pool."""
        self._flush()
        if self._rejects is not None:
            with writing(self.staged.rejects_file):
                self._rejects.close()
        as_json: set[str] = set().union(*(cols for _, cols in self._raw))
        while True:
            schema, as_json = _unified_schema([_schema(path) for path, _ in self._raw], as_json)
            try:
                self.staged.parts = [_conform(path, cols, schema, as_json) for path, cols in self._raw]
                break
            except _CastFailed as exc:  # a value the unified type cannot hold (an integer beyond 64 bits)
                as_json.add(exc.column)
        for path, _ in self._raw:
            if path not in self.staged.parts:
                path.unlink()
        self.staged.columns_kept_as_json = [name for name in schema.names if name in as_json]
        return self.staged


def reply_state(conversation: list[dict[str, str]]) -> tuple[bool, bool]:
    """(an assistant turn is empty, no assistant turn at all): the two kinds of row the load summary counts."""
    replies = [t["content"] for t in conversation if t["role"] == "assistant"]
    return any(not text.strip() for text in replies), not replies


def reject_line(reject: Any) -> str:
    """A ``curate.pools.Reject`` as one line of a rejects file."""
    return json.dumps(asdict(reject), ensure_ascii=False) + "\n"


class _CastFailed(Exception):
    def __init__(self, column: str):
        self.column = column


def _write(path: Path, table: Any) -> None:
    """``table`` as the Arrow file ``path``; an OS error names it (pyarrow's about a full disk names no file)."""
    import pyarrow as pa

    with writing(path), pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def _read(path: Path, in_memory: bool = False) -> Any:
    import pyarrow as pa

    with (pa.OSFile if in_memory else pa.memory_map)(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def _schema(path: Path) -> Any:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).schema


def _unified_schema(schemas: list[Any], as_json: set[str]) -> tuple[Any, set[str]]:
    """One schema for every part: columns in order of first appearance, each of the type its parts promote to;
    a column they cannot agree on (int and str, bool and number) or nesting too deep joins ``as_json``."""
    import pyarrow as pa

    names: dict[str, list[Any]] = {}
    for schema in schemas:
        for f in schema:
            names.setdefault(f.name, []).append(f.type)
    as_json, fields = set(as_json), []
    for name, types in names.items():
        typed = [t for t in types if not pa.types.is_null(t)]
        data_type = pa.null()
        if name not in as_json and typed:
            kinds = {pa.types.is_boolean(t) for t in typed if not (pa.types.is_string(t) or pa.types.is_nested(t))}
            try:  # as in to_table: booleans beside numbers are mixed types, not numbers
                if len(kinds) > 1:
                    raise pa.ArrowTypeError("bool beside numbers")
                data_type = pa.unify_schemas([pa.schema([(name, t)]) for t in typed],
                                             promote_options="permissive").field(name).type
            except (pa.ArrowTypeError, pa.ArrowInvalid, pa.ArrowNotImplementedError):
                as_json.add(name)
            else:
                if nesting(data_type) > MAX_STORED_NESTING or uneven_struct_types(typed):
                    as_json.add(name)
        fields.append(pa.field(name, pa.string() if name in as_json else data_type))
    return pa.schema(fields), as_json


def _conform(path: Path, part_json: set[str], schema: Any, as_json: set[str]) -> Path:
    """The part at ``path`` in ``schema`` (the same file when it already is); raises _CastFailed naming a column
    whose values the unified type cannot hold."""
    import pyarrow as pa

    table = _read(path)
    if table.schema.equals(schema) and not (as_json - part_json) & set(table.column_names):
        return path
    columns = []
    for f in schema:
        if f.name not in table.column_names:
            columns.append(pa.nulls(len(table), f.type))
            continue
        column = table.column(f.name)
        if f.name in as_json and f.name not in part_json:  # typed here, JSON text where the parts disagree
            columns.append(json_text(column.to_pylist()))
            continue
        try:
            columns.append(column.cast(f.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OverflowError):
            raise _CastFailed(f.name) from None
    out = path.with_name(path.name.replace("raw-", "part-"))
    _write(out, pa.table(columns, schema=schema))
    return out
