"""Markdown code in a reply, by CommonMark's fence rule: the ``unclosed_code_fence`` rule, the data a looping reply
ends in, and the code the ``template_tokens`` rule does not read (``curate.select.heuristics``)."""

from __future__ import annotations

import re

FENCE = re.compile(r"^[ \t]*(`{3,}|~{3,})(.*)$", re.MULTILINE)
_LIST_ITEM = re.compile(r"[ ]*([-*+]|\d{1,9}[.)])([ ]+|$)")  # a list item's marker and the spaces after it
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


def blank_code(text: str, indented: bool = False) -> str:
    """``text`` with its closed fenced code blocks and its inline code spans (```x```, `` `x` ``) turned into spaces
    (line ends kept), each offset kept: the prose of a reply, for a rule about what the reply says rather than the code it shows. The
    fence lines stay ("``` [/INST]" is a generation running past a block it closed). With ``indented``, Markdown's
    indented code blocks too (:func:`indented_code_blocks`)."""
    chars = list(text)
    for start, end in closed_code_blocks(text):  # its line ends kept: an indented line after it starts a line
        chars[start:end] = [c if c == "\n" else " " for c in text[start:end]]
        for fence in FENCE.finditer(text, start, end):
            chars[fence.start():fence.end()] = text[fence.start():fence.end()]
    for match in _INLINE_CODE.finditer("".join(chars)):
        chars[match.start():match.end()] = " " * (match.end() - match.start())
    if indented:
        for start, end in indented_code_blocks("".join(chars)):
            chars[start:end] = [c if c == "\n" else " " for c in chars[start:end]]
    return "".join(chars)


def indented_code_blocks(text: str) -> list[tuple[int, int]]:
    """(start, end) of each of Markdown's indented code blocks of ``text``: a run of lines indented four spaces (or a
    tab) more than the list item they stand in (none: the margin), that opens the text or follows a blank line (an
    indented line cannot interrupt a paragraph), blank lines inside it included. A line indented under a list item
    ("- item", "1. item") up to its content's column plus three continues the item: it is prose, not code."""
    blocks: list[tuple[int, int]] = []
    items: list[int] = []  # the content column of each list item open, the innermost last
    start, block_end, after_blank, pos = -1, -1, True, 0
    for line in text.splitlines(keepends=True):
        body = line.rstrip("\r\n")
        spaces = body.expandtabs(4)
        indent = len(spaces) - len(spaces.lstrip())
        if not body.strip():
            after_blank = True
            pos += len(line)
            continue
        if after_blank and start < 0:  # after a blank line, a line left of an item's content closes that item
            while items and indent < items[-1]:
                items.pop()
        if indent >= (items[-1] if items else 0) + 4 and (start >= 0 or after_blank):
            start, block_end = (pos if start < 0 else start), pos + len(body)
        else:
            if start >= 0:
                blocks.append((start, block_end))
                while items and indent < items[-1]:
                    items.pop()
            if item := _LIST_ITEM.match(spaces):
                while items and indent < items[-1]:  # a sibling or an outer item
                    items.pop()
                marker_end = item.end(1)
                gap = item.end() - marker_end
                items.append(marker_end + (gap if 1 <= gap <= 4 else 1))  # five spaces or more: code after one
            start, after_blank = -1, False
        pos += len(line)
    if start >= 0:
        blocks.append((start, block_end))
    return blocks
