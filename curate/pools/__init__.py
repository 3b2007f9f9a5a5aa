"""Pools: read instruction data in its common shapes and normalise every row to a conversation.

Every row becomes ``{"id", "conversation": [{"role", "content"}, ...], "format", ...original columns}``.

- :mod:`curate.pools.readers`: a source's records with their location (file:line), for clean errors;
- :mod:`curate.pools.formats`: the shape of a record and its conversation;
- :mod:`curate.pools.table`: the rows as an Arrow table (columns Arrow cannot type kept as JSON text).

The ground floor: this package imports nothing of curate but ``curate.errors``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from curate.defaults import POOL
from curate.errors import InputError, OptionError, python_and_cli
from curate.pools.formats import (
    FORMATS,
    RESERVED,
    _RowError,
    check_mapping,
    detect_format,
    exported_format,
    stored_name,
    to_conversation,
    turn_fields,
)
from curate.pools.readers import memory_records, record_text, records
from curate.pools.shards import shard_paths
from curate.pools.staging import PART_ROWS, PoolWriter, StagedPool, reject_line, reply_state
from curate.pools.table import MAX_STORED_NESTING, to_table

if TYPE_CHECKING:
    import datasets

__all__ = ["FORMATS", "MAX_STORED_NESTING", "REJECT_RAW_MAX_CHARS", "ReadResult", "Reject",
           "RowStream", "SAMPLE", "StagedPool", "assign_ids", "check_read_options", "detect_format", "load", "read", "require_rows", "resolve_source", "row_id", "stage", "to_conversation",
           "to_table", "write_rejects"]

REJECT_RAW_MAX_CHARS = 2_000  # a reject keeps at most this much of its raw record
REJECTS_SHOWN = 3  # rejects named in load()'s warning when it writes no rejects file

OnError = Literal["raise", "skip"]
SAMPLE = Path(__file__).parents[1] / "data" / "sample.jsonl"  # the small hand-written pool that ships with curate


def resolve_source(source: str | os.PathLike) -> str:
    """``"sample"`` names the bundled sample (:data:`SAMPLE`) unless a file or folder of that name is here; ``~`` a
    home folder, as a shell expands it (the Python API gets the path unexpanded)."""
    if str(source) == "sample" and not os.path.exists("sample"):
        return str(SAMPLE)
    return os.path.expanduser(source) if str(source).startswith("~") else str(source)


@dataclass
class Reject:
    """One input record that was left out, and why."""

    path: str
    location: str
    reason: str
    raw: str = ""

    def __str__(self) -> str:
        return f"{self.location}: {self.reason}"


@dataclass
class ReadResult:
    """Rows normalised from one source, plus what was rejected."""

    source: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    turn_fields: dict[str, str] = field(default_factory=turn_fields)  # chat shape -> its turns' field (a mapping's)

    @property
    def formats(self) -> Counter:
        return Counter(r["format"] for r in self.rows)

    @property
    def empty_responses(self) -> int:
        """Rows loaded whose assistant turn is empty (kept: their instruction is still data; judges see it)."""
        return sum(reply_state(r["conversation"])[0] for r in self.rows)

    @property
    def instruction_only(self) -> int:
        """Rows loaded without any assistant turn (no response field): scorers and judges that read a response
        record a failure for them, complexity is scored from the instruction."""
        return sum(reply_state(r["conversation"])[1] for r in self.rows)


@dataclass
class RowStream:
    """A source read elsewhere (by Ray tasks): its rows in source order, produced as they are consumed (an id is
    given to each row without one, as :func:`assign_ids` does), its rejects, and the field each chat shape's turns
    were read from (:func:`curate.pools.formats.turn_fields` of the read's mapping). ``Workspace.load`` stages it."""

    source: str
    rows: Iterable[dict[str, Any]]
    rejects: list[Reject] = field(default_factory=list)
    turn_fields: dict[str, str] = field(default_factory=turn_fields)


def check_read_options(format: str = POOL.format, mapping: dict[str, str] | None = None, on_error: str = POOL.on_error) -> None:
    """Refuse options :func:`read` could not use (a run checks them before it starts)."""
    if format != "auto" and format not in FORMATS:
        raise OptionError(f"{python_and_cli('format=', '--format')} must be 'auto' or one of {FORMATS}, not {format!r}")
    if on_error not in ("raise", "skip", None):  # None: rows read already, nothing to read (run_on_error)
        raise OptionError(f"{python_and_cli('on_error=', '--on-error')} must be 'raise' or 'skip', not {on_error!r}")
    check_mapping(mapping)


def check_no_read_options(source: Any, **options: Any) -> None:
    """Refuse reading options given with rows read already (a ``ReadResult``, a ``RowStream``): they act when a
    source is read, so they would change nothing (``ws.load(pools.read(...), mapping=...)`` dropped the mapping)."""
    defaults = {"format": POOL.format, "mapping": None, "on_error": POOL.on_error, "max_field_chars": None}
    given = [name for name, value in options.items() if value is not None and value != defaults[name]]
    if given:
        raise OptionError(f"load: {', '.join(given)} apply when a source is read, and {type(source).__name__} "
                          "rows were read already: give them to curate.pools.read(...), or load the path itself")


def run_on_error(on_error: str | None, mapping: dict[str, str] | None, source: Any = None) -> str | None:
    """What ``curate run`` does with a record that does not read: ``on_error`` when given; else ``raise`` with a
    ``mapping``, as ``curate load`` does (the mapping names the fields, so records without them say the mapping is
    wrong: a run left 35 of 51 rows out and selected from the rest), and ``skip`` without one (a malformed record
    among many is left out and listed in ``rejects.jsonl``)."""
    if isinstance(source, ReadResult | RowStream):  # read already: nothing left to decide (None: not given)
        return on_error
    return on_error if on_error is not None else "raise" if mapping else "skip"


def read(source: str | os.PathLike | Any, *, format: str = POOL.format, mapping: dict[str, str] | None = None,
         on_error: OnError = POOL.on_error, max_field_chars: int = POOL.max_field_chars) -> ReadResult:
    """Read and normalise every record of ``source`` (``"sample"``: the bundled sample; a folder or glob pattern
    of data files: each in path order, :func:`curate.pools.shards.shard_paths`; or a pool in memory: a
    ``datasets.Dataset``, a pandas ``DataFrame`` or a list of dicts); bad records raise or are collected as rejects.
    Holds every row in memory: :func:`stage` writes a large source to disk part by part instead."""
    name, items = normalised(source, format=format, mapping=mapping, on_error=on_error,
                             max_field_chars=max_field_chars)
    result = ReadResult(source=name, turn_fields=turn_fields(mapping))
    for item in items:
        (result.rejects if isinstance(item, Reject) else result.rows).append(item)
    return result


def normalised(source: str | os.PathLike | Any, *, format: str = POOL.format, mapping: dict[str, str] | None = None,
               on_error: OnError = POOL.on_error, max_field_chars: int = POOL.max_field_chars
               ) -> tuple[str, Iterator[dict[str, Any] | Reject]]:
    """``source``'s name and, lazily in source order, each record normalised to a row (without ``id``) or,
    with ``on_error="skip"``, a :class:`Reject`: what :func:`read` collects and :func:`stage` writes part by part."""
    check_read_options(format, mapping, on_error)
    mapping = dict(mapping) if mapping is not None else None  # any Mapping (a read-only config's) as a dict
    in_memory = memory_records(source)
    if in_memory is not None:
        name, items = in_memory
        return name, _normalise(name, items, format, mapping, on_error, max_field_chars, in_memory=True)
    name = resolve_source(source)
    if not name.strip():  # '' read as the current folder, whose files (a workspace's manifest) became shards
        raise InputError(repr(name), "file", "an empty source name: give a file, a folder, a glob or a Hub dataset")
    shards = shard_paths(name)
    if shards != [name]:  # a folder or glob of data files (or a path spelt another way): each shard in turn
        return name, itertools.chain.from_iterable(
            _normalise(shard, records(shard), format, mapping, on_error, max_field_chars) for shard in shards)
    return name, _normalise(name, records(name), format, mapping, on_error, max_field_chars)


_NO_KEY = object()  # no field name is this
_JSON_KINDS = ((bool, "true/false"), (int | float, "a number"), (str, "a string"), (list, "an array"))


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words (a source's line ``[...]`` is an array, not a Python list)."""
    if value is None:
        return "null"
    return next((name for kind, name in _JSON_KINDS if isinstance(value, kind)), type(value).__name__)


def _normalise(source: str, items: Iterable, format: str, mapping: dict[str, str] | None, on_error: OnError,
               max_field_chars: int, in_memory: bool = False) -> Iterator[dict[str, Any] | Reject]:
    seen = 0
    for location, rec, raw in items:
        seen += 1
        try:
            if isinstance(rec, _RowError):
                raise rec
            if not isinstance(rec, dict):
                raise _RowError(f"expected a record (a dict), got {type(rec).__name__}" if in_memory else
                                f"expected a JSON object, got {_json_kind(rec)}")
            # one pass over the names: a frame read with header=None names fields 0, 1, ...; Arrow cannot name a
            # column with a NUL (the whole load failed)
            if (bad := next((k for k in rec if not isinstance(k, str) or "\x00" in k), _NO_KEY)) is not _NO_KEY:
                raise _RowError(f"field name {bad!r} ({type(bad).__name__}) is not text: name the columns"
                                if not isinstance(bad, str) else f"field name {bad!r} contains a NUL byte")
            exported = exported_format(rec) if format == "auto" else None
            if exported:  # curate's own export: its conversation, under the shape it was first read as
                conversation = to_conversation(rec, "messages", {"messages": "conversation"}, max_field_chars)
                rec = {k: v for k, v in rec.items() if k not in RESERVED}
            if clash := next((k for k in RESERVED if k in rec and f"original_{k}" in rec), None):
                raise _RowError(f"fields {clash!r} and 'original_{clash}': a source's {clash} is kept as "
                                f"original_{clash}, which the record holds already; rename one")
            fmt = exported or (format if format != "auto" else detect_format(rec, mapping))
            conversation = conversation if exported else to_conversation(rec, fmt, mapping, max_field_chars)
        except _RowError as exc:
            if on_error == "raise":
                raise InputError(source, location, str(exc)) from None
            yield Reject(source, location, str(exc), _reject_raw(rec, raw))
            continue
        row = {stored_name(k): v for k, v in rec.items()}
        row.update(conversation=conversation, format=fmt)
        yield row
    if not seen:
        if in_memory:
            raise InputError(source, "records", "no records: the pool given in memory is empty")
        raise InputError(source, "file", "no records (it is empty or holds only blank lines)")


def stage(source: str | os.PathLike | Any, folder: str | os.PathLike, *, format: str = POOL.format,
          mapping: dict[str, str] | None = None, on_error: OnError = POOL.on_error,
          max_field_chars: int = POOL.max_field_chars, part_rows: int = PART_ROWS) -> StagedPool:
    """Read ``source`` as :func:`read` does, into Arrow files under ``folder`` (ids assigned as :func:`assign_ids`
    does), holding ``part_rows`` rows in memory at a time; ``Workspace.load`` adds them to a pool."""
    name, items = normalised(source, format=format, mapping=mapping, on_error=on_error,
                             max_field_chars=max_field_chars)
    return stage_rows(name, items, folder, part_rows=part_rows, turn_fields=turn_fields(mapping))


def stage_rows(source: str, items: Iterable[dict[str, Any] | Reject], folder: str | os.PathLike,
               part_rows: int = PART_ROWS, turn_fields: dict[str, str] | None = None) -> StagedPool:
    """Rows (an ``id`` is given to those without one, as :func:`assign_ids` does) and rejects, in order, staged
    under ``folder``."""
    writer, taken = PoolWriter(source, folder, part_rows, turn_fields), set()
    for item in items:
        if isinstance(item, Reject):
            writer.reject(item)
            continue
        if "id" not in item:
            assign_ids([item], taken)
        writer.add(item)
    return writer.finish()


def require_rows(result: ReadResult | StagedPool, on_error: OnError = "skip") -> None:
    """Refuse what was read when there is nothing to curate (no record could be read: the first bad one is named),
    or, with ``on_error="raise"``, when any record was bad (the first, in source order)."""
    if isinstance(result, StagedPool):
        first, rejected, rows = result.first_reject, result.rejects, result.rows_read
    else:
        first, rejected, rows = (result.rejects[0] if result.rejects else None), len(result.rejects), len(result.rows)
    if first is not None and on_error == "raise":
        raise InputError(first.path, first.location, first.reason)
    if not rows:
        if first is None:
            raise InputError(result.source, "file", "no records")
        raise InputError(first.path, first.location, f"{first.reason}; no record of {result.source} could be read "
                         f"({rejected:,} rejected)")


def _reject_raw(record: Any, raw: str | None) -> str:
    """The text a reject keeps: the source line, else the record as JSON; writable as UTF-8, truncated."""
    if raw is None:
        raw = "" if isinstance(record, _RowError) else record_text(record)
    # lone surrogates become their escape, so the rejects file can always be written
    return raw[:REJECT_RAW_MAX_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")


def row_id(conversation: list[dict[str, str]]) -> str:
    """Stable id of a row: a hash of its conversation, the same in every file and run."""
    canonical = json.dumps(conversation, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def assign_ids(rows: Iterable[dict[str, Any]], taken: set[str] | None = None) -> None:
    """Give each row its content hash as ``id``; an exact repeat gets ``<hash>-2``, ``-3``, ..."""
    seen: set[str] = set() if taken is None else taken
    for row in rows:
        base = row_id(row["conversation"])
        rid, k = base, 1
        while rid in seen:
            k += 1
            rid = f"{base}-{k}"
        seen.add(rid)
        row["id"] = rid


def write_rejects(rejects: list[Reject], path: str | os.PathLike) -> None:
    """Write rejects as JSON Lines: path, location (line/row), reason, raw record (``Workspace.load`` appends the
    new ones to ``WORKSPACE/rejects.jsonl``)."""
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(reject_line(r) for r in rejects)


def load(source: str | os.PathLike | Any, *, format: str = POOL.format, mapping: dict[str, str] | None = None,
         on_error: OnError = POOL.on_error, rejects_path: str | os.PathLike | None = None,
         max_field_chars: int = POOL.max_field_chars) -> datasets.Dataset:
    """Load a pool as a ``datasets.Dataset`` with ``id``, ``conversation``, ``format`` and the original columns.

    ``source``: a .jsonl/.json/.parquet/.csv file, a folder or glob of them, a ``save_to_disk`` folder, a Hub
    dataset name, ``"sample"``, or a pool in memory (a ``datasets.Dataset``, a pandas ``DataFrame``, a list of dicts).
    ``format``: ``auto`` (per record) or one of ``alpaca, sharegpt, messages, prompt_completion, qa``.
    ``mapping``: the shape's field -> your column, e.g. ``{"instruction": "query", "output": "reply"}``.
    ``on_error="skip"`` leaves bad records out with a warning; they are written to ``rejects_path`` only when
    one is given (nothing is written otherwise). ``pools.read`` returns them as ``Reject`` objects.
    The dataset is held in memory as Arrow columns. The source is read part by part (:func:`stage`) into a temporary
    folder (``TMPDIR``; removed after), so the read holds one part's rows as Python objects, not the pool's.
    """
    import shutil
    import tempfile
    import uuid

    import datasets
    import pyarrow as pa

    with tempfile.TemporaryDirectory(prefix="curate-load-") as folder:
        staged = stage(source, folder, format=format, mapping=mapping, on_error=on_error,
                       max_field_chars=max_field_chars)
        if staged.rejects:
            with open(staged.rejects_file, encoding="utf-8") as fh:
                shown = [Reject(**json.loads(line)) for line in itertools.islice(fh, REJECTS_SHOWN)]
            if rejects_path is not None:
                shutil.copyfile(staged.rejects_file, rejects_path)
                where = f"reasons in {rejects_path}"
            else:
                where = (f"{'; '.join(map(str, shown))}{'; ...' if staged.rejects > REJECTS_SHOWN else ''} "
                         "(pass rejects_path= to write them all, or use curate.pools.read for the records)")
            warnings.warn(f"{staged.rejects} record(s) of {staged.source} left out: {where}", stacklevel=2)
        if not staged.rows_read:
            raise InputError(staged.source, "file", "no usable records")
        table = pa.concat_tables(staged.tables(in_memory=True))
    # a fingerprint of our own: without one, datasets hashes the whole table (a pickled copy of the pool in memory)
    return datasets.Dataset(table, fingerprint=uuid.uuid4().hex)
