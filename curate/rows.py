"""The one row model: a conversation is a list of turns ``(system, instruction, response)``.

Every module that needs "a row's instruction" or "the response to turn t" asks here; nothing else
walks a conversation's messages. A turn is a user message and the assistant message that answers it
(``response`` is None when the user message is the last one, as in instruction-only pools).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Conversation = Sequence[Mapping[str, str]]
TEXT_KINDS = ("instruction", "conversation", "response")


@dataclass(frozen=True)
class Turn:
    instruction: str
    response: str | None
    system: str = ""


def turns(conversation: Conversation) -> list[Turn]:
    """The user turns of a conversation, each with the assistant reply that follows it and the system
    message in force (the latest one before it)."""
    out: list[Turn] = []
    system = ""
    for i, message in enumerate(conversation):
        role = message["role"]
        if role == "system":
            system = message["content"]
        elif role == "user":
            nxt = conversation[i + 1] if i + 1 < len(conversation) else None
            reply = nxt["content"] if nxt is not None and nxt["role"] == "assistant" else None
            out.append(Turn(message["content"], reply, system))
    return out


def row_text(conversation: Conversation, text: str = "instruction") -> str:
    """One text for a whole row: its user turns, its assistant turns, or the conversation, joined.

    This is what row-level steps read (embeddings, dedup, the tagger's query).
    """
    if text == "instruction":
        return "\n\n".join(m["content"] for m in conversation if m["role"] == "user")
    if text == "response":
        return "\n\n".join(m["content"] for m in conversation if m["role"] == "assistant")
    if text == "conversation":
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in conversation)
    raise ValueError(f"text must be one of {', '.join(TEXT_KINDS)}, got {text!r}")


def as_turns(row: Any) -> list[Turn]:
    """Turns of whatever a user hands a scorer: a conversation, a dict with ``conversation``, a dict with
    ``instruction`` (+ ``input``) and ``response``/``output``, a Turn, or a plain instruction string."""
    if isinstance(row, Turn):
        return [row]
    if isinstance(row, str):
        return [Turn(row, None)]
    if isinstance(row, Mapping):
        if "conversation" in row:
            return turns(row["conversation"])
        instruction = row.get("instruction")
        if instruction is None:
            raise ValueError(f"a row needs 'conversation' or 'instruction'; got keys {sorted(row)}")
        if row.get("input"):
            instruction = f"{instruction}\n\n{row['input']}"
        response = row.get("response", row.get("output"))
        return [Turn(instruction, response, row.get("system") or "")]
    return turns(row)
