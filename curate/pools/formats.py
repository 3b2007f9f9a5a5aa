"""Record shapes: name the shape of a raw record and normalise it into a conversation.

A conversation is a list of ``{"role", "content"}`` messages; user and assistant turns alternate (system
turns aside; a tool turn may sit between two assistant turns). A record without a response field becomes a
lone user turn (instruction-only).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from curate.defaults import POOL
from curate.errors import OptionError

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion", "qa")

_SHAREGPT_ROLES = {
    "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system",
}
_MESSAGE_ROLES = {"user", "assistant", "system", "tool"}
_CALL_FIELDS = ("tool_calls", "function_call")  # an assistant turn's calls, which a text turn cannot hold
# The source field a chat row's turns are read from (unless a mapping names another), and a turn's own keys there.
TURN_FIELDS = {"sharegpt": "conversations", "messages": "messages"}
RESERVED = ("id", "conversation", "format")  # a source field of one of these names is kept as original_<name>
_TURN_TEXT_KEYS = frozenset({"role", "content", "from", "value", *_CALL_FIELDS})  # calls: a row with any is refused

# For each shape: the fields it reads, which are required, and the source columns they default to.
_DEFAULT_FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "alpaca": {"instruction": ("instruction",), "input": ("input", "context"), "output": ("output", "response", "answer"),
               "system": ("system",)},
    "sharegpt": {"conversations": ("conversations",), "system": ("system",)},
    "messages": {"messages": ("messages",), "system": ("system",)},
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
# Fields that hold a reply in some shape (or commonly do): one beside another shape's prompt is not read by it
_REPLY_FIELDS = tuple(sorted({c for f, r in _RESPONSE_FIELD.items() for c in _DEFAULT_FIELDS[f][r]} | {"reply"}))


class _RowError(ValueError):
    """One record is unusable; the reader turns it into an InputError naming the file and line, or a Reject."""


def exported_format(record: dict[str, Any]) -> str | None:
    """The shape a row of curate's own export was first read as (its ``format`` beside the normalised
    ``conversation``), or None for any other record. Reading the conversation back keeps the row whole even
    when its original fields were mapped ones (e.g. query/reply) that no shape names."""
    if isinstance(record.get("conversation"), list) and record.get("format") in FORMATS:
        return record["format"]
    return None


def check_mapping(mapping: dict[str, str] | None) -> None:
    """Refuse a mapping that names a field no shape reads (a typo would otherwise be ignored)."""
    known = sorted({name for fields in _DEFAULT_FIELDS.values() for name in fields})
    if mapping is not None and not isinstance(mapping, Mapping):
        raise OptionError(f"mapping {mapping!r}: a dict of the shape's field -> your record's field, e.g. "
                          "{'instruction': 'query'}")
    for name, column in (mapping or {}).items():
        if name not in known or not isinstance(column, str):
            raise OptionError(f"mapping {name!r}: {column!r}: the keys are the fields a shape reads ({', '.join(known)}) "
                             "and each value names your record's field, e.g. {'instruction': 'query'}")


def detect_format(record: dict[str, Any], mapping: dict[str, str] | None = None) -> str:
    """Name the shape of one raw record (``alpaca``, ``sharegpt``, ``messages``, ...). A null field is absent:
    a table of mixed shapes (an export of a mixed pool, a parquet file) has every shape's columns on every row.
    A ``mapping`` names the shape whose leading field it maps, where the record has that field."""
    for fmt, (lead,) in _REQUIRED.items():
        if mapping and lead in mapping and record.get(mapping[lead]) is not None:
            return fmt
    if record.get("conversations") is not None:
        return "sharegpt"
    if record.get("messages") is not None:
        return "messages"
    for fmt, (lead,) in _REQUIRED.items():  # a mapped lead field the record lacks: not another shape in silence
        if mapping and lead in mapping and fmt not in ("sharegpt", "messages"):
            raise _RowError(f"missing field {mapping[lead]!r} (mapped to {lead!r}); the record has "
                            f"{sorted(record)[:12]}")
    # The shape is named by its leading field; a missing partner field then gets its own clear error.
    for fmt, lead in (("alpaca", "instruction"), ("prompt_completion", "prompt"), ("qa", "question")):
        if any(record.get(c) is not None for c in _DEFAULT_FIELDS[fmt][lead]):
            if mapping and not set(mapping) & set(_DEFAULT_FIELDS[fmt]):
                raise _RowError(f"the record is {fmt} by its fields {sorted(record)[:12]}, which the mapping "
                                f"{mapping} does not read (it maps fields of another shape)")
            return fmt
    nulls = [c for fields in _DEFAULT_FIELDS.values() for c in next(iter(fields.values())) if c in record
             and record[c] is None]  # a shape's leading field, given as null: say that, not "cannot tell"
    if nulls:
        raise _RowError(f"{nulls[0]} is null; it must be text")
    raise _RowError(
        f"cannot tell the format from the fields {sorted(record)[:12]}; expected one of: "
        "instruction+output (alpaca), conversations (sharegpt), messages, prompt+completion, "
        "question/query+answer/response; or name the fields (--format and --mapping, format= and mapping= in "
        "Python)"
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
    # OpenAI-style content parts: text parts are joined; an image, audio or file part is refused, since a
    # conversation holds text only and the row would otherwise be kept (and trained on) without it
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        other = next((p.get("type") for p in value if p.get("type", "text") != "text"), None)
        if other is not None:
            raise _RowError(f"{what} has a part of type {other!r}; curate keeps text only, so the row is left out "
                            "rather than kept without it")
        if untexted := next((p for p in value if "text" not in p), None):  # {"image_url": ...} without a type
            raise _RowError(f"{what} has a part with no text (keys {sorted(untexted)[:6]}); curate keeps text only, "
                            "so the row is left out rather than kept without it")
        parts = [p["text"] for p in value]
        if any(not isinstance(t, str) for t in parts):
            raise _RowError(f"{what}: a text part's text must be a string")
        value = "\n".join(parts)
    return _text(value, what, max_chars, allow_empty=allow_empty)


def stored_name(field: str) -> str:
    """The pool field a source field is kept as: ``original_<name>`` for a name curate reserves (:data:`RESERVED`)."""
    return f"original_{field}" if field in RESERVED else field


def turn_fields(mapping: dict[str, str] | None = None) -> dict[str, str]:
    """The pool field each chat shape's turns are kept in: :data:`TURN_FIELDS`, or the field ``mapping`` names
    (a reserved name as it is stored, :func:`stored_name`)."""
    return {fmt: stored_name((mapping or {}).get(field, field)) for fmt, field in TURN_FIELDS.items()}


def turn_keys_not_kept(turns: Any) -> set[str]:
    """Keys with a value on a source's chat turns besides their speaker and text (ShareGPT's ``weight``, a message's
    ``name``): curate's conversation keeps neither (the source field keeps them). ``turns``: the field's value, or
    its JSON text."""
    if isinstance(turns, str):
        try:
            turns = json.loads(turns)
        except ValueError:
            return set()
    if not isinstance(turns, list):
        return set()
    return {k for t in turns if isinstance(t, dict) for k, v in t.items() if v is not None} - _TURN_TEXT_KEYS


def to_conversation(record: dict[str, Any], fmt: str, mapping: dict[str, str] | None = None,
                    max_field_chars: int = POOL.max_field_chars) -> list[dict[str, str]]:
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
                calls = next((k for k in _CALL_FIELDS if turn.get(k)), None)
                if calls is not None:  # stored as text alone it would be an empty reply, and rows differing only
                    # in their calls would be one row's exact duplicates
                    raise _RowError(f"turn {i} has {calls}; curate keeps text turns only, so the row is left out "
                                    "rather than kept without its calls")
            if role != "system":
                if previous is not None and role in _ALTERNATING_ROLES and previous[1] == role:
                    raise _RowError(f"turn {i} is a second {role} turn in a row (after turn {previous[0]}); "
                                    "user and assistant turns must alternate")
                previous = (i, role)
            turns.append({"role": role, "content": _content(text, f"turn {i} content", max_field_chars,
                                                            allow_empty=role == "assistant")})
        system = _pick(record, fmt, mapping, "system")  # a top-level system prompt (e.g. ShareGPT's "system")
        if system and not any(t["role"] == "system" for t in turns) and not (isinstance(system, str) and not system.strip()):
            turns.insert(0, {"role": "system", "content": _text(system, "system", max_field_chars)})
    else:
        system = _pick(record, fmt, mapping, "system")
        if system is not None and not (isinstance(system, str) and not system.strip()):  # blank: no system prompt
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
        elif unread := [c for c in _REPLY_FIELDS if record.get(c) is not None and c not in (mapping or {}).values()]:
            # {"prompt", "output"} read as prompt_completion without its reply: every row instruction-only, in silence
            raise _RowError(f"a {fmt} record has no {'/'.join(_DEFAULT_FIELDS[fmt][response])} reply, but a field "
                            f"{unread[0]!r} that {fmt} does not read; name it: --mapping '{{\"{response}\": "
                            f"\"{unread[0]}\"}}' (mapping= in Python), or leave it out for instruction-only rows")
    if not any(t["role"] == "user" for t in turns):
        raise _RowError("empty conversation: no user turn" if turns else "empty conversation")
    return turns


# -- writing a conversation back in a shape (the inverse of to_conversation, for training files) ----------------
_SHAREGPT_SPEAKERS = {"user": "human", "assistant": "gpt", "system": "system"}
_SINGLE_TURN_FIELDS = {"alpaca": ("instruction", "output"), "prompt_completion": ("prompt", "completion"),
                       "qa": ("question", "answer")}


def shape_problem(conversation: list[dict[str, Any]], fmt: str) -> str | None:
    """Why ``conversation`` cannot be written as a ``fmt`` record without losing a turn, or None."""
    if fmt not in FORMATS:
        return f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}"
    roles = [t["role"] for t in conversation]
    if fmt == "messages":
        return None
    if "tool" in roles:
        return "it has a tool turn, which only the messages format holds"
    if fmt == "sharegpt":
        return None
    if roles.count("user") != 1 or roles.count("assistant") > 1:
        return f"{fmt} holds one exchange and it has {roles.count('user')} user turns"
    if [r for r in roles if r != "system"] == ["assistant", "user"]:  # the reply would be paired with the question
        return f"{fmt} holds a question and its reply, and its assistant turn comes before the user turn"
    if "system" in roles and fmt != "alpaca":
        return f"it has a system prompt, which {fmt} has no field for (alpaca's system field, or messages, holds one)"
    if roles.count("system") > 1 or ("system" in roles and roles[0] != "system"):
        return ("alpaca's system field holds one system prompt ahead of the exchange, and it has "
                + (f"{roles.count('system')}" if roles.count("system") > 1 else "one inside or after it"))
    return None


def from_conversation(conversation: list[dict[str, Any]], fmt: str) -> dict[str, Any]:
    """``conversation`` as a record of shape ``fmt`` that ``to_conversation`` reads back to the same turns:
    ``messages`` (OpenAI / TRL chat), ``sharegpt`` (human/gpt), or one exchange as ``alpaca`` (instruction, input
    "", output, system), ``prompt_completion`` or ``qa``; an instruction-only row has no reply field (a null one
    reads back as an empty reply). A conversation the shape cannot hold (:func:`shape_problem`) is a ValueError."""
    problem = shape_problem(conversation, fmt)
    if problem is not None:
        raise ValueError(problem)
    if fmt == "messages":
        return {"messages": [{"role": t["role"], "content": t["content"]} for t in conversation]}
    if fmt == "sharegpt":
        return {"conversations": [{"from": _SHAREGPT_SPEAKERS[t["role"]], "value": t["content"]}
                                  for t in conversation]}
    text = {t["role"]: t["content"] for t in conversation}
    prompt, reply = _SINGLE_TURN_FIELDS[fmt]
    record = {prompt: text["user"], **({"input": ""} if fmt == "alpaca" else {})}
    if "assistant" in text:
        record[reply] = text["assistant"]
    return {**record, "system": text.get("system")} if fmt == "alpaca" else record
