"""Selectors by score alone, and the random baseline: ``top_k``, ``threshold``, ``random``."""

from __future__ import annotations

import math

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import SELECT
from curate.errors import OptionError
from curate.select.inputs import in_id_order
from curate.select.registry import SelectorResult, register
from curate.select.sort_key import rows_by_score, score_quantile


@register("top_k")
def top_k(ws, rows: np.ndarray, budget: int, sort_by: str | None = None) -> SelectorResult:
    """The ``budget`` best-scored rows (ties by row id)."""
    perm, scores = rows_by_score(ws, rows, sort_by)
    out = SelectorResult(info={"sort_by": scores.sort_by, "reducer": scores.reducer})
    for r, i in enumerate(perm.tolist()):
        s = float(scores.values[i])
        if math.isnan(s):
            out.add(rows[i], Decision.UNSCORED, Reason.NO_SCORE, scores.detail(i))
        elif r < budget:
            out.add(rows[i], Decision.KEPT, Reason.SELECTED, {"score": s})
        else:
            out.add(rows[i], Decision.NOT_REACHED, Reason.BUDGET_FILLED, {"score": s, "budget": budget})
    return out


@register("threshold", exactly_one_of=(("min_score", "quantile"),))
def threshold(ws, rows: np.ndarray, min_score: float | None = None, sort_by: str | None = None,
              quantile: float | None = None) -> SelectorResult:
    """ALPAGASUS-style filter: keep rows whose score is >= ``min_score``, or >= the ``quantile`` (0-1) of
    these rows' scores (e.g. 0.8 keeps about the top fifth whatever the scorer's scale)."""
    if min_score is not None and not math.isfinite(min_score):  # NaN or +inf keeps nothing, -inf all, silently
        raise OptionError(f"threshold: min_score is {min_score}, not a finite number")
    if quantile is not None and (isinstance(quantile, bool) or not isinstance(quantile, int | float)
                                 or not 0.0 <= quantile <= 1.0):  # before the scores are read: the value is wrong
        raise OptionError(f"threshold: quantile {quantile!r} is not a number in [0, 1]")
    perm, scores = rows_by_score(ws, rows, sort_by)
    out = SelectorResult(info={"sort_by": scores.sort_by, "reducer": scores.reducer})
    if quantile is not None:
        finite = np.asarray(scores.values, dtype=np.float64)
        finite = finite[~np.isnan(finite)]
        min_score = score_quantile(finite, quantile) if finite.size else math.inf
        out.info.update({"quantile": quantile, "min_score": min_score})
    for i in perm.tolist():
        s = float(scores.values[i])
        if math.isnan(s):
            out.add(rows[i], Decision.UNSCORED, Reason.NO_SCORE, scores.detail(i))
        elif s >= min_score:
            out.add(rows[i], Decision.KEPT, Reason.SELECTED, {"score": s, "min_score": min_score})
        else:
            out.add(rows[i], Decision.REJECTED, Reason.BELOW_THRESHOLD, {"score": s, "min_score": min_score})
    return out


@register("random")
def random_sample(ws, rows: np.ndarray, budget: int, seed: int = SELECT.seed) -> SelectorResult:
    """A seeded uniform sample of ``budget`` rows: a permutation of the rows in row-id order, so the same rows and
    seed give the same sample whatever the pool file's order."""
    perm = in_id_order(ws, rows)[np.random.default_rng(seed).permutation(len(rows))]
    out = SelectorResult(info={"seed": seed})
    for i, p in enumerate(perm.tolist()):
        if i < budget:
            out.add(p, Decision.KEPT, Reason.SELECTED, {"draw": i + 1})
        else:
            out.add(p, Decision.NOT_REACHED, Reason.BUDGET_FILLED, {"draw": i + 1, "budget": budget})
    return out
