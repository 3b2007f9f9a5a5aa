"""The ``template_tokens`` rule of ``curate.select.heuristics``: a reply holding a chat template's role or turn marker
(``[/INST]``, ``<|im_end|>``, ``### Human:``...) that a generation wrote when it ran past the end of its turn, often
going on to invent the user's next turn ("... [/INST]\\n\\n[INST] Can you give me some examples ...").

A marker is only a leak in the reply's prose: one inside a closed code block or an inline code span, one between
quotes, one with a word naming it near ("[INST] and [/INST] tags", "the </s> token"), or any in a conversation about
chat templates, tokenizers or special tokens is what the reply is about. A marker the user's turns hold is no
excuse: a multi-turn row flattened into one prompt carries the earlier answer's leak there, and its reply's own. Bare ``User:`` / ``Human:`` / ``Assistant:`` lines are left alone: a dialogue the
user asked for is written with them. ``</s>`` closing an ``<s>`` opened before it is HTML's strikethrough. An
end-of-sequence marker (``</s>``, ``<|endoftext|>``, ``<|im_end|>``...) with nothing but whitespace or other end
markers after it is a reply that stopped where it should: some exported pools store every reply with its EOS text.
Code is what a fenced or an indented (four spaces) block shows, an inline code span, or a string literal on its line
(``prompt = f"<s>[INST] {q} [/INST]"``); an ``[INST] ... [/INST]`` pair around a placeholder inside a sentence
names the template ("Mistral wraps each user message in [INST] ... [/INST]"); one opening a line or a sentence, or
around a whole question, is a leaked turn.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

from curate.select.fences import blank_code

# Llama 2 / Mistral ([INST], <<SYS>>; "[/IST]" is a misspelling small models copy), ChatML, Llama 3, Gemma,
# Zephyr / Phi-3, the end-of-sequence tokens (</s>, Gemma's <eos>), and Vicuna v0's turn headers at a line's start
TEMPLATE_TOKEN = re.compile(r"\[/?INST\]|\[/IST\]|<</?SYS>>|<\|(?:im_start|im_end|endoftext|eot_id|eom_id|begin_of_text|"
                            r"start_header_id|end_header_id|user|assistant|system|end)\|>|<(?:start|end)_of_turn>|"
                            r"</s>|<eos>|^[ \t]*#{2,3} ?(?:Human|Assistant):", re.MULTILINE)
# a marker, or a start-of-sequence <s>, with the role name a turn marker opens ("<|im_start|>assistant")
_MARKER_WITH_ROLE = re.compile(rf"(?:{TEMPLATE_TOKEN.pattern}|<s>)(?:[ \t]*\n?[ \t]*(?:user|assistant|system|model)\b)?",
                               re.MULTILINE)
# the markers a generation ends with: with nothing after them (but whitespace, or another of them) a reply that stopped
END_MARKERS = ("</s>", "<eos>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>")
_TOKEN_PARTS = ("INST]", "IST]", "SYS>>", "<|", "_of_turn>", "</s>", "<eos>", "Human:", "Assistant:")  # one is in each marker
_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u00ab": "\u00bb"}
# a conversation about the markers themselves: how a model's prompt is formatted or tokenized
ABOUT_TEMPLATES = re.compile(r"\b(chat|prompt|conversation)[ _-]?(template|format)s?\b|\btokeni[sz]ers?\b|"
                             r"\b(special|stop|eos|bos|control|end[ -]of[ -](text|turn|sequence))[ _-]tokens?\b|\bchatml\b",
                             re.IGNORECASE)
# a word naming the marker near it: what it is, what it does ("emits <eos>", "separates documents with
# <|endoftext|>"), or the model family whose template it is ("GPT-2's <|endoftext|>", "ChatML's <|im_start|>")
_MARKER_WORD = re.compile(r"\b(tag|token|marker|delimiter|symbol|string|sequence)s?\b|\b(format|wrap|emit|separat)(s|e|es|ed|ted|ped|"
                          r"ting|ping|ing|ors?)?\b|"
                          r"\b(end[ -]of[ -](sequence|text|turn)|eos|bos|llama[- ]?\d*|mistral|gpt-?2|chatml|gemma|"
                          r"phi-?\d*|vicuna|zephyr|qwen\d*)\b", re.IGNORECASE)
# a string literal of a line of code: "...", or '...' whose quotes are no apostrophes (it's, the users')
_STRING_LITERAL = re.compile(r"\"[^\"\n]*\"|(?<!\w)'[^'\n]*'(?!\w)")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
PLACEHOLDER_CHARS = 30  # longest text between an [INST] and its [/INST] read as a placeholder ("...", "{prompt}")
NAMED_WITHIN = 30  # characters either side of a marker read for a word naming it ("tag", "token")
STRUCK_CHARS = 2000  # longest HTML <s>...</s> span read as struck-out text
_TURN_OPENERS = frozenset({"[INST]", "<|im_start|>", "<|start_header_id|>", "<start_of_turn>", "<|user|>",
                           "<|assistant|>", "<|system|>"})  # what begins an invented turn, with ### Human: ...
EVIDENCE_CHARS = 40  # characters either side of the marker shown as the evidence


def leaked_template_token(reply: str, others: str) -> dict[str, Any] | None:
    """{token, evidence} for the first chat-template marker of ``reply``'s prose (module doc), else None;
    ``others``: the conversation's other turns (the user's), read for their topic: a conversation about templates
    or tokenizers is no leak."""
    if not any(part in reply for part in _TOKEN_PARTS) or TEMPLATE_TOKEN.search(reply) is None:  # most replies
        return None
    if ABOUT_TEMPLATES.search(others) or ABOUT_TEMPLATES.search(reply):
        return None
    prose = blank_code(reply, indented=True)
    # the string literals, once per reply (none crosses a line's end, so they are each line's): a marker's own
    # search of its line made a 200 KB one-line loop of excused markers take 73 s
    literals = [(m.start(), m.end()) for m in _STRING_LITERAL.finditer(prose)]
    for match in TEMPLATE_TOKEN.finditer(prose, 0, stopped_at(prose)):
        token = match.group(0).strip()
        if (_quoted(prose, match.start(), match.end(), literals) or _named(prose, match)
                or _strikethrough(prose, match) or _inst_pair_in_prose(prose, match)):
            continue
        start, end = match.start() + match.group(0).index(token), match.end()
        evidence = reply[max(0, start - EVIDENCE_CHARS):end + EVIDENCE_CHARS]
        return {"token": token, "evidence": evidence}
    return None


def stopped_at(text: str) -> int:
    """Where ``text`` ends once the end-of-sequence markers (``END_MARKERS``) and whitespace it ends with are taken
    off: a marker there is the reply's clean stop, not a leak."""
    end = len(text.rstrip())
    while marker := next((m for m in END_MARKERS if text.endswith(m, 0, end)), None):
        end = len(text[:end - len(marker)].rstrip())
    return end


