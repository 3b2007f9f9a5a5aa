"""Markdown code in a reply, by CommonMark's fence rule: the ``unclosed_code_fence`` rule, the data a looping reply
ends in, and the code the ``template_tokens`` rule does not read (``curate.select.heuristics``)."""

from __future__ import annotations

import re

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$", re.MULTILINE)
_INLINE_CODE = re.compile(r"(`+)(?!`)(.+?)(?<!`)\1(?!`)")  # a code span on one line: `x`, ``a ` b``


def unclosed_fence(text: str) -> bool:
    """True when a fenced code block is opened and never closed, by CommonMark's rule: a block opened by a run of
    three or more backticks (or tildes) is closed by a line of the same character at least as long, so a reply that
    shows a fence inside a longer one is closed. A backtick line whose text holds a backtick (```[1, 2]```) is
    inline code, not a fence."""
    return fence_state(text)[0] is not None


def fence_state(text: str) -> tuple[str | None, int]:
    """(the fence of the block still open at the end of ``text``, else None; where the last block opened, -1 if
    none did), by :func:`unclosed_fence`'s rule."""
    open_fence, opened_at, _ = _walk(text)
    return open_fence, opened_at


def closed_code_blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) of each closed fenced code block of ``text``, fence lines included; a block never closed is left
    out (a reply cut off inside code: what follows its fence may be prose the generation ran on into)."""
    return _walk(text)[2]


def _walk(text: str) -> tuple[str | None, int, list[tuple[int, int]]]:
    """(the fence still open at the end, where the last block opened, the closed blocks), fence line by line."""
    open_fence: str | None = None
    opened_at = -1
    blocks: list[tuple[int, int]] = []
    for match in FENCE.finditer(text):
        marker, rest = match.group(1), match.group(2).strip()
        if open_fence is None:
            if not (marker[0] == "`" and "`" in rest):
                open_fence, opened_at = marker, match.start()
        elif marker[0] == open_fence[0] and len(marker) >= len(open_fence) and not rest:
            open_fence = None
            blocks.append((opened_at, match.end()))
    return open_fence, opened_at, blocks


def blank_code(text: str) -> str:
    """``text`` with its closed fenced code blocks and its inline code spans (```x```, `` `x` ``) turned into spaces,
    each offset kept: the prose of a reply, for a rule about what the reply says rather than the code it shows. The
    fence lines stay ("``` [/INST]" is a generation running past a block it closed)."""
    chars = list(text)
    for start, end in closed_code_blocks(text):
        chars[start:end] = " " * (end - start)
        for fence in FENCE.finditer(text, start, end):
            chars[fence.start():fence.end()] = text[fence.start():fence.end()]
    for match in _INLINE_CODE.finditer("".join(chars)):
        chars[match.start():match.end()] = " " * (match.end() - match.start())
    return "".join(chars)
