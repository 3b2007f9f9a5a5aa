"""The judge's scale a scorer's labels are on: given (``label_scale=``, ``--label-scale``), declared by the judge's
provenance, or inferred from the labels as the smallest standard judge scale that holds nearly all of them.

The scale, not the labels' span, is what a scorer maps onto DEITA's 1-6: labels 3..9 of a 1-10 judge map to
2.1..5.4, not to 1..6. Labels outside the scale are left out of training and counted with a reason, never clipped.

Inference (:func:`infer_scale`), on the finite labels:

1. ``nearly_all``: the smallest of :data:`STANDARD_SCALES` (by width) holding at least 99% of them
   (:data:`NEARLY_ALL`) where no label outside it is near it (held by a standard scale under 10x as high: Auto-J's
   GPT-4 labels, 99.x% on 1-7 and a few 8-10s, are on 1-10; a 95 among 1-10 labels, or a -1, is a stray); none:
   refused (the labels are on no standard scale: say which with ``--label-scale``).
2. ``narrower``: the widest standard scale whose top is at least :data:`MIXED_RATIO` times below ``nearly_all``'s
   (1-10 under 1-100, 0-1 under 1-10). When it holds at least half the labels and more than 1% lie above it, the
   labels look like two scales mixed (MT-bench's GPT-4 labels: 2,400 on 1-10 and 34 on 1-100): refused, naming the
   counts, rather than guessed. (A label of 1 is not counted as 0-1's: it is a 1-10 judge's lowest too.) A judge
   whose labels really are 0-100 with half of them at 10 or below needs ``--label-scale``. Scales closer than
   that (1-5 and 1-10) cannot be told apart from a judge that uses only part of its scale: not checked.
3. Otherwise ``nearly_all`` is the scale; the (at most 1%) labels outside it are left out and counted.

Labels that are no judge's levels (not an LLM judge's column, and under :data:`ON_A_GRID` of them whole or half
numbers: a reward model's score, a signal such as IFD, an imported expected score) are read on the standard scale of step 1 only where their span covers at
least half of it (expected scores 1.2..5.9 on 1-6), else on their own span (``span``: IFD's 0..1.6 is no 0-10
judge's), and are never refused as two scales mixed; judge levels no standard scale holds (a -1 "unknown" beside
1-10 in numbers) are refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from curate.errors import ScorerOptionError, python_and_cli

# Judge scales in use, narrowest first: a probability or binary label; Likert scales (UltraFeedback/FLASK 1-5,
# DEITA 1-6, 1-7); MT-bench / Auto-J / AlpaGasus 1-10 and 0-10; percentages.
STANDARD_SCALES: tuple[tuple[float, float], ...] = ((0.0, 1.0), (1.0, 5.0), (1.0, 6.0), (1.0, 7.0), (1.0, 10.0),
                                                    (0.0, 10.0), (1.0, 100.0), (0.0, 100.0))
NEARLY_ALL = 0.99   # share of the labels the inferred scale must hold; the rest are left out
MIXED_RATIO = 10    # a scale this many times wider than the one holding most labels: two scales mixed
ON_A_GRID = 0.9     # share of whole or half numbers below which labels are a continuous score, not a judge's


@dataclass(frozen=True)
class JudgeScale:
    """The scale labels are read on, and how it was chosen: ``given`` (the caller's), ``declared`` (the judge's
    provenance) or ``inferred`` (:func:`infer_scale`)."""

    low: float
    high: float
    how: str

    @property
    def bounds(self) -> tuple[float, float]:
        return (self.low, self.high)

    def text(self) -> str:
        """``1-10``: the scale as a user writes it (a span: ``-2.3..3.7``)."""
        return f"{self.low:.3g}..{self.high:.3g}" if self.how == "span" else f"{self.low:g}-{self.high:g}"

    def holds(self, value: float) -> bool:
        return self.low <= value <= self.high

    def outside_reason(self) -> str:
        """The reason code counted for a label this scale does not hold."""
        return f"label outside the judge's {self.text()} scale ({self.how})"

    def to_dict(self) -> dict[str, object]:
        return {"scale": [self.low, self.high], "how": self.how}


def parse_label_scale(value: str | Sequence[float] | None) -> tuple[float, float] | None:
    """``"1,10"`` (the CLI's) or ``(1, 10)`` as (low, high); a value that is not two finite numbers, low below high,
    is a ScorerOptionError naming the option."""
    if value is None:
        return None
    option = python_and_cli("label_scale=", "--label-scale")
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        low, high = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise ScorerOptionError(f"{option} {value!r}: the judge's scale as LOW,HIGH, e.g. 1,10") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ScorerOptionError(f"{option} {value!r}: two finite numbers, the lower first (e.g. 1,10)")
    return (low, high)


def _near(value: float, scale: tuple[float, float]) -> bool:
    """Whether a label outside ``scale`` is the judge's own tail rather than a stray: a standard scale under
    :data:`MIXED_RATIO` times as high holds it (an 8 beside labels 1..7 is a 1-10 judge's; a 95 beside 1..10 or a
    -1 is not)."""
    return any(lo <= value <= hi and hi < MIXED_RATIO * scale[1] for lo, hi in STANDARD_SCALES)


def _nearly_all(labels: Sequence[float]) -> tuple[float, float] | None:
    """The smallest standard scale holding :data:`NEARLY_ALL` of ``labels``, none of the rest near it."""
    for scale in STANDARD_SCALES:
        outside = [v for v in labels if not scale[0] <= v <= scale[1]]
        if len(outside) <= (1 - NEARLY_ALL) * len(labels) and not any(_near(v, scale) for v in outside):
            return scale
    return None


def _inside(value: float, scale: tuple[float, float]) -> bool:
    """Whether a label lies on ``scale`` for the mixed-scales check: a label of 1 is a 1-10 judge's lowest as
    much as a 0-1 judge's highest, so it is not counted as 0-1's."""
    return scale[0] <= value <= scale[1] and not (scale[1] == 1 and value == 1)


def _narrower_scale(labels: Sequence[float], scale: tuple[float, float]) -> tuple[float, float] | None:
    """The widest standard scale whose top is at least :data:`MIXED_RATIO` times below ``scale``'s (1-10 for 1-100;
    of scales with one top, the narrowest holding as many labels: 1-10 before 0-10), or None."""
    candidates = [s for s in STANDARD_SCALES if s[1] * MIXED_RATIO <= scale[1]]
    if not candidates:
        return None
    top = max(hi for _, hi in candidates)
    same_top = [s for s in candidates if s[1] == top]
    counts = [sum(_inside(v, s) for v in labels) for s in same_top]
    return same_top[counts.index(max(counts))]


def infer_scale(scores: Sequence[float], source: str = "the labels", judged: bool = False) -> JudgeScale:
    """The standard judge scale of ``scores`` (NaN: unlabelled, not counted) by the rule in this module's docstring;
    a ScorerOptionError naming the counts and ``--label-scale`` where the labels fit no standard scale or look like
    two scales mixed. ``judged``: an LLM judge's column (its expected scores are a judge's, however narrow)."""
    labels = [float(s) for s in scores if math.isfinite(s)]
    option = python_and_cli("label_scale=LO,HI", "--label-scale LO,HI")
    if not labels:
        raise ScorerOptionError(f"{source}: no numeric label to read a scale from")
    nearly_all = _nearly_all(labels)
    continuous = not judged and sum(float(2 * v).is_integer() for v in labels) < ON_A_GRID * len(labels)
    if continuous and max(labels) > min(labels) and (
            nearly_all is None or max(labels) - min(labels) < (nearly_all[1] - nearly_all[0]) / 2):
        return JudgeScale(min(labels), max(labels), "span")  # a score of its own, on no judge's scale
    if nearly_all is None:
        beyond = sum(not 0 <= v <= 100 for v in labels)
        raise ScorerOptionError(f"{source}: labels span {min(labels):g}..{max(labels):g} and {beyond:,} of "
                                f"{len(labels):,} lie outside 0-100, so no standard judge scale holds nearly all of "
                                f"them; say the judge's scale with {option} (labels outside it are left out)")
    narrower = None if continuous else _narrower_scale(labels, nearly_all)
    if narrower is not None:
        low, high = narrower
        inside = sum(_inside(v, narrower) for v in labels)
        above = sum(v > high for v in labels)
        if inside >= len(labels) / 2 and above > (1 - NEARLY_ALL) * len(labels):
            raise ScorerOptionError(
                f"{source}: labels look like two scales mixed: {inside:,} in {low:g}-{high:g} and {above:,} above "
                f"{high:g} (up to {max(labels):g}); say the judge's scale with {option} (e.g. {low:g},{high:g}: the "
                f"labels outside it are left out and counted)")
    return JudgeScale(nearly_all[0], nearly_all[1], "inferred")


def judge_scale(scores: Sequence[float], given: tuple[float, float] | None = None,
                declared: Sequence[float] | None = None, source: str = "the labels", judged: bool = False) -> JudgeScale:
    """The scale to read ``scores`` on: ``given`` (the caller's ``label_scale``), else the one the judge
    ``declared`` (a prompt's ``scale``, an Evol label set's), else :func:`infer_scale` (``judged``: an LLM judge's
    column)."""
    if given is not None:
        return JudgeScale(float(given[0]), float(given[1]), "given")
    if declared is not None and float(declared[1]) > float(declared[0]):
        return JudgeScale(float(declared[0]), float(declared[1]), "declared")
    return infer_scale(scores, source, judged)


def covering_scale(scores: Sequence[float], declared: Sequence[float] | None = None) -> tuple[float, float] | None:
    """For a scorer fitted on every label it has (distil's): the declared scale, else the smallest standard scale
    holding every label, each widened to a label beyond it; else the labels' span. None when that is one value."""
    labels = [float(s) for s in scores if math.isfinite(s)]
    if not labels:
        return None
    lo, hi = min(labels), max(labels)
    scale = (tuple(declared) if declared is not None else
             next(((a, b) for a, b in STANDARD_SCALES if a <= lo and hi <= b), (lo, hi)))
    low, high = min(lo, float(scale[0])), max(hi, float(scale[1]))
    return (low, high) if high > low else None
