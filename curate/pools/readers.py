"""Readers: iterate over a source's records, each with its location (``line 7``, ``record 3``, ``row 12``).

JSON Lines and JSON arrays are parsed here line by line (not by ``datasets``' JSON builder) because the
contract is an error naming the file and the line, or a reject listing it; ``datasets``' loader can do
neither. Parquet, ``save_to_disk`` folders and Hub names go through ``datasets``; CSV/TSV through pandas,
with one pass of the csv module to name each record's line (pandas counts rows).

Each item is ``(location, record or _RowError, raw text or None)``: a record that cannot be parsed is
replaced by the _RowError saying why, and the raw source text comes along for the rejects file.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from curate.errors import InputError
from curate.pools.csv_reader import read_csv
from curate.pools.formats import _RowError, detect_format, exported_format

_UTF8_BOM = codecs.BOM_UTF8
# A lone surrogate can only come from a JSON escape (raw UTF-8 cannot encode one); lines without one skip the check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Tokens of JSON text, to find the line of a problem the parser reports without a position.
_JSON_TOKEN = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|[\[{]|[\]}]|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\n')

# One record from a source: its location, the parsed record or the _RowError that replaced it, and the
# raw source text of the record when the source has one (JSON Lines), for the rejects file.
_Item = tuple[str, Any, str | None]


def _lone_surrogate(record: Any) -> _RowError | None:
    """A row error naming the field that holds a lone surrogate (``"\\ud800"`` escaped in JSON), if any.

    Such a string is not Unicode text: it cannot be hashed, stored by Arrow or written as UTF-8. The
    record is rejected rather than loaded with U+FFFD in its place, which would silently change the
    data (and its id); the reject names the field so the source can be fixed.
    """
    if not isinstance(record, dict):
        return None
    for key, value in record.items():
        try:
            json.dumps({key: value}, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError:
            return _RowError(f"field {key!r} holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
                             "which is not valid Unicode text")
    return None


def _too_deep() -> str:
    return f"JSON nested too deeply to read (more levels than Python's recursion limit of {sys.getrecursionlimit():,})"


def _too_long(exc: ValueError) -> str:
    # json.loads raises a plain ValueError for an integer longer than Python's int-string conversion limit
    return f"unreadable JSON number: {str(exc).split(';')[0]}"


def _parse_json(text: str) -> Any:
    """``json.loads`` whose every failure is a _RowError (too deep, too long a number, malformed, lone surrogate)."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _RowError(f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    except RecursionError:
        raise _RowError(_too_deep()) from None
    except ValueError as exc:
        raise _RowError(_too_long(exc)) from None
    if _SURROGATE_ESCAPE.search(text) and (error := _lone_surrogate(record)) is not None:
        raise error
    return record


def _problem_line(text: str, *, long_digits: int | None = None) -> int:
    """Line of ``text`` holding its deepest nesting, or with ``long_digits`` its first longer integer."""
    line, depth, deepest, deepest_line = 1, 0, 0, 1
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token == "\n":
            line += 1
        elif token in ("[", "{"):
            depth += 1
            if depth > deepest:
                deepest, deepest_line = depth, line
        elif token in ("]", "}"):
            depth -= 1
        elif long_digits is not None and token.isdigit() and len(token) > long_digits:
            return line
    return deepest_line


_JSON_LITERAL = re.compile(r"true|false|null")  # the values _JSON_TOKEN does not match


def _element_lines(text: str) -> list[int]:
    """The line each element of the top-level JSON array in ``text`` starts on."""
    starts, line, depth, pos = [], 1, 0, 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if depth == 1:  # a literal between the last token and this one is an element
            gap = _JSON_LITERAL.search(text, pos, match.start())
            if gap is not None:
                starts.append(line)
        pos = match.end()
        if token == "\n":
            line += 1
        elif token in ("[", "{"):
            if depth == 1:
                starts.append(line)
            depth += 1
        elif token in ("]", "}"):
            depth -= 1
        elif depth == 1:  # a string or a number
            starts.append(line)
    return starts


def _open(path: Path):
    """The file's bytes, gunzipped when it ends in .gz."""
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else open(path, "rb")


