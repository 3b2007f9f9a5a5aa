"""HTML building blocks shared by the report page and the notebook views: the stylesheet, tables,
number formatting, text shortening (never mid-word) and conversations."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable
from functools import cache
from importlib.resources import files
from typing import Any

from curate.llm.base import format_usd


@cache
def css() -> str:
    """The stylesheet (``assets/report.css``), read once; every rule is scoped, so notebooks can inline it."""
    return files("curate.report").joinpath("assets", "report.css").read_text(encoding="utf-8")


# C0 controls but tab and newline, DEL, C1 controls, and the bidi overrides and isolates: in a terminal ESC starts
# colour and title (OSC) sequences, CR overwrites the line, U+202E reverses the text after it
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)}
_CONTROLS |= {c: f"\\u{c:04x}" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A))}


def visible_controls(text: str) -> str:
    """``text`` for a terminal or a text repr: its control characters written as escapes (``\\x1b``, ``\\u202e``),
    so a row's text can neither restyle the terminal nor reverse curate's own text after it. A Windows line end
    (CR LF) is a line end, not an escape."""
    return text.replace("\r\n", "\n").translate(_CONTROLS)


def style() -> str:
    return f"<style>{css()}</style>"


def esc(value: Any) -> str:
    return html.escape(str(value))


NOT_A_NUMBER = "–"  # a float cell that holds no number (NaN): never "nan"
LONG_WORD = 30  # a cell with a run of this many characters without a space (a path, a model name) breaks anywhere
PLAIN_DIGITS = (1e-4, 1e15)  # floats outside this magnitude are written with an exponent, e.g. 4e-05, 1e+300


def fmt(v: Any) -> str:
    """A cell for people: thousands separators, a few significant decimals, nothing for None; NaN as
    ``NOT_A_NUMBER``, infinities as ±∞, and very small or very large magnitudes with an exponent (never 404
    digits, nor 4e-05 rounded to 0)."""
    if v is None:
        return ""
    if isinstance(v, float):
        if math.isnan(v):
            return NOT_A_NUMBER
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v == 0:
            return "0"  # -0.0 too
        if not PLAIN_DIGITS[0] <= abs(v) < PLAIN_DIGITS[1]:
            return f"{v:.3g}"
        return f"{v:,.4f}".rstrip("0").rstrip(".") if abs(v) < 1 else f"{v:,.2f}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return str(v)


def money(v: float | None) -> str:
    """USD with enough decimals for small runs (:func:`~curate.llm.base.format_usd`: a run's $0.000084 was $0.0000 here
    and $0.00008400 in the CLI); None (or NaN, a price not known) is unknown, never $0 or $nan."""
    return "unknown" if v is None or not math.isfinite(v) else format_usd(v)


def table(headers: list[str], rows: Iterable[list[Any]], numeric: set[int] | None = None,
          classes: dict[int, str] | None = None) -> str:
    """An escaped HTML table (in a :func:`scrolling` box); columns in ``numeric`` are right-aligned."""
    numeric = numeric or set()
    classes = classes or {}

    def cell(i: int, v: Any) -> str:
        text = fmt(v)
        long = "long" if any(len(word) >= LONG_WORD for word in text.split()) else None  # may break anywhere
        cls = " ".join(filter(None, ("n" if i in numeric else classes.get(i), long)))
        return f"<td class='{cls}'>{esc(text)}</td>" if cls else f"<td>{esc(text)}</td>"

    body = "".join("<tr>" + "".join(cell(i, v) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return scrolling("<table class='curate'><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers)
                     + f"</tr>{body}</table>")


def scrolling(table_html: str) -> str:
    """A table in a box that scrolls sideways when the table is wider than the page (17 judge columns)."""
    return f"<div class='curate-scroll'>{table_html}</div>"


def clip(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars`` with a note of how much is left out (for long conversation turns)."""
    return text if len(text) <= max_chars else f"{text[:max_chars]}… ({len(text) - max_chars:,} more characters)"


def shorten(text: str, width: int = 120) -> str:
    """``text`` cut at the last space before ``width``. A first word longer than ``width`` (a path, a model name) is
    kept whole up to twice the width; text without a space that soon (a run of one letter, CJK) is cut at ``width``."""
    if len(text) <= width:
        return text
    cut = text.rfind(" ", 0, width)
    if cut <= 0:
        cut = text.find(" ", width, 2 * width)
        if cut < 0:
            return text[:width] + "…" if len(text) > 2 * width else text
    return text[:cut].rstrip(" ,;") + " …"


def value_text(value: Any, width: int = 120) -> str:
    """A parameter value for people: dicts and lists as ``key = value`` lists, not JSON; long ones shortened."""
    if isinstance(value, dict):
        text = ", ".join(f"{k} = {value_text(v, width)}" for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        text = "; ".join(f"({value_text(v, width)})" if isinstance(v, dict) else value_text(v, width) for v in value)
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return shorten(text, width)


def pairs_html(pairs: list[tuple[str, str]]) -> str:
    """``key = value`` pairs, each kept on one line, separated by semicolons."""
    return "; ".join(f"<span>{esc(k)} = {esc(v)}</span>" for k, v in pairs)  # each span bidi-isolated (CSS)


def cell_text(value: Any, max_chars: int = 200) -> str:
    """A stored value as short text (numbers to 3 significant digits, lists comma-joined, a missing turn –)."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, (list, tuple)):  # a 300-turn row's scores: the list as a whole is clipped
        return clip(", ".join(cell_text(v, max_chars) for v in value), max_chars)
    if isinstance(value, dict):
        return clip(json.dumps(value, default=str, ensure_ascii=False), max_chars)
    return clip(str(value), max_chars)


MAX_TURNS_SHOWN = 12  # a row of hundreds of turns shows its first and last ones


def shown_turns(conversation: list[dict[str, str]], max_turns: int = MAX_TURNS_SHOWN) -> list[dict[str, str]]:
    """The turns a view shows: all, or the first ``max_turns - 2`` and the last two around a note of how many
    were left out (a 300-turn row made one notebook cell or report sample of megabytes)."""
    max_turns = max(max_turns, 3)  # at least one turn, the note and the last two
    if len(conversation) <= max_turns + 1:  # a note in place of one turn says less than the turn
        return conversation
    head, left_out = max_turns - 2, len(conversation) - (max_turns - 2) - 2
    return [*conversation[:head], {"role": "…", "content": f"({left_out:,} turns left out)"}, *conversation[-2:]]


def conversation_html(conversation: list[dict[str, str]], max_chars: int = 2000) -> str:
    """A conversation as HTML turns (role label + text kept as written, HTML-escaped); long ones cut to their
    first and last turns (:func:`shown_turns`)."""
    parts = []
    for turn in shown_turns(conversation):
        role = str(turn.get("role", "?"))
        content = str(turn.get("content") or "")
        shown = clip(content, max_chars)  # the text isolated (<bdi>): a U+202E in it cannot reverse curate's note
        body = (f"<bdi>{esc(content[:max_chars])}</bdi>{esc(shown[max_chars:])}" if content.strip()
                else "<i>(empty)</i>")
        parts.append(f'<div class="turn {esc(role)}"><span class="role"><bdi>{esc(role)}</bdi></span>'
                     f'<div class="text">{body}</div></div>')
    return '<div class="conv">' + "".join(parts) + "</div>"


def conversation_text(conversation: list[dict[str, str]], max_chars: int = 2000) -> str:
    """A conversation as plain text, one ``[role] text`` block per turn."""
    return "\n".join(f"[{t.get('role')}] {clip(str(t.get('content') or ''), max_chars)}"
                     for t in shown_turns(conversation))