def markers_only(text: str) -> bool:
    """True when ``text`` holds a chat-template marker (``TEMPLATE_TOKEN``, or a start-of-sequence ``<s>``) and
    nothing else but whitespace and the role a marker opens ("<s>", "</s>", "[/INST]", "<|im_start|>assistant\\n
    <|im_end|>"): a reply with no content, whatever else a rule makes of its markers."""
    if not any(part in text for part in _TOKEN_PARTS + ("<s>",)):
        return False
    left = _MARKER_WITH_ROLE.sub("", text)
    return left != text and not left.strip()


def _line_window(text: str, start: int, end: int, reach: int) -> tuple[int, int]:
    """The bounds of ``text`` at most ``reach`` characters before ``start`` and after ``end`` that stay on their line
    (searched within reach only: a one-line reply of thousands of markers made each search run to its ends)."""
    lo, hi = max(0, start - reach), min(len(text), end + reach)
    newline = text.rfind("\n", lo, start)
    after = text.find("\n", end, hi)
    return (lo if newline < 0 else newline + 1), (hi if after < 0 else after)


def _opens_turn(text: str, match: re.Match[str]) -> bool:
    """True when the marker begins its line or a sentence and begins a turn (``[INST]``, ``### Human:``...): the
    words after it are the invented turn's ("### Human: Can you format that as a table?"), never its name."""
    token = match.group(0).strip()
    if token not in _TURN_OPENERS and not token.startswith("#"):
        return False
    lo, _ = _line_window(text, match.start(), match.end(), NAMED_WITHIN)
    before = text[lo:match.start()].replace("<s>", "").rstrip()
    return not before or before[-1] in ".!?"


