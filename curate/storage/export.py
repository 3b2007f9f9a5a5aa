"""Export: the pool (or a selection) with its derived columns, as a ``datasets.Dataset``, training records, or files."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from curate.errors import ExportFormatError, OptionError, OutPathError, WorkspaceError, python_and_cli
from curate.pools import FORMATS, RESERVED
from curate.quiet import quiet_datasets
from curate.storage.columns import column_names
from curate.storage.damage import DamagedFileError
from curate.storage.files import (
    arrow_schema,
    prepare_output,
    remove,
    remove_stale_leftovers,
    writing,
)
from curate.storage.outputs import check_outside_workspace, open_through, write_all, written_through
from curate.storage.pool import json_text_columns, selection_positions
from curate.storage.write_errors import check_parent_folders

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any


def to_dataset(ws: Workspace, columns: str | list[str] | None = None, selection: str | None = None):
    """The pool with derived columns joined on (all by default, refused while one is damaged; one name or a list),
    optionally only a selection's rows. A per-turn score (a column with a reducer) is its row's number, as
    ``ws.row_values`` and the selections read it, with the per-turn list beside it as ``<name>_turns``."""
    import datasets

    ds = ws.pool
    columns = column_names(columns)
    if columns is None and (damaged := [d for d in ws.damaged if d.kind == "column"]):  # not left out unsaid
        raise DamagedFileError(damaged[0], f"; or name the columns to export: "
                                           f"{python_and_cli('columns=[...]', '--column NAME, repeated')}")
    # selection_score (not a stored column): exported when named, so a selection's export keeps the pool's schema
    names = list(ws.columns) if columns is None else [c for c in columns if c != SELECTION_SCORE or ws.has_column(c)]
    score_named = columns is not None and len(names) < len(columns)
    if score_named and selection is None:
        raise OptionError(f"column {SELECTION_SCORE!r}: the score a selection ranked its rows by; export a "
                          f"selection with it ({python_and_cli('selection=NAME', '--selection NAME')})")
    if selection is not None:
        ids, positions = selection_positions(ws, selection)
        # Flattened into datasets' session temp folder: by default datasets caches a selection's rows beside the
        # source files, i.e. inside the workspace's pool folder, a copy per export that nothing removed.
        from datasets.fingerprint import get_temporary_cache_files_directory

        with quiet_datasets():
            ds = ds.select(positions).flatten_indices(cache_file_name=os.path.join(
                get_temporary_cache_files_directory(), f"curate-selection-{uuid.uuid4().hex}.arrow"))
    else:
        ids = ws.ids
    per_turn = {name: f"{name}_turns" for name in names if ws.has_column(name) and turns_reduced(ws, name)}
    if clash := next((n for n in per_turn.values() if n in names and ws.has_column(n)), None):
        raise WorkspaceError(f"{ws.path}: column {clash!r}: an export writes column {clash[:-6]!r}'s per-turn "
                             f"values under that name; rename the column, or name the columns to export: "
                             f"{python_and_cli('columns=[...]', '--column NAME, repeated')}")
    with quiet_datasets():
        for name in names:
            if name in RESERVED or not ws.has_column(name) and name in ds.column_names:
                continue  # a pool field asked for by name (e.g. into a training format): it is there already
            if name not in per_turn:
                ds = _added(ds, name, ws.column(name, ids), _feature(ws, name))
                continue
            # the row's number (what a selection sorts by, ws.row_values) under the column's name; the stored
            # per-turn list beside it as <name>_turns (a one-element list for a single-turn row)
            ds = _added(ds, name, ws.row_values(name, ids), datasets.Value("float64"))
            ds = _added(ds, per_turn[name], ws.column(name, ids), _feature(ws, name, per_turn[name]))
        if score_named:
            ds = _added(ds, SELECTION_SCORE, ws.selection(selection).kept_scores(), datasets.Value("float64"))
    # a fingerprint of our own: without one, datasets hashes the whole table (a copy of the pool in memory)
    return datasets.Dataset(ds.data.table, fingerprint=uuid.uuid4().hex) if selection is None else ds


def turns_reduced(ws: Workspace, name: str) -> bool:
    """Derived column ``name`` holds a list of values per row (one a turn) that its declared reducer makes one
    number of (a judge's or scorer's score, a signal): exported as that number, the list as ``<name>_turns``."""
    provenance = ws.column_provenance(name)
    return provenance.get("granularity") == "turn" and provenance.get("reducer") is not None


def _added(ds, name: str, values: list[Any], feature):
    """``ds`` with column ``name``; a pool-file field of that name is kept as original_<name> (or
    original_original_<name>, when the pool has that too): the derived column, what the selection used, keeps it."""
    if name in ds.column_names:
        kept = f"original_{name}"
        while kept in ds.column_names:
            kept = f"original_{kept}"
        ds = ds.rename_column(name, kept)
    return ds.add_column(name, values, feature=feature)


def _feature(ws: Workspace, name: str, as_name: str | None = None):
    """The datasets feature of a derived column's stored type (None: infer it from the rows, as for a column
    stored before its type was declared), so a selection exports the schema the whole pool does."""
    import datasets
    import pyarrow as pa

    stored = arrow_schema(ws._column_path(name)).field("value").type
    if pa.types.is_null(stored):
        return None
    as_name = as_name or name
    return datasets.Features.from_arrow_schema(pa.schema([pa.field(as_name, stored)]))[as_name]


SELECTION_SCORE = "selection_score"  # an exported selection's ranking score (DEITA: the multi-turn sort key)
DATASETS_FOLDER_FILES = re.compile(r"(data-\d+-of-\d+\.arrow|dataset_info\.json|state\.json)")


EXPORT_SUFFIXES = ("", ".jsonl", ".json", ".parquet")
EXPORT_CHOICES = ("export to .jsonl or .json (both JSON Lines, one record a line, as datasets' to_json writes "
                  ".json), .parquet, or a folder (no suffix) for a datasets folder")


def check_export_target(ws: Workspace, out: Path) -> None:
    """Refuse an export that would write over the workspace itself, or replace a folder holding other files than
    an earlier datasets export (``save_to_disk`` deletes what is in its folder)."""
    check_outside_workspace(ws, out, "an export")
    if out.suffix.lower() not in EXPORT_SUFFIXES:
        raise OutPathError(f"{out}: {EXPORT_CHOICES}")
    check_export_path(out)


def check_export_path(out: Path) -> None:
    """Refuse an export path an export could not write, or would write over files that are not an earlier export:
    a folder holding other files (``save_to_disk`` deletes what is in its folder), a folder where a file goes."""
    check_parent_folders(out)
    if out.suffix == "" and out.is_dir() and any(not DATASETS_FOLDER_FILES.fullmatch(p.name) for p in out.iterdir()):
        raise OutPathError(f"{out}: a folder holding other files than a datasets export; a datasets folder export "
                           "replaces its folder whole: name a new or empty folder")
    if out.suffix and out.is_dir():
        raise OutPathError(f"{out}: a folder, where a file is to be written")


def check_run_folder(out: Path, outputs: list[str]) -> None:
    """Refuse an ``out`` where `curate run` would replace files it did not write: its ``outputs`` (selected.jsonl,
    report.html ...) in a folder that holds no run (``out/workspace``), or a workspace given as ``out`` (the run
    makes its own inside). Other files of a folder are left alone."""
    check_parent_folders(out)
    if out.exists() and not out.is_dir():
        raise OutPathError(f"{out}: a file, where the run's folder goes")
    if not out.is_dir() or (out / "workspace").is_dir():  # new, or an earlier run's (or one killed as it began)
        return
    if (out / "manifest.json").is_file():
        raise OutPathError(f"{out}: {python_and_cli('out=', '--out')} is a workspace; the run makes its own "
                           "(out/workspace): give another folder")
    theirs = [name for name in outputs if (out / name).is_file()]
    if theirs:
        them = "it" if len(theirs) == 1 else "them"
        raise OutPathError(f"{out}: {python_and_cli('out=', '--out')} holds {', '.join(theirs)}, which no curate "
                           f"run wrote there (it holds no workspace/); the run would write over {them}: move {them}, "
                           "or give another folder")


def in_format(ds, fmt: str, keep: list[str], turn_fields: set[str] | None = frozenset()):
    """``ds`` (rows with ``id`` and ``conversation``) as records of shape ``fmt`` (``curate.pools.formats``:
    messages, sharegpt, alpaca, prompt_completion, qa), each with its ``id`` and the derived columns ``keep``; an
    error naming the rows a shape cannot hold, never a row dropped or cut (``turn_fields``: the pool fields chat
    rows were read from besides the default names, e.g. a ``--mapping``'s; None: no source's turns had keys the
    records would drop, nothing to check)."""
    import datasets

    from curate.pools.formats import TURN_FIELDS, from_conversation, shape_problem, turn_keys_not_kept

    ids, conversations = ds["id"], ds["conversation"]
    checked = set() if turn_fields is None else {*TURN_FIELDS.values(), *turn_fields}
    columns = [ds[name] for name in ds.column_names if name in checked]  # each row once, the first named first
    lost = [(rid, sorted(keys)) for rid, shape, *turns in zip(ids, ds["format"], *columns, strict=True)
            if shape in TURN_FIELDS and (keys := set().union(*map(turn_keys_not_kept, turns)))]
    if lost:  # a ShareGPT turn's weight 0 would train in the record
        raise ExportFormatError(f"{len(lost):,} of {len(ids):,} rows have turns with keys a {fmt} record of their "
                                f"conversation would drop (row {lost[0][0]}: {', '.join(lost[0][1])}); export without "
                                f"{python_and_cli('format=', '--format')} to keep the source's own field, or leave "
                                "those rows out")
    problems = [(rid, p) for rid, c in zip(ids, conversations, strict=True) if (p := shape_problem(c, fmt))]
    if problems:
        raise ExportFormatError(f"{len(problems):,} of {len(ids):,} rows cannot be written as {fmt}: row "
                                f"{problems[0][0]}: {problems[0][1]}")
    records = [from_conversation(c, fmt) for c in conversations]
    fields = list(dict.fromkeys(k for r in records for k in r))
    partial = [k for k in fields if sum(k in r for r in records) < len(records)]
    if partial:  # a reply some rows lack: a null field reads back as an empty reply, not as no reply
        missing = next(rid for rid, r in zip(ids, records, strict=True) if partial[0] not in r)
        raise ExportFormatError(f"{sum(partial[0] not in r for r in records):,} of {len(ids):,} rows have no reply "
                                f"(first: {missing}): a {fmt} file cannot tell them from empty replies; export the "
                                "rows with replies, or as messages or sharegpt")
    clash = [name for name in keep if name in fields]
    if clash:  # the column's values took the record's field's place, a training field turned into other data
        raise ExportFormatError(f"column {clash[0]!r}: {fmt} records have a field {clash[0]!r} of their own, which it "
                                f"would replace; export it without {python_and_cli('format=', '--format')}, or keep "
                                "other columns beside the records")
    return datasets.Dataset.from_dict({"id": ids, **{k: [r[k] for r in records] for k in fields},
                                       **{name: ds[name] for name in keep}})


def export_rows(ws: Workspace, selection: str | None = None, columns: str | list[str] | None = None,
                format: str | None = None):
    """The rows :func:`export` writes, as a ``datasets.Dataset``."""
    columns = column_names(columns)
    if format is not None and format not in FORMATS:
        raise OptionError(f"export format {format!r}: one of {', '.join(FORMATS)}")
    if format is not None and (own := [c for c in columns or [] if c in RESERVED and c != "id"]):  # dropped in silence
        raise ExportFormatError(f"column {own[0]!r}: curate's own (every record has its id; the conversation is the "
                                f"record; format is the shape it was read as); a pool field of that name is kept as "
                                f"original_{own[0]}")
    ds = ws.to_dataset(columns=[] if format is not None and columns is None else columns, selection=selection)
    if format is None:
        return ds
    sources = ws.manifest["sources"]
    # a load counts its turn keys: none anywhere, no turn field is read (a load before the count is checked)
    turn_fields = (None if all(s.get("turn_keys_not_kept") == {} for s in sources)
                   else {f for s in sources for f in (s.get("turn_fields") or {}).values()})
    keep = [k for c in columns or [] for k in ((c, f"{c}_turns") if ws.has_column(c) and turns_reduced(ws, c) else (c,))]
    return in_format(ds, format, keep, turn_fields)


def json_fields(ws: Workspace, ds, format: str | None, columns: list[str] | None = None) -> list[str]:
    """The pool fields of exported rows ``ds`` held as JSON text (their values mix types), which a JSON Lines export
    writes as the values themselves; a derived column of the same name is exported under it, and is not one. With
    a ``format``, those of the ``columns`` kept beside its records (the records' own fields are never JSON text)."""
    exported = set(ds.column_names) if format is None else set(columns or []) & set(ds.column_names)
    return sorted(json_text_columns(ws) & exported - set(ws.columns))


def write_jsonl(ds, target: Any, fields: list[str]) -> None:
    """Rows ``ds`` as JSON Lines into ``target`` (a path or a binary file), the JSON text of ``fields`` decoded.
    Floats are written as they are held (orjson: the shortest text that reads back the same double), not rounded to
    10 decimals as ``Dataset.to_json`` (pandas) writes them: 3e-12 stayed 3e-12, not 0.0."""
    import orjson

    with open(target, "wb") if isinstance(target, str) else contextlib.nullcontext(target) as fh:
        for batch in ds.with_format("arrow").iter(batch_size=JSONL_BATCH_ROWS):
            lines = []
            for row in batch.to_pylist():
                for name in fields:
                    row[name] = None if row[name] is None else _json_value(row, name)
                try:
                    lines.append(orjson.dumps(row, default=str, option=orjson.OPT_NON_STR_KEYS))
                except TypeError:  # an integer beyond 64 bits (held as JSON text), which orjson cannot write
                    lines.append(_dumps_big_ints(row))
            write_all(fh, b"\n".join(lines) + b"\n" if lines else b"")


JSONL_BATCH_ROWS = 10_000  # rows decoded at a time by write_jsonl


def _dumps_big_ints(row: dict[str, Any]) -> bytes:
    """``row`` as orjson writes it (NaN as null, dates as ISO text), its integers beyond 64 bits put back in as
    their digits where orjson held a marker string."""
    import orjson

    marker, digits = f"curate-big-int-{uuid.uuid4().hex}-", []

    def swap(value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**64:
            digits.append(str(value))
            return f"{marker}{len(digits) - 1}"
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        return [swap(v) for v in value] if isinstance(value, list) else value

    text = orjson.dumps(swap(row), default=str, option=orjson.OPT_NON_STR_KEYS)
    for k, number in enumerate(digits):
        text = text.replace(orjson.dumps(f"{marker}{k}"), number.encode(), 1)
    return text


def _json_value(row: dict[str, Any], name: str) -> Any:
    try:
        return json.loads(row[name])
    except json.JSONDecodeError:  # a workspace whose later load added plain text beside JSON text (before curate
        # conformed loads): the value cannot be told apart, so it is named rather than written either way
        raise WorkspaceError(f"row {row.get('id')}: field {name!r} holds {row[name][:60]!r}, not the JSON text the "
                             "field's other values are; load the source into a new workspace, or export to .parquet, "
                             "which keeps the text") from None


def export(ws: Workspace, out: str | os.PathLike, selection: str | None = None,
           columns: str | list[str] | None = None, format: str | None = None) -> Path:
    """Write rows (a selection's, or all) to .jsonl or .json (both JSON Lines: one record a line, as ``datasets``
    writes .json), .parquet, or a datasets folder (no suffix). Each is written beside ``out`` and renamed into
    place, so a failed export leaves an earlier one whole; a link is followed (its target replaced, the link kept),
    a pipe or a device written through (JSON Lines, without a suffix). ``format``: the rows as training records of
    that shape (:func:`in_format`), with only the derived ``columns`` asked for. ``"-"`` is refused: it is the
    command line's standard output (`curate export --out -`), and a Python caller wants the rows as data."""
    if str(out) == "-":  # Path("-") named a datasets folder "./-"; printing rows is for the command line, not here
        raise WorkspaceError("out='-' is the command line's standard output (curate export --out -); in Python take "
                             "the rows as data with ws.to_dataset(selection=...), or write a file (out='rows.jsonl'; "
                             "'/dev/stdout' for a script's output)")
    out = Path(out)
    check_export_target(ws, out)
    columns = column_names(columns)
    ds = export_rows(ws, selection, columns, format)
    _commit([staged] if (staged := _stage(ws, ds, out, format, columns)) else [])
    return out


def export_together(ws: Workspace, outs: list[Path], selection: str | None = None) -> list[Path]:
    """One selection as several exports (``curate run``'s selected.jsonl, .parquet and folder): all are written
    first, then renamed into place back to back, so a run stopped while writing leaves the earlier set whole; one by
    one, a killed run left the new selection's .jsonl beside the old .parquet."""
    for out in outs:
        check_export_target(ws, out)
    ds = export_rows(ws, selection, None, None)
    staged: list[tuple[Path, Path]] = []
    try:
        for out in outs:
            if (done := _stage(ws, ds, out, None)) is not None:
                staged.append(done)
    except BaseException:
        for tmp, _ in staged:
            remove(tmp)
        raise
    _commit(staged)
    return outs


def _stage(ws: Workspace, ds, out: Path, format: str | None,
           columns: list[str] | None = None) -> tuple[Path, Path] | None:
    """Write ``ds`` as ``out`` beside the path it names (a link's target) and return (temporary, target) to rename
    into place; None when written through (a pipe, a device, or a link to one: /dev/null, /dev/stdout). Through one
    of those, no suffix means JSON Lines, as ``--out -`` writes: a datasets folder cannot be made there."""
    suffix = out.suffix.lower()
    if written_through(out):  # nothing to write beside it (nor rename over it)
        suffix = suffix or ".jsonl"
        if suffix not in (".jsonl", ".json", ".parquet"):
            raise OutPathError(f"{out}: {EXPORT_CHOICES}")
        with writing(out), quiet_datasets(), open_through(out) as fh:
            if suffix == ".parquet":  # Arrow's own file writer cannot seek in a pipe
                ds.to_parquet(fh)
            else:
                write_jsonl(ds, fh, json_fields(ws, ds, format, columns))
        return None
    target = Path(os.path.realpath(out)) if out.is_symlink() else out
    prepare_output(target)
    remove_stale_leftovers(target)
    fields = json_fields(ws, ds, format, columns) if suffix else None
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
    with writing(out, tmp), quiet_datasets():
        _write(ds, tmp, suffix, fields)
        if target.is_file():  # the file it replaces keeps its permissions (a 0600 export stays 0600)
            shutil.copymode(target, tmp)
    return tmp, target


def _commit(staged: list[tuple[Path, Path]]) -> None:
    """Rename each staged export into place, back to back; on an error the temporaries not yet renamed go."""
    try:
        for tmp, target in staged:
            replace_into_place(tmp, target)
    except BaseException:
        for tmp, _ in staged:
            remove(tmp)
        raise


def replace_into_place(new: Path, out: Path) -> None:
    """Rename ``new`` (a file, or a datasets folder) to ``out``; an earlier folder ``out`` (an earlier datasets export,
    see check_export_target) is moved aside first, then dropped."""
    old = out.with_name(f".{out.name}.{uuid.uuid4().hex}.old")
    if out.is_dir():
        os.replace(out, old)
    os.replace(new, out)
    remove(old)


def _write(ds, out: Path, suffix: str, fields: list[str] | None = None) -> Path:
    if suffix in (".jsonl", ".json"):
        write_jsonl(ds, str(out), fields or [])
    elif suffix == ".parquet":
        write_parquet(ds, out)
    elif suffix == "":
        ds.save_to_disk(str(out))
    else:
        raise OutPathError(f"{out}: {EXPORT_CHOICES}")
    return out


def write_parquet(ds, out: Path, rows_per_group: int = 10_000) -> None:
    """``ds`` as Parquet, Arrow batches into pyarrow's own file writer. Not ``Dataset.to_parquet``: that writes
    through a Python file object, so a Ctrl-C inside Arrow's writer aborted the process (SIGABRT, a stray temporary
    file); here it is an ordinary KeyboardInterrupt between batches. ``out``: a regular file (Arrow seeks in it)."""
    import pyarrow.parquet as pq

    schema = ds.features.arrow_schema  # with datasets' metadata, as to_parquet writes it
    with pq.ParquetWriter(str(out), schema) as writer:
        for batch in ds.with_format("arrow").iter(batch_size=rows_per_group):
            writer.write_table(batch.cast(schema) if batch.schema != schema else batch)

