"""Pools: read instruction data in its common shapes and normalise every row to a conversation.

Every row becomes ``{"id", "conversation": [{"role", "content"}, ...], "format", ...original columns}``.
JSON Lines and JSON arrays are parsed here line by line (not by ``datasets``' JSON builder) because
the contract is an error naming the file and the line, or a rejects file listing them; ``datasets``'
loader can do neither. Parquet, CSV, ``save_to_disk`` folders and Hub names go through ``datasets``.
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from curate.errors import InputError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "qa")
RESERVED = ("id", "conversation", "format")
DEFAULT_MAX_FIELD_CHARS = 1_000_000
REJECT_RAW_MAX_CHARS = 2_000  # a reject keeps at most this much of its raw record
# ``datasets`` recurses over nested column types and fails from about 45 levels; a deeper column is kept as JSON text.
MAX_STORED_NESTING = 32

OnError = Literal["raise", "skip"]

_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system",
}
_MESSAGE_ROLES = {"user", "assistant", "system", "tool"}

# For each shape: the fields it reads, which are required, and the source columns they default to.
_DEFAULT_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "alpaca": {"instruction": ("instruction",), "input": ("input", "context"), "output": ("output", "response", "answer"),
               "system": ("system",)},
    "sharegpt": {"conversations": ("conversations",)},
    "messages": {"messages": ("messages",)},
    "prompt_completion": {"prompt": ("prompt",), "completion": ("completion", "response", "chosen"), "system": ("system",)},
    "qa": {"question": ("question", "query"), "answer": ("answer", "response"), "system": ("system",)},
}
# The response field is optional: a record without one is an instruction-only row (a user turn, no assistant turn).
_REQUIRED = {
    "alpaca": ("instruction",), "sharegpt": ("conversations",), "messages": ("messages",),
    "prompt_completion": ("prompt",), "qa": ("question",),
}
_RESPONSE_FIELD = {"alpaca": "output", "prompt_completion": "completion", "qa": "answer"}
_ALTERNATING_ROLES = ("user", "assistant")

_UTF8_BOM = codecs.BOM_UTF8
# A lone surrogate can only come from a JSON escape (raw UTF-8 cannot encode one); lines without one skip the check.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
# Tokens of JSON text, to find the line of a problem the parser reports without a position.
_JSON_TOKEN = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|[\[{]|[\]}]|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\n')


@dataclass
class Reject:
    """One input record that was left out, and why."""

    path: str
    location: str
    reason: str
    raw: str = ""


@dataclass
class ReadResult:
    """Rows normalised from one source, plus what was rejected."""

    source: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)

    @property
    def formats(self) -> Counter:
        return Counter(r["format"] for r in self.rows)

    @property
    def empty_responses(self) -> int:
        """Rows loaded whose assistant turn is empty (kept: their instruction is still data; judges see it)."""
        return sum(any(t["role"] == "assistant" and not t["content"].strip() for t in r["conversation"])
                   for r in self.rows)

    @property
    def instruction_only(self) -> int:
        """Rows loaded without any assistant turn (no response field): scorers and judges that read a response
        record a failure for them, complexity is scored from the instruction."""
        return sum(not any(t["role"] == "assistant" for t in r["conversation"]) for r in self.rows)


class _RowError(ValueError):
    pass


# One record from a source: its location ("line 7"), the parsed record or the _RowError that replaced
# it, and the raw source text of the record when the source has one (JSON Lines), for the rejects file.
_Item = tuple[str, Any, str | None]


def detect_format(record: dict[str, Any]) -> str:
    """Name the shape of one raw record (``alpaca``, ``sharegpt``, ``messages``, ...)."""
    if "conversations" in record:
        return "sharegpt"
    if "messages" in record:
        return "messages"
    # The shape is named by its leading field; a missing partner field then gets its own clear error.
    for fmt, lead in (("alpaca", "instruction"), ("prompt_completion", "prompt"), ("qa", "question")):
        if any(c in record for c in _DEFAULT_FIELDS[fmt][lead]):
            return fmt
    raise _RowError(
        f"cannot tell the format from the fields {sorted(record)[:12]}; expected one of: "
        "instruction+output (alpaca), conversations (sharegpt), messages, prompt+completion, "
        "question/query+answer/response; or pass format= and mapping="
    )


def _present(record: dict[str, Any], fmt: str, mapping: dict[str, str] | None, name: str) -> bool:
    """Whether the record has the shape's field ``name`` (a mapped field counts as present: _pick checks it)."""
    if mapping and name in mapping:
        return True
    return any(col in record for col in _DEFAULT_FIELDS[fmt][name])