def _quoted(text: str, start: int, end: int, literals: list[tuple[int, int]]) -> bool:
    """True when ``text[start:end]`` stands between a pair of quotes, or inside one of the string ``literals``
    (``f"<s>[INST] {q} [/INST]"``): named or shown as code, not written as a turn's end."""
    before, after = text[start - 1:start], text[end:end + 1]
    if before in _QUOTES and after == _QUOTES[before]:
        return True
    at = bisect.bisect_left(literals, (start,)) - 1  # the literal opening last before the marker (none overlap)
    return at >= 0 and literals[at][0] < start and end < literals[at][1]


def _named(text: str, match: re.Match[str]) -> bool:
    """True when a word such as "tag" or "token" (``_MARKER_WORD``) stands near the marker in its sentence ("wrap it
    in [INST] and [/INST] tags", "the <|im_end|> token", "until it emits <eos>"): the reply names the marker. A word
    of the sentence before is not read ("... two input strings. [/INST] This function" is a leak), nor the words
    after a marker that opens a turn (:func:`_opens_turn`)."""
    if _opens_turn(text, match):
        return False
    line_start, line_end = _line_window(text, match.start(), match.end(), NAMED_WITHIN)
    before = text[line_start:match.start()]
    before = _SENTENCE_END.split(before)[-1]
    after = _SENTENCE_END.split(text[match.end():line_end])[0]
    return _MARKER_WORD.search(f"{before} {after}") is not None  # the marker left out: <eos> holds "eos"


def _strikethrough(text: str, match: re.Match[str]) -> bool:
    """True when the marker is ``</s>`` closing an ``<s>`` opened before it (HTML's struck-out text, on its line or
    over several, within ``STRUCK_CHARS`` and no blank line) and not closed since. An ``<s>`` opening the reply is
    a start-of-sequence marker, not HTML."""
    if match.group(0) != "</s>":
        return False
    opened = text.rfind("<s>", max(0, match.start() - STRUCK_CHARS), match.start())
    if opened < 0 or not text[:opened].strip():
        return False
    span = text[opened:match.start()]
    return "</s>" not in span and "\n\n" not in span


def _inst_pair_in_prose(text: str, match: re.Match[str]) -> bool:
    """True when the marker is ``[INST]`` or ``[/INST]`` of a pair inside a sentence of one line, around a
    placeholder of at most ``PLACEHOLDER_CHARS`` characters ("Mistral wraps each user message in [INST] ... [/INST]":
    the reply names the template). An ``[INST]`` opening its line or a sentence ("... any other questions. [INST]
    Prove that ... [/INST] To prove"), or around a whole question, is a turn a generation wrote."""
    # the line within reach of the pair: a one-line reply of thousands of markers made each search run to its ends
    line_start, line_end = _line_window(text, match.start(), match.end(), PLACEHOLDER_CHARS + 2 * NAMED_WITHIN)
    if match.group(0) == "[INST]":
        opening, closing = match.start(), text.find("[/INST]", match.end(), line_end)
    elif match.group(0) == "[/INST]":
        opening, closing = text.rfind("[INST]", line_start, match.start()), match.start()
    else:
        return False
    inner = text[opening + len("[INST]"):closing].strip() if opening >= 0 and closing >= 0 else None
    # a placeholder ("...", "{prompt}", "user message"), not a question or a sentence a generation wrote
    if inner is None or len(inner) > PLACEHOLDER_CHARS or any(c in inner for c in "?!") or \
            (inner.endswith(".") and inner.strip(".…") != ""):
        return False
    before = text[line_start:opening].replace("<s>", "").rstrip()
    return bool(before) and (before[-1].isalnum() or before[-1] in ",:;(")  # inside a sentence
