"""Pools: read instruction data in its common shapes and normalise every row to a conversation.

Every row becomes ``{"id", "conversation": [{"role", "content"}, ...], "format", ...original columns}``.
JSON Lines and JSON arrays are parsed here line by line (not by ``datasets``' JSON builder) because
the contract is an error naming the file and the line, or a rejects file listing them; ``datasets``'
loader can do neither. Parquet, CSV, ``save_to_disk`` folders and Hub names go through ``datasets``.
"""

from __future__ import annotations

import hashlib
import json
import os
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
_REQUIRED = {
    "alpaca": ("instruction", "output"), "sharegpt": ("conversations",), "messages": ("messages",),
    "prompt_completion": ("prompt", "completion"), "qa": ("question", "answer"),
}


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


class _RowError(ValueError):
    pass


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
    """Normalise one raw record of shape ``fmt`` into a list of ``{role, content}`` turns."""
    turns: list[dict[str, str]] = []
    if fmt in ("sharegpt", "messages"):
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
            answer = _text(_pick(record, fmt, mapping, "output"), "output", max_field_chars, allow_empty=True)
        elif fmt == "prompt_completion":
            user = _text(_pick(record, fmt, mapping, "prompt"), "prompt", max_field_chars)
            answer = _text(_pick(record, fmt, mapping, "completion"), "completion", max_field_chars, allow_empty=True)
        elif fmt == "qa":
            user = _text(_pick(record, fmt, mapping, "question"), "question", max_field_chars)
            answer = _text(_pick(record, fmt, mapping, "answer"), "answer", max_field_chars, allow_empty=True)
        else:
            raise _RowError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        turns += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if not any(t["role"] == "user" for t in turns):
        raise _RowError("empty conversation: no user turn" if turns else "empty conversation")
    return turns


def row_id(conversation: list[dict[str, str]]) -> str:
    """Stable id of a row: a hash of its conversation, the same in every file and run."""
    canonical = json.dumps(conversation, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _iter_jsonl(path: Path) -> Iterator[tuple[str, Any]]:
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            location = f"line {lineno}"
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield location, _RowError(f"invalid UTF-8 at byte {exc.start}")
                continue
            if not text.strip():
                continue
            try:
                yield location, json.loads(text)
            except json.JSONDecodeError as exc:
                yield location, _RowError(f"malformed JSON: {exc.msg} (column {exc.colno})")


def _iter_json(path: Path) -> Iterator[tuple[str, Any]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(str(path), f"line {line}", f"invalid UTF-8 at byte {exc.start}") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # A .json file holding JSON Lines is common; read it as such.
        if exc.msg == "Extra data":
            yield from _iter_jsonl(path)
            return
        raise InputError(str(path), f"line {exc.lineno}", f"malformed JSON: {exc.msg} (column {exc.colno})") from None
    if isinstance(obj, dict):
        lists = [k for k, v in obj.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise InputError(str(path), "top level", "expected a JSON array of records (or an object holding one)")
        obj = obj[lists[0]]
    if not isinstance(obj, list):
        raise InputError(str(path), "top level", f"expected a JSON array of records, got {type(obj).__name__}")
    for i, rec in enumerate(obj, start=1):
        yield f"record {i}", rec


def _iter_dataset(ds: Any) -> Iterator[tuple[str, Any]]:
    n = len(ds)
    for start in range(0, n, 4096):
        batch = ds[start : start + 4096]
        keys = list(batch)
        for j in range(len(batch[keys[0]]) if keys else 0):
            yield f"row {start + j + 1}", {k: batch[k][j] for k in keys}


def _records(source: str) -> Iterator[tuple[str, Any]]:
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
    for location, rec in _records(source):
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
            raw = rec if isinstance(rec, dict) else None
            result.rejects.append(Reject(source, location, str(exc), json.dumps(raw, ensure_ascii=False)[:2000]
                                         if raw is not None else ""))
            continue
        row = {("original_" + k if k in RESERVED else k): v for k, v in rec.items()}
        row.update(conversation=conversation, format=fmt)
        result.rows.append(row)
    return result


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

    A column whose values Arrow cannot type together (int in one row, str in another) is kept as
    JSON text rather than dropped; its name is returned so callers can say so.
    """
    import pyarrow as pa

    names: dict[str, None] = {"id": None, "conversation": None, "format": None}
    for row in rows:
        for k in row:
            names.setdefault(k, None)
    arrays, as_json = {}, []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            arrays[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            arrays[name] = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in values])
            as_json.append(name)
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
