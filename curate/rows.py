"""The one row model: a conversation is a list of turns ``(system, instruction, response)``.

Every module that needs "a row's instruction" or "the response to turn t" asks here; nothing else
walks a conversation's messages. A turn is a user message and the assistant message that answers it
(``response`` is None when the user message is the last one, as in instruction-only pools).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from curate.errors import OptionError

Conversation = Sequence[Mapping[str, str]]
TEXT_KINDS = ("instruction", "conversation", "response")


@dataclass(frozen=True)
class Turn:
    instruction: str
    response: str | None
    system: str = ""

    @property
    def has_response(self) -> bool:
        """Whether the turn has a reply with any text: a blank reply is no reply to judge, score or learn from."""
        return bool(self.response and self.response.strip())


def turns(conversation: Conversation) -> list[Turn]:
    """The user turns of a conversation, each with its reply and the system message in force (the latest one
    before it). The reply is the last assistant message before the next user message: after tool calls and
    tool results, the answer the user got."""
    open_turns: list[list[str | None]] = []  # [instruction, reply, system], the last one still taking its reply
    system = ""
    for message in conversation:  # one pass: every step reads the turns of every row
        role = message["role"]
        if role == "system":
            system = message["content"]
        elif role == "user":
            open_turns.append([message["content"], None, system])
        elif role == "assistant" and open_turns:  # one before any user message answers nothing
            open_turns[-1][1] = message["content"]
    return [Turn(instruction, reply, sys_) for instruction, reply, sys_ in open_turns]


def row_text(conversation: Conversation, text: str = "instruction", option: str = "text=") -> str:
    """One text for a whole row: its user turns, its assistant turns, or the conversation, joined.

    This is what row-level steps read (embeddings, dedup, the tagger's query). ``option``: how the error for an unknown
    ``text`` names the caller's option (``curate embed``'s ``--text``, a selector's ``--param text=``).
    """
    if text == "instruction":
        return "\n\n".join(m["content"] for m in conversation if m["role"] == "user")
    if text == "response":
        return "\n\n".join(m["content"] for m in conversation if m["role"] == "assistant")
    if text == "conversation":
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in conversation)
    raise OptionError(f"{option} must be one of {', '.join(TEXT_KINDS)}, got {text!r}")


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
