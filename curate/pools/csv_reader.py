"""CSV/TSV sources: read with pandas (text columns stay text), each record located by the line a text editor
shows (one pass of the csv module: pandas counts rows, and a quoted field may span lines)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, NoReturn

from curate.errors import InputError

_PANDAS_ROW = re.compile(r"starting at row (\d+)")
_PANDAS_FIELDS = re.compile(r"fields in line (\d+)")
_PANDAS_FIELDS_SAW = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")
NEWLINE = b"\n"


def _csv_record_lines(path: Path, sep: str) -> list[tuple[int, bool, int]]:
    """(the line it starts on, whether it is blank, its number of fields) for each record of a CSV/TSV file, header
    first (a quoted field may span lines). Read with the csv module because pandas reports rows, not lines."""
    import csv

    starts: list[tuple[int, bool, int]] = []
    with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
        reader = csv.reader(f, delimiter=sep, strict=True)
        previous = 0
        try:
            for record in reader:
                blank = not record or (len(record) == 1 and not record[0].strip())  # pandas skips spaces-only lines
                starts.append((previous + 1, blank, len(record)))
                previous = reader.line_num
        except csv.Error:  # the record that starts after `previous` cannot be read to its end
            starts.append((previous + 1, False, 0))
    return starts


def read_csv(source: str, path: Path, suffix: str) -> tuple[Any, list[int] | None, list[tuple[int, str, str]]]:
    """A CSV/TSV file as a Dataset of text columns, with the source line of each row (None when the csv module
    counts the records differently from pandas), and (line, why, its text) of each record with more or fewer fields
    than the header (left out of the rows, in line order, for the caller to skip or raise on); an unreadable file
    raises ``InputError`` naming the line."""
    import datasets
    import pandas as pd

    sep = "\t" if suffix == ".tsv" else ","
    too_long: list[tuple[int, str, str]] = []
    records = None  # each record's line, blank or not, and fields (the csv module's pass: read once)
    try:
        frame = _read_frame(pd, path, sep)
    except pd.errors.ParserError as exc:
        if not _PANDAS_FIELDS.search(str(exc)):
            _raise_csv_error(source, path, suffix, sep, exc)
        try:  # a record with too many fields: the others are read, it is named (one bad row failed the whole file)
            frame = _read_frame(pd, path, sep, on_bad_lines="skip")
        except Exception as again:
            _raise_csv_error(source, path, suffix, sep, again)
        records = _csv_record_lines(path, sep)
        filled = [r for r in records if not r[1]]
        width = filled[0][2] if filled else 0
        bad = {line: fields for line, _, fields in filled[1:] if fields > width}
        if len(frame) + len(bad) != len(filled) - 1:  # the csv module stopped early (a field pandas reads, e.g.
            _raise_csv_error(source, path, suffix, sep, exc)  # "q"x): the skipped rows cannot all be named
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            text = {n: raw.rstrip("\r\n") for n, raw in enumerate(f, start=1) if n in bad}
        too_long = [(line, f"{fields} fields where the header has {width}", text.get(line, ""))
                    for line, fields in bad.items()]
    except Exception as exc:
        _raise_csv_error(source, path, suffix, sep, exc)
    records = records or _csv_record_lines(path, sep)
    starts = [line for line, blank, _ in records if not blank]  # pandas skips blanks
    if too_long:
        left_out = {line for line, _, _ in too_long}
        starts = [line for line in starts if line not in left_out]
    lines = starts[1:] if len(starts) == len(frame) + 1 else None
    if lines is not None:
        frame, lines, uneven = _without_uneven_records(path, frame, lines, records)
        too_long = sorted(too_long + uneven)
    return datasets.Dataset.from_pandas(frame, preserve_index=False), lines, too_long


def _read_frame(pd: Any, path: Path, sep: str, **options: Any) -> Any:
    """The file as a frame of text (pandas would turn "391" into 391 and "" into NaN), its first column never taken
    as the index: with every record a field longer than the header, pandas did, and the columns were shifted one
    (the instruction read from the output's field). Such records are named by :func:`_without_uneven_records`."""
    import warnings

    with warnings.catch_warnings():  # "Length of header or names does not match length of data": named instead
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        return pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, index_col=False, **options)


def _without_uneven_records(path: Path, frame: Any, lines: list[int], records: list[tuple[int, bool, int]]
                            ) -> tuple[Any, list[int], list[tuple[int, str, str]]]:
    """``frame`` and ``lines`` without the records whose fields are fewer or more than the header's, and (line, why,
    its text) of each: pandas fills a short record's missing fields with empty text (a record cut short, a file
    still being written, loaded as a row with an empty reply) and drops a long one's extra fields, in silence."""
    filled = [r for r in records if not r[1]]
    width = filled[0][2] if filled else 0
    uneven = {line: fields for line, _, fields in filled[1:] if 0 < fields != width}
    uneven = {line: uneven[line] for line in lines if line in uneven}
    if not uneven:
        return frame, lines, []
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        text = {n: raw.rstrip("\r\n") for n, raw in enumerate(f, start=1) if n in uneven}
    keep = [line not in uneven for line in lines]
    return (frame[keep].reset_index(drop=True), [line for line in lines if line not in uneven],
            [(line, f"{fields} field{'' if fields == 1 else 's'} where the header has {width}", text.get(line, ""))
             for line, fields in uneven.items()])


def _raise_csv_error(source: str, path: Path, suffix: str, sep: str, exc: Exception) -> NoReturn:
    """Raise the ``InputError`` naming the line (where it can be found) of a CSV/TSV file pandas cannot read."""
    message, location = str(exc).strip(), "file"
    found = _PANDAS_ROW.search(message)  # "EOF inside string starting at row 2": header = row 0, blank lines count
    if isinstance(exc, UnicodeDecodeError):  # pandas counts the byte within its own buffer: find it in the file
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as whole:
            location = f"line {data.count(NEWLINE, 0, whole.start) + 1}"
            message = f"invalid UTF-8 at byte {whole.start} (save the file as UTF-8)"
    elif fields := _PANDAS_FIELDS.search(message):  # "Expected 2 fields in line 3, saw 3": its 3rd record
        starts = _csv_record_lines(path, sep)
        record = int(fields.group(1)) - 1
        location = f"line {starts[record][0]}" if record < len(starts) else "file"
        if saw := _PANDAS_FIELDS_SAW.search(message):  # pandas' "line 29" is its record count, not a line: said so
            want, at, got = saw.groups()
            message = f"record {at} (the header is record 1): expected {want} fields, saw {got}"
    elif found:
        starts = _csv_record_lines(path, sep)
        if int(found.group(1)) < len(starts):
            location = f"line {starts[int(found.group(1))][0]}"
            message = "a quoted field is never closed (it runs to the end of the file)"
    raise InputError(source, location, f"cannot read {suffix[1:]}: {message}") from None
