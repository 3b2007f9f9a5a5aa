"""The ``template_tokens`` rule of ``curate.select.heuristics``: a reply holding a chat template's role or turn marker
(``[/INST]``, ``<|im_end|>``, ``### Human:``...) that a generation wrote when it ran past the end of its turn, often
going on to invent the user's next turn ("... [/INST]\\n\\n[INST] Can you give me some examples ...").

A marker is only a leak in the reply's prose: one inside a closed code block or an inline code span, one between
quotes, one with a word naming it near ("[INST] and [/INST] tags", "the </s> token"), or any in a conversation about
chat templates, tokenizers or special tokens is what the reply is about. A marker the user's turns hold is no
excuse: a multi-turn row flattened into one prompt carries the earlier answer's leak there, and its reply's own. Bare ``User:`` / ``Human:`` / ``Assistant:`` lines are left alone: a dialogue the
user asked for is written with them. ``</s>`` closing an ``<s>`` of its line is HTML's strikethrough.
"""

from __future__ import annotations

import re
from typing import Any

from curate.select.fences import blank_code

# Llama 2 / Mistral ([INST], <<SYS>>; "[/IST]" is a misspelling small models copy), ChatML, Llama 3, Gemma,
# Zephyr / Phi-3, the end-of-sequence tokens (</s>, Gemma's <eos>), and Vicuna v0's turn headers at a line's start
TEMPLATE_TOKEN = re.compile(r"\[/?INST\]|\[/IST\]|<</?SYS>>|<\|(?:im_start|im_end|endoftext|eot_id|eom_id|begin_of_text|"
                            r"start_header_id|end_header_id|user|assistant|system|end)\|>|<(?:start|end)_of_turn>|"
                            r"</s>|<eos>|^[ \t]*#{2,3} ?(?:Human|Assistant):", re.MULTILINE)
_TOKEN_PARTS = ("INST]", "IST]", "SYS>>", "<|", "_of_turn>", "</s>", "<eos>", "Human:", "Assistant:")  # one is in each marker
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
# a conversation about the markers themselves: how a model's prompt is formatted or tokenized
ABOUT_TEMPLATES = re.compile(r"\b(chat|prompt|conversation)[ _-]?(template|format)s?\b|\btokeni[sz]ers?\b|"
                             r"\b(special|stop|eos|bos|control|end[ -]of[ -](text|turn|sequence))[ _-]tokens?\b|\bchatml\b",
                             re.IGNORECASE)
_MARKER_WORD = re.compile(r"\b(tag|token|marker|delimiter)s?\b", re.IGNORECASE)
NAMED_WITHIN = 30  # characters either side of a marker read for a word naming it ("tag", "token")
EVIDENCE_CHARS = 40  # characters either side of the marker shown as the evidence


def leaked_template_token(reply: str, others: str) -> dict[str, Any] | None:
    """{token, evidence} for the first chat-template marker of ``reply``'s prose (module doc), else None;
    ``others``: the conversation's other turns (the user's), read for their topic: a conversation about templates
    or tokenizers is no leak."""
    if not any(part in reply for part in _TOKEN_PARTS) or TEMPLATE_TOKEN.search(reply) is None:  # most replies
        return None
    if ABOUT_TEMPLATES.search(others) or ABOUT_TEMPLATES.search(reply):
        return None
    prose = blank_code(reply)
    for match in TEMPLATE_TOKEN.finditer(prose):
        token = match.group(0).strip()
        if _quoted(prose, match.start(), match.end()) or _named(prose, match) or _strikethrough(prose, match):
            continue
        start, end = match.start() + match.group(0).index(token), match.end()
        evidence = reply[max(0, start - EVIDENCE_CHARS):end + EVIDENCE_CHARS]
        return {"token": token, "evidence": evidence}
    return None


def _quoted(text: str, start: int, end: int) -> bool:
    """True when ``text[start:end]`` stands between a pair of quotes: named, not written as a turn's end."""
    before, after = text[start - 1:start], text[end:end + 1]
    return before in _QUOTES and after == _QUOTES[before]


def _named(text: str, match: re.Match[str]) -> bool:
    """True when a word such as "tag" or "token" stands near the marker on its line ("wrap it in [INST] and [/INST]
    tags", "the <|im_end|> token"): the reply names the marker."""
    line_start = text.rfind("\n", 0, match.start()) + 1
    line_end = text.find("\n", match.end())
    line_end = len(text) if line_end < 0 else line_end
    near = text[max(line_start, match.start() - NAMED_WITHIN):min(line_end, match.end() + NAMED_WITHIN)]
    return _MARKER_WORD.search(near) is not None


def _strikethrough(text: str, match: re.Match[str]) -> bool:
    """True when the marker is ``</s>`` closing an ``<s>`` opened earlier on its line (HTML's struck-out text)."""
    if match.group(0) != "</s>":
        return False
    line_start = text.rfind("\n", 0, match.start()) + 1
    return "<s>" in text[line_start:match.start()]