def _iter_jsonl(path: Path) -> Iterator[_Item]:
    with _open(path) as fh:
        for lineno, raw in enumerate(fh, start=1):
            location = f"line {lineno}"
            # a BOM on any line: `cat a.jsonl b.jsonl` puts b's at the start of a line mid-file
            bom = len(_UTF8_BOM) if raw.startswith(_UTF8_BOM) else 0
            raw = raw[bom:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (location, _RowError(f"invalid UTF-8 at byte {exc.start + bom}"),
                       raw.decode("utf-8", "backslashreplace").rstrip("\r\n"))
                continue
            if not text.strip():
                continue
            try:  # without its line end: a cut-off record's error names its column, not column 1 after the end
                record = _parse_json(text.rstrip("\r\n"))
            except _RowError as exc:
                record = exc
            yield location, record, text.rstrip("\r\n")


def _iter_json(path: Path) -> Iterator[_Item]:
    with _open(path) as fh:
        data = fh.read()
    bom = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: bom + exc.start].count(b"\n") + 1
        raise InputError(str(path), f"line {line}", f"invalid UTF-8 at byte {bom + exc.start}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # A .json file holding JSON Lines is common; read it as such (a bad line then gets --on-error's treatment,
        # whichever line it is). Only one whose first or second line is a record by itself: an array or a wrapper
        # with a typo was read line by line, its records rejected as "Extra data" and its error put on line 1.
        if _json_lines_inside(text):
            yield from _iter_jsonl(path)
            return
        raise InputError(str(path), f"line {exc.lineno}", f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    # The parser gives no position for these two: find the line.
    except RecursionError:
        raise InputError(str(path), f"line {_problem_line(text)}", _too_deep()) from None
    except ValueError as exc:
        line = _problem_line(text, long_digits=sys.get_int_max_str_digits() or None)
        raise InputError(str(path), f"line {line}", _too_long(exc)) from None
    lines = _element_lines(text) if isinstance(obj, list) else []  # a wrapper's records are located by number alone
    if isinstance(obj, dict) and _is_record(obj):  # one record (e.g. a one-row export), not a wrapper of records
        obj = [obj]
    if isinstance(obj, dict):
        lists = [k for k, v in obj.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(str(path), "top level", "expected a JSON array of records (or an object holding one)")
        obj = obj[lists[0]]
    if not isinstance(obj, list):
        raise InputError(str(path), "top level", f"expected a JSON array of records, got {type(obj).__name__}")
    check_surrogates = _SURROGATE_ESCAPE.search(text) is not None
    located = len(lines) == len(obj) and len(set(lines)) > 1  # on one line, the record number alone says it
    for i, rec in enumerate(obj, start=1):
        where = f"record {i} (line {lines[i - 1]})" if located else f"record {i}"
        error = _lone_surrogate(rec) if check_surrogates else None
        yield (where, rec, None) if error is None else (where, error, record_text(rec))


def _array_inside(path: Path) -> bool:
    """Whether a .jsonl file holds a JSON array (``json.dump(records, f, indent=2)``): it starts with ``[``, and that
    line is no whole JSON value with more lines after it (JSON Lines whose first line is a stray array: that line a
    bad record, the others read). Read as the .json file it is, as a .json file of JSON Lines is read as JSON Lines;
    line by line each of its lines was 'malformed JSON' (line 1: ``[``), or the one line an array of records,
    'expected a JSON object'."""
    with _open(path) as fh:
        lines = (line for line in fh if line.strip())
        first = next(lines, b"").removeprefix(_UTF8_BOM)
        if not first.lstrip().startswith(b"["):
            return False
        if next(lines, None) is None:  # one line: the array
            return True
    try:
        json.loads(first)
    except ValueError:  # "[" alone, or an array over several lines
        return True
    return False


def _json_lines_inside(text: str) -> bool:
    """Whether a .json file's text is JSON Lines: it starts with an object, and its first or second non-blank line
    is a JSON object by itself (a bad first line aside, every line of JSON Lines is)."""
    if not text.lstrip().startswith("{"):
        return False
    # split at "\n" only, as the JSON Lines reader does (splitlines also breaks at U+2028, which JSON holds raw in
    # strings), and only the first lines (not a list of every line of the file)
    for line in text.lstrip().split("\n", 2)[:2]:
        try:
            if isinstance(json.loads(line), dict):
                return True
        except (json.JSONDecodeError, RecursionError, ValueError):
            continue
    return False


def _is_record(obj: dict[str, Any]) -> bool:
    """Whether a JSON object is itself a record: some shape (or curate's own export) reads it."""
    try:
        return exported_format(obj) is not None or bool(detect_format(obj))
    except _RowError:
        return False


def _iter_dataset(ds: Any, lines: list[int] | None = None) -> Iterator[_Item]:
    """Each row of ``ds``, located by its source line when ``lines`` (one per row) is given, else by row number."""
    n = len(ds)
    for start in range(0, n, 4096):
        batch = ds[start : start + 4096]
        keys = list(batch)
        for j in range(len(batch[keys[0]]) if keys else 0):
            where = f"line {lines[start + j]}" if lines is not None else f"row {start + j + 1}"
            yield where, {k: batch[k][j] for k in keys}, None


def _from_numpy(value: Any) -> Any:
    """A DataFrame cell as the JSON-like value it stands for: a frame from ``read_parquet`` or
    ``Dataset.to_pandas()`` holds list fields (a chat's messages) as numpy arrays, nested ones too."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return [_from_numpy(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {k: _from_numpy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_numpy(v) for v in value]
    return value.item() if isinstance(value, np.generic) else value


def memory_records(obj: Any) -> tuple[str, Iterator[_Item]] | None:
    """A pool held in memory (a ``datasets.Dataset``, a pandas ``DataFrame``, a list or any other iterable of
    dicts, e.g. a streaming ``IterableDataset``): a name for it (its kind, size and content fingerprint: what the
    manifest and errors call it) and its records, each located by ``row N``; None for a path."""
    if isinstance(obj, (str, os.PathLike)):
        return None
    kind = f"{type(obj).__module__.split('.')[0]}.{type(obj).__name__}"
    if kind == "datasets.DatasetDict":
        raise InputError(f"<{kind}>", "splits", f"a dataset of splits {list(obj)}: pass one, e.g. ds[{next(iter(obj))!r}]")
    if kind == "datasets.Dataset":
        return f"<datasets.Dataset of {len(obj):,} rows, fingerprint {obj._fingerprint}>", _iter_dataset(obj)
    if kind == "pandas.DataFrame":  # a cell the frame lacks (NaN, from rows without that field) is a missing field
        obj = [{k: _from_numpy(v) for k, v in rec.items()}
               for rec in obj.astype(object).where(obj.notna(), None).to_dict("records")]
    elif isinstance(obj, (list, tuple)):
        kind = "list"
    elif isinstance(obj, Iterable) and not isinstance(obj, (bytes, dict)):  # read once: the pool is read whole anyway
        obj = list(obj)
    else:
        raise InputError(f"<{kind}>", "source", "not a pool: give a path (a file, folder or glob, a Hub name, 'sample') "
                         "or, in memory, a datasets.Dataset, a pandas DataFrame or a list of dicts")
    digest, bad = hashlib.sha256(), {}
    for i, rec in enumerate(obj):
        text = record_text(rec)
        try:
            digest.update(text.encode("utf-8"))
        except UnicodeEncodeError:  # a lone surrogate: rejected as a file's is, not a crash in the id hash
            digest.update(text.encode("utf-8", "backslashreplace"))
            bad[i] = _lone_surrogate(rec)
        digest.update(b"\n")
    name = f"<{kind} of {len(obj):,} record{'' if len(obj) == 1 else 's'}, sha256 {digest.hexdigest()[:16]}>"
    return name, ((f"row {i + 1}", bad.get(i) or rec, None) for i, rec in enumerate(obj))


def _refuse_utf16(source: str, path: Path) -> None:
    """Refuse a text file that starts with a UTF-16 byte-order mark (PowerShell's ``>`` writes one): every line of
    it is invalid UTF-8, and the error said 'invalid UTF-8 at byte 0' of each."""
    try:
        with _open(path) as fh:
            head = fh.read(2)
    except (OSError, EOFError):  # a corrupt gzip stream: the read names it
        return
    if head in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        raise InputError(source, "line 1", "the file is UTF-16 (it starts with a UTF-16 byte-order mark); curate "
                         "reads UTF-8: save it as UTF-8 (e.g. iconv -f UTF-16 -t UTF-8)")


def _iter_parquet(source: str, path: Path, batch_rows: int = 4096) -> Iterator[_Item]:
    """A Parquet file's rows, a batch at a time, located by ``row N``. Read with pyarrow, not ``datasets``: its
    ``from_parquet`` wrote a whole Arrow copy of every file it read into the Hugging Face cache (~/.cache/huggingface/
    datasets: 102 MB for a 6 MB file of 200,000 rows), kept there for good, a new one for each edited file; it said
    'An error occurred while generating the dataset' of a file of 0 rows, and refused a map column."""
    import pyarrow.parquet as pq

    row = 0
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
            for record in batch.to_pylist():
                row += 1
                yield f"row {row}", record, None
    except Exception as exc:  # noqa: BLE001 (not Parquet, cut short, a page that does not decode: pyarrow's words)
        raise InputError(source, f"row {row + 1}" if row else "file", f"cannot read parquet: {exc}") from None


def records(source: str) -> Iterator[_Item]:
    path = Path(source)
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # not a save_to_disk folder
            raise InputError(source, "folder", f"not a datasets folder (save_to_disk): {exc}") from None
        if isinstance(ds, datasets.DatasetDict):  # as in memory: never one split in silence
            raise InputError(source, "splits", f"a datasets folder of splits {list(ds)}: load one split's folder, "
                             f"e.g. {path / next(iter(ds))}")
        yield from _iter_dataset(ds)
        return
    if path.exists():
        gz = path.suffix.lower() == ".gz"
        suffix = (path.with_suffix("").suffix if gz else path.suffix).lower()
        if gz and suffix not in (".jsonl", ".ndjson", ".json"):
            raise InputError(source, "file", f"a gzipped {suffix or 'file'}: gzip is read for .jsonl, .ndjson and "
                                             ".json")
        if suffix in (".jsonl", ".ndjson", ".json", ".csv", ".tsv"):
            _refuse_utf16(source, path)
        if suffix in (".jsonl", ".ndjson", ".json"):
            try:
                yield from (_iter_json(path) if suffix == ".json" or _array_inside(path) else _iter_jsonl(path))
            except (OSError, EOFError) as exc:  # a gzip stream that is corrupt or cut short
                raise InputError(source, "file", f"cannot read it: {exc}") from None
        elif suffix in (".parquet", ".csv", ".tsv"):
            if suffix != ".parquet":
                ds, lines, too_long = read_csv(source, path, suffix)
                bad = [(line, (f"line {line}", _RowError(why), text)) for line, why, text in too_long]
                for row, item in enumerate(_iter_dataset(ds, lines)):
                    while bad and lines is not None and bad[0][0] < lines[row]:  # in the file's order
                        yield bad.pop(0)[1]
                    yield item
                yield from (item for _, item in bad)
                return
            yield from _iter_parquet(source, path)
        else:
            raise InputError(source, "file", f"unknown file type {path.suffix!r}: use .jsonl, .json (either gzipped), "
                                             ".parquet, .csv, or a datasets folder")
        return
    if source.endswith(("/", os.sep)):  # a folder's path, never a Hub id (org/name)
        raise InputError(source, "folder", "no such folder")
    if "/" in source and not source.startswith((".", "/", "~")) and not os.path.splitext(source)[1]:
        import datasets

        try:
            ds = datasets.load_dataset(source, split="train")
        except Exception as exc:
            raise InputError(source, "hub", f"not a local file, and loading it from the Hub failed: {exc}") from None
        yield from _iter_dataset(ds)
        return
    raise InputError(source, "file", "no such file or folder")


def record_text(record: Any) -> str:
    """A parsed record as JSON text, for a reject that has no source line."""
    try:
        return json.dumps(record, ensure_ascii=False, default=str)
    except (ValueError, RecursionError, TypeError):  # circular, too deep, a key that is not text: the reason says
        return ""