def _pick(record: dict[str, Any], fmt: str, mapping: dict[str, str] | None, name: str) -> Any:
    if mapping and name in mapping:
        col = mapping[name]
        if col not in record:
            raise _RowError(f"missing field {col!r} (mapped to {name!r})")
        return record[col]
    for col in _DEFAULT_FIELDS[fmt][name]:
        if col in record:
            return record[col]
    if name in _REQUIRED[fmt]:
        raise _RowError(f"missing field {name!r} for format {fmt!r}")
    return None


def _text(value: Any, what: str, max_chars: int, *, allow_empty: bool = False) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise _RowError(f"{what} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise _RowError(f"{what} contains a NUL byte")
    if len(value) > max_chars:
        raise _RowError(f"{what} is {len(value):,} characters, over the limit of {max_chars:,} (max_field_chars)")
    if not allow_empty and not value.strip():
        raise _RowError(f"{what} is empty")
    return value


def _content(value: Any, what: str, max_chars: int, allow_empty: bool = False) -> str:
    # OpenAI-style content parts: keep the text parts.
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        value = "\n".join(str(p.get("text", "")) for p in value if p.get("type", "text") == "text")
    return _text(value, what, max_chars, allow_empty=allow_empty)


def to_conversation(record: dict[str, Any], fmt: str, mapping: dict[str, str] | None = None,
                    max_field_chars: int = DEFAULT_MAX_FIELD_CHARS) -> list[dict[str, str]]:
    """Normalise one raw record of shape ``fmt`` into a list of ``{role, content}`` turns.

    User and assistant turns must alternate (system turns aside; a tool turn may sit between two
    assistant turns). A record without a response field becomes a lone user turn (instruction-only).
    """
    turns: list[dict[str, str]] = []
    if fmt in ("sharegpt", "messages"):
        previous: tuple[int, str] | None = None  # (index, role) of the last user, assistant or tool turn
        raw_turns = _pick(record, fmt, mapping, "conversations" if fmt == "sharegpt" else "messages")
        if not isinstance(raw_turns, list):
            raise _RowError(f"{'conversations' if fmt == 'sharegpt' else 'messages'} must be a list, "
                            f"got {type(raw_turns).__name__}")
        for i, turn in enumerate(raw_turns):
            if not isinstance(turn, dict):
                raise _RowError(f"turn {i} must be an object, got {type(turn).__name__}")
            if fmt == "sharegpt":
                who, text = turn.get("from"), turn.get("value")
                role = _SHAREGPT_ROLES.get(str(who).lower()) if who is not None else None
                if role is None:
                    raise _RowError(f"turn {i} has unknown speaker {who!r} (expected human/gpt/system)")
            else:
                role, text = turn.get("role"), turn.get("content")
                if role not in _MESSAGE_ROLES:
                    raise _RowError(f"turn {i} has unknown role {role!r} (expected user/assistant/system/tool)")
            if role != "system":
                if previous is not None and role in _ALTERNATING_ROLES and previous[1] == role:
                    raise _RowError(f"turn {i} is a second {role} turn in a row (after turn {previous[0]}); "
                                    "user and assistant turns must alternate")
                previous = (i, role)
            turns.append({"role": role, "content": _content(text, f"turn {i} content", max_field_chars,
                                                            allow_empty=role == "assistant")})
    else:
        system = _pick(record, fmt, mapping, "system")
        if system:
            turns.append({"role": "system", "content": _text(system, "system", max_field_chars)})
        if fmt == "alpaca":
            instruction = _text(_pick(record, fmt, mapping, "instruction"), "instruction", max_field_chars)
            extra = _text(_pick(record, fmt, mapping, "input"), "input", max_field_chars, allow_empty=True)
            user = instruction if not extra.strip() else f"{instruction}\n\n{extra}"
        elif fmt == "prompt_completion":
            user = _text(_pick(record, fmt, mapping, "prompt"), "prompt", max_field_chars)
        elif fmt == "qa":
            user = _text(_pick(record, fmt, mapping, "question"), "question", max_field_chars)
        else:
            raise _RowError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        turns.append({"role": "user", "content": user})
        response = _RESPONSE_FIELD[fmt]
        if _present(record, fmt, mapping, response):  # absent: an instruction-only row; null: an empty response
            answer = _text(_pick(record, fmt, mapping, response), response, max_field_chars, allow_empty=True)
            turns.append({"role": "assistant", "content": answer})
    if not any(t["role"] == "user" for t in turns):
        raise _RowError("empty conversation: no user turn" if turns else "empty conversation")
    return turns


def row_id(conversation: list[dict[str, str]]) -> str:
    """Stable id of a row: a hash of its conversation, the same in every file and run."""
    canonical = json.dumps(conversation, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


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
            json.dumps({key: value}, ensure_ascii=False).encode("utf-8")
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


def _iter_jsonl(path: Path) -> Iterator[_Item]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            location = f"line {lineno}"
            bom = len(_UTF8_BOM) if lineno == 1 and raw.startswith(_UTF8_BOM) else 0
            raw = raw[bom:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield (location, _RowError(f"invalid UTF-8 at byte {exc.start + bom}"),
                       raw.decode("utf-8", "backslashreplace").rstrip("\r\n"))
                continue
            if not text.strip():
                continue
            try:
                record = _parse_json(text)
            except _RowError as exc:
                record = exc
            yield location, record, text.rstrip("\r\n")


def _iter_json(path: Path) -> Iterator[_Item]:
    data = path.read_bytes()
    bom = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: bom + exc.start].count(b"\n") + 1
        raise InputError(str(path), f"line {line}", f"invalid UTF-8 at byte {bom + exc.start}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # A .json file holding JSON Lines is common; read it as such.
        if exc.msg == "Extra data":
            yield from _iter_jsonl(path)
            return
        raise InputError(str(path), f"line {exc.lineno}", f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    # The parser gives no position for these two: find the line.
    except RecursionError:
        raise InputError(str(path), f"line {_problem_line(text)}", _too_deep()) from None
    except ValueError as exc:
        line = _problem_line(text, long_digits=sys.get_int_max_str_digits() or None)
        raise InputError(str(path), f"line {line}", _too_long(exc)) from None
    if isinstance(obj, dict):
        lists = [k for k, v in obj.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(str(path), "top level", "expected a JSON array of records (or an object holding one)")
        obj = obj[lists[0]]
    if not isinstance(obj, list):
        raise InputError(str(path), "top level", f"expected a JSON array of records, got {type(obj).__name__}")
    check_surrogates = _SURROGATE_ESCAPE.search(text) is not None
    for i, rec in enumerate(obj, start=1):
        error = _lone_surrogate(rec) if check_surrogates else None
        yield (f"record {i}", rec, None) if error is None else (f"record {i}", error, _record_text(rec))


def _iter_dataset(ds: Any) -> Iterator[_Item]:
    n = len(ds)
    for start in range(0, n, 4096):
        batch = ds[start : start + 4096]
        keys = list(batch)
        for j in range(len(batch[keys[0]]) if keys else 0):
            yield f"row {start + j + 1}", {k: batch[k][j] for k in keys}, None


def _records(source: str) -> Iterator[_Item]:
    path = Path(source)
    if path.is_dir():
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as exc:  # not a save_to_disk folder
            raise InputError(source, "folder", f"not a datasets folder (save_to_disk): {exc}") from None
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else ds[next(iter(ds))]
        yield from _iter_dataset(ds)
        return
    if path.exists():
        suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            yield from _iter_jsonl(path)
        elif suffix == ".json":
            yield from _iter_json(path)
        elif suffix in (".parquet", ".csv", ".tsv"):
            import datasets

            try:
                if suffix == ".parquet":
                    ds = datasets.Dataset.from_parquet(str(path))
                else:
                    # Text columns stay text: pandas would turn "391" into 391 and "" into NaN.
                    import pandas as pd

                    frame = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",", dtype=str, keep_default_na=False)
                    ds = datasets.Dataset.from_pandas(frame, preserve_index=False)
            except Exception as exc:
                raise InputError(source, "file", f"cannot read {suffix[1:]}: {exc}") from None
            yield from _iter_dataset(ds)
        else:
            raise InputError(source, "file", f"unknown file type {path.suffix!r}: use .jsonl, .json, .parquet, .csv, "
                                             "or a datasets folder")
        return
    if "/" in source and not source.startswith((".", "/")) and not os.path.splitext(source)[1]:
        import datasets

        try:
            ds = datasets.load_dataset(source, split="train")
        except Exception as exc:
            raise InputError(source, "hub", f"not a local file, and loading it from the Hub failed: {exc}") from None
        yield from _iter_dataset(ds)
        return
    raise InputError(source, "file", "no such file or folder")


def read(source: str | os.PathLike, *, format: str = "auto", mapping: dict[str, str] | None = None,
         on_error: OnError = "raise", max_field_chars: int = DEFAULT_MAX_FIELD_CHARS) -> ReadResult:
    """Read and normalise every record of ``source``; bad records raise or are collected as rejects."""
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, not {format!r}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', not {on_error!r}")
    source = str(source)
    result = ReadResult(source=source)
    for location, rec, raw in _records(source):
        try:
            if isinstance(rec, _RowError):
                raise rec
            if not isinstance(rec, dict):
                raise _RowError(f"expected a JSON object, got {type(rec).__name__}")
            fmt = format if format != "auto" else detect_format(rec)
            conversation = to_conversation(rec, fmt, mapping, max_field_chars)
        except _RowError as exc:
            if on_error == "raise":
                raise InputError(source, location, str(exc)) from None
            result.rejects.append(Reject(source, location, str(exc), _reject_raw(rec, raw)))
            continue
        row = {("original_" + k if k in RESERVED else k): v for k, v in rec.items()}
        row.update(conversation=conversation, format=fmt)
        result.rows.append(row)
    if not result.rows and not result.rejects:
        raise InputError(source, "file", "no records (it is empty or holds only blank lines)")
    return result


def _record_text(record: Any) -> str:
    """A parsed record as JSON text, for a reject that has no source line."""
    try:
        return json.dumps(record, ensure_ascii=False, default=str)
    except (ValueError, RecursionError):  # a circular or too deep structure: the reason says what is wrong
        return ""


def _reject_raw(record: Any, raw: str | None) -> str:
    """The text a reject keeps: the source line, else the record as JSON; writable as UTF-8, truncated."""
    if raw is None:
        raw = "" if isinstance(record, _RowError) else _record_text(record)
    # lone surrogates become their escape, so the rejects file can always be written
    return raw[:REJECT_RAW_MAX_CHARS].encode("utf-8", "backslashreplace").decode("utf-8")


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


def to_table(rows: list[dict[str, Any]]):
    """Build an Arrow table: id, conversation, format first, then every original column.

    A column whose values Arrow cannot type together (int in one row, str in another), cannot hold
    (an integer beyond 64 bits) or that nests deeper than ``datasets`` can store (MAX_STORED_NESTING)
    is kept as JSON text rather than dropped; its name is returned so callers can say so.
    """
    import pyarrow as pa

    def nesting(data_type: pa.DataType) -> int:
        depth, level = 0, [data_type]
        while level:
            depth += 1
            level = [t.field(i).type for t in level for i in range(t.num_fields)]
        return depth

    names: dict[str, None] = {"id": None, "conversation": None, "format": None}
    for row in rows:
        for k in row:
            names.setdefault(k, None)
    arrays, as_json = {}, []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            array = pa.array(values)
        except (pa.ArrowException, OverflowError):  # mixed types, or an integer beyond 64 bits
            array = None
        if array is None or nesting(array.type) > MAX_STORED_NESTING:
            array = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values])
            as_json.append(name)
        arrays[name] = array
    return pa.table(arrays), as_json


def write_rejects(rejects: list[Reject], path: str | os.PathLike, append: bool = False) -> None:
    """Write rejects as JSON Lines: path, location (line/row), reason, raw record."""
    with open(path, "a" if append else "w", encoding="utf-8") as fh:
        for r in rejects:
            fh.write(json.dumps(asdict(r), ensure_ascii=False) + "\n")


def load(source: str | os.PathLike, *, format: str = "auto", mapping: dict[str, str] | None = None,
         on_error: OnError = "raise", rejects_path: str | os.PathLike | None = None,
         max_field_chars: int = DEFAULT_MAX_FIELD_CHARS):
    """Load a pool as a ``datasets.Dataset`` with ``id``, ``conversation``, ``format`` and the original columns.

    ``source``: a .jsonl/.json/.parquet/.csv file, a ``save_to_disk`` folder, or a Hub dataset name.
    ``format``: ``auto`` (per record) or one of ``alpaca, sharegpt, messages, prompt_completion, qa``.
    ``mapping``: the shape's field -> your column, e.g. ``{"instruction": "query", "output": "reply"}``.
    ``on_error="skip"`` leaves bad records out and writes them to ``rejects_path``
    (default ``<source name>.rejects.jsonl`` in the current directory).
    """
    import datasets

    result = read(source, format=format, mapping=mapping, on_error=on_error, max_field_chars=max_field_chars)
    if result.rejects:
        rejects_path = rejects_path or f"{Path(str(source)).name}.rejects.jsonl"
        write_rejects(result.rejects, rejects_path)
        warnings.warn(f"{len(result.rejects)} record(s) of {source} left out; reasons in {rejects_path}", stacklevel=2)
    if not result.rows:
        raise InputError(str(source), "file", "no usable records")
    assign_ids(result.rows)
    table, _ = to_table(result.rows)
    return datasets.Dataset(table)


def user_turns(conversation: list[dict[str, str]]) -> list[tuple[str, str | None]]:
    """(instruction, response) for each user turn; the response is the assistant turn that follows, if any."""
    pairs: list[tuple[str, str | None]] = []
    for i, turn in enumerate(conversation):
        if turn["role"] == "user":
            nxt = conversation[i + 1] if i + 1 < len(conversation) else None
            pairs.append((turn["content"], nxt["content"] if nxt and nxt["role"] == "assistant" else None))
    return pairs


def instruction_text(conversation: list[dict[str, str]]) -> str:
    """The first user turn: the row's instruction."""
    return next(t["content"] for t in conversation if t["role"] == "user")


def response_text(conversation: list[dict[str, str]]) -> str:
    """The first assistant turn (empty when there is none)."""
    return next((t["content"] for t in conversation if t["role"] == "assistant"), "")
