"""Axis scales for the plots: histogram bins and scatter jitter that survive constant columns and
ranges wider than a float (e.g. -1e308 .. 1e308, drawn on a symlog axis), and category names short enough for an
axis."""

from __future__ import annotations

import functools
import math

import numpy as np

MIN_HISTOGRAM_BINS, MAX_HISTOGRAM_BINS = 5, 30
CONSTANT_RELATIVE_RANGE = 1e-9  # a column whose range is below this share of its magnitude is drawn as one bar
SCATTER_JITTER = 0.02  # share of an axis' range: scores often sit on a grid
CONSTANT_BAR = 0.05  # half-width of a constant column's one bar, a share of its scale (its axis spans one scale)
TICK_LABEL_CHARS = 40  # a category's name on an axis is cut to this many characters


def value_span(values: np.ndarray) -> tuple[float, float, float]:
    """(min, max, scale) of finite ``values``, scale = max(1, |min|, |max|): the unit "nearly constant" is judged in."""
    lo, hi = float(values.min()), float(values.max())
    return lo, hi, max(1.0, abs(lo), abs(hi))


def is_nearly_constant(lo: float, hi: float, scale: float) -> bool:
    """True when ``hi - lo`` is below ``CONSTANT_RELATIVE_RANGE`` of ``scale`` (float noise, e.g. 1.0 +- 1e-16)."""
    return hi - lo < CONSTANT_RELATIVE_RANGE * scale


def range_overflows(lo: float, hi: float) -> bool:
    """True when ``hi - lo`` does not fit in a float (e.g. -1e308 .. 1e308): such an axis is drawn symlog."""
    return not math.isfinite(float(hi) - float(lo))  # Python floats: overflow gives inf, no numpy warning


def _symlog(v: np.ndarray | float) -> np.ndarray:
    return np.sign(v) * np.log10(1 + np.abs(v))


def _symlog_inverse(t: np.ndarray) -> np.ndarray:
    return np.sign(t) * (10 ** np.abs(t) - 1)


def histogram_bins(values: np.ndarray, max_bins: int = MAX_HISTOGRAM_BINS, min_bins: int = MIN_HISTOGRAM_BINS
                   ) -> np.ndarray:
    """Bin edges for finite ``values``: about sqrt(n) equal bins (``min_bins``..``max_bins``); one bin
    around the value when the column is (nearly) constant, where equal bins would have no width; bins
    equal on a symlog axis when the range does not fit in a float."""
    lo, hi, scale = value_span(values)
    if is_nearly_constant(lo, hi, scale):
        centre = lo / 2 + hi / 2  # a narrow bar: one from 1 to 3 read as values spread from 1 to 3
        return np.array([centre - CONSTANT_BAR * scale, centre + CONSTANT_BAR * scale])
    n_bins = min(max_bins, max(min_bins, int(len(values) ** 0.5)))
    if range_overflows(lo, hi):
        edges = _symlog_inverse(np.linspace(_symlog(lo), _symlog(hi), n_bins + 1))
        edges[[0, -1]] = lo, hi  # exact ends: the round trip through log10 may step past the extremes
        return edges
    return np.histogram_bin_edges(values, bins=n_bins)


def constant_view(values: np.ndarray) -> tuple[float, float] | None:
    """The x range to show a (nearly) constant column's one narrow bar in: one scale around it; None otherwise."""
    lo, hi, scale = value_span(values)
    if not is_nearly_constant(lo, hi, scale):
        return None
    centre = lo / 2 + hi / 2
    return centre - scale / 2, centre + scale / 2


def jitter(values: np.ndarray) -> float:
    """Half-width of the scatter jitter for finite ``values``: a share of their range (of their scale when
    the range is float noise); 0 when the range does not fit in a float (a symlog axis: one share of the range
    would carry the small values across the whole axis)."""
    lo, hi, scale = value_span(values)
    if range_overflows(lo, hi):
        return 0.0
    return SCATTER_JITTER * scale if is_nearly_constant(lo, hi, scale) else 2 * SCATTER_JITTER * (hi / 2 - lo / 2)


def tick_label(text: str, max_chars: int = TICK_LABEL_CHARS) -> str:
    """``text`` as an axis label: its start and end around an ellipsis when longer than ``max_chars`` (a 2,000-character
    source made a 21517-pixel-wide picture), ``$`` written as itself (matplotlib reads ``$..$`` as maths)."""
    if len(text) > max_chars:
        tail = max_chars // 3
        text = f"{text[:max_chars - tail - 1]}…{text[-tail:]}"
    return drawable(text).replace("$", r"\$")


def drawable(text: str) -> str:
    """``text`` with each character no font matplotlib draws with holds written as its escape (``\\u4e2d``): drawn,
    it was an empty box (two Chinese sources of one length looked the same) and a warning on stderr per character."""
    if text.isascii():
        return text
    have = _font_codepoints(_font_families())
    return "".join(c if ord(c) in have or c in "…" else c.encode("unicode_escape").decode("ascii") for c in text)


def _font_families() -> tuple[str, ...]:
    """The font names matplotlib falls back through for text, as ``rcParams`` set them now (a generic family such
    as ``sans-serif`` stands for its list)."""
    from matplotlib import rcParams

    generic = {"serif", "sans-serif", "cursive", "fantasy", "monospace"}
    return tuple(name for family in rcParams["font.family"]
                 for name in (rcParams[f"font.{family}"] if family in generic else [family]))


@functools.lru_cache(maxsize=8)
def _font_codepoints(families: tuple[str, ...]) -> frozenset[int]:
    """The characters any installed font of ``families`` has a glyph for."""
    from matplotlib import font_manager, ft2font

    codepoints: set[int] = set()
    for name in families:
        try:
            path = font_manager.findfont(font_manager.FontProperties(family=name), fallback_to_default=False)
        except ValueError:  # not installed
            continue
        codepoints.update(ft2font.FT2Font(path).get_charmap())
    return frozenset(codepoints)
