"""Selectors on model signals: ``ifd`` (Cherry LLM / Superfiltering), ``perplexity`` (a band), ``learnability``.

Each is a selector of :mod:`curate.select.registry` (``fn(ws, rows, **params) -> SelectorResult``) reading one
value per row: the signal column's turns reduced with its declared reducer (mean), through
:func:`curate.select.sort_key.rows_by_score`. They chain with dedup and DEITA admission in
``ws.select(steps=[...])``. Importing this module registers them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import SIGNAL
from curate.errors import CurateError
from curate.select.inputs import id_order
from curate.select.registry import SelectorResult, register
from curate.select.sort_key import rows_by_score, score_quantile


def rows_to_keep(n: int, budget: int | None, fraction: float | None) -> int | None:
    """How many rows to keep: ``budget``, or ``fraction`` of the ``n`` candidates (rounded), or all (None)."""
    if budget is not None and fraction is not None:
        raise CurateError("pass budget= or fraction=, not both")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise CurateError(f"fraction must be in (0, 1], got {fraction}")
        return max(1, round(fraction * n))
    if budget is not None and budget < 0:
        raise CurateError(f"budget must be >= 0, got {budget}")
    return budget


def answered(ws, rows: np.ndarray) -> np.ndarray:
    """Whether each row (pool positions) has an answered turn: what a fine-tune or a gradient needs of it."""
    pool_ids = ws.ids
    convs = ws.row_inputs([pool_ids[p] for p in rows.tolist()])
    return np.array([any(t.has_response for t in r.turns) for r in convs], dtype=bool)


def keep_all_eligible(ws, rows: np.ndarray, eligible: np.ndarray, keep: int | None, *, skipped: str,
                      unscored: dict[str, Any]) -> SelectorResult | None:
    """When ``keep`` (the rows a budget or fraction keeps) is at least the ``eligible`` candidates (a mask over
    ``rows``), the selection needs no model: every eligible row is kept (``budget_covers_all``, in row id order) and
    the others are unscored with detail ``unscored``, as the model's work would leave them; ``skipped`` names that work
    (the provenance's ``budget_covers_all`` says what was not run and why). None when the budget chooses."""
    n = int(eligible.sum())
    if keep is None or keep < n:
        return None
    order = id_order(ws, rows)
    out = SelectorResult(info={"keep": keep, "budget_covers_all": {"eligible": n, "keep": keep, "skipped": skipped}})
    for rank, i in enumerate(k for k in order.tolist() if eligible[k]):
        out.add(rows[i], Decision.KEPT, Reason.BUDGET_COVERS_ALL, {"keep": keep, "eligible": n, "rank": rank + 1})
    for i in order.tolist():
        if not eligible[i]:
            out.add(rows[i], Decision.UNSCORED, Reason.NO_SCORE, dict(unscored))
    return out


def select_ifd(ws, rows: np.ndarray, budget: int | None = None, fraction: float | None = None,
               max_ifd: float = SIGNAL.ifd_max, column: str = "ifd") -> SelectorResult:
    """Cherry LLM / Superfiltering: drop rows with IFD >= ``max_ifd`` (the instruction does not help), then
    keep the highest IFD (hardest to follow) up to ``budget`` rows or the top ``fraction`` of the rows left (as
    Cherry's ``data_by_IFD.py`` counts it: the dropped and the unscored rows are not in the base); with neither,
    keep every row below ``max_ifd``."""
    perm, scores = rows_by_score(ws, rows, column)
    vals = scores.values
    valid = [i for i in perm.tolist() if not math.isnan(vals[i]) and vals[i] < max_ifd]
    flagged = [i for i in perm.tolist() if not math.isnan(vals[i]) and vals[i] >= max_ifd]
    keep = rows_to_keep(len(valid), budget, fraction)
    out = SelectorResult(info={"column": column, "reducer": scores.reducer, "max_ifd": max_ifd, "keep": keep})
    for rank, i in enumerate(valid):
        s = float(vals[i])
        if keep is None or rank < keep:
            out.add(rows[i], Decision.KEPT, Reason.SELECTED, {"score": s, "rank": rank + 1})
        else:
            out.add(rows[i], Decision.REJECTED, Reason.BUDGET_FILLED, {"score": s, "budget": keep})
    for i in flagged:
        out.add(rows[i], Decision.REJECTED, Reason.IFD_AT_LEAST_ONE, {"score": float(vals[i]), "max_ifd": max_ifd})
    for i in perm.tolist():
        if math.isnan(vals[i]):
            out.add(rows[i], Decision.UNSCORED, Reason.NO_SCORE, scores.detail(i))
    out.info["flagged"] = len(flagged)
    return out


def select_perplexity(ws, rows: np.ndarray, low: float = SIGNAL.perplexity_band[0],
                      high: float = SIGNAL.perplexity_band[1], column: str = "perplexity") -> SelectorResult:
    """Perplexity filtering: keep the rows whose perplexity lies between the ``low`` and ``high`` quantiles of
    the scored candidates (drop the too-predictable and the too-surprising); kept rows by perplexity, lowest
    first."""
    if not 0.0 <= low < high <= 1.0:
        raise CurateError(f"perplexity band needs 0 <= low < high <= 1, got low={low}, high={high}")
    perm, scores = rows_by_score(ws, rows, column)
    vals = scores.values
    scored = vals[~np.isnan(vals)]
    lo, hi = (score_quantile(scored, low), score_quantile(scored, high)) if len(scored) else (math.nan, math.nan)
    out = SelectorResult(info={"column": column, "reducer": scores.reducer, "quantiles": [low, high],
                               "band": [lo, hi]})
    ascending = [i for i in perm.tolist()[::-1] if not math.isnan(vals[i])]
    inside = [i for i in ascending if lo <= vals[i] <= hi]
    outside = [i for i in ascending if not lo <= vals[i] <= hi]
    for rank, i in enumerate(inside):
        out.add(rows[i], Decision.KEPT, Reason.SELECTED, {"score": float(vals[i]), "rank": rank + 1})
    for i in outside:
        out.add(rows[i], Decision.REJECTED, Reason.OUTSIDE_BAND, {"score": float(vals[i]), "low": lo, "high": hi})
    for i in perm.tolist():
        if math.isnan(vals[i]):
            out.add(rows[i], Decision.UNSCORED, Reason.NO_SCORE, scores.detail(i))
    return out


def select_learnability(ws, rows: np.ndarray, budget: int | None = None, fraction: float | None = None,
                        column: str = "learnability") -> SelectorResult:
    """LoBaSS: the rows with the highest learnability (loss drop after brief tuning), to ``budget`` rows or the
    top ``fraction`` of the candidates."""
    keep = rows_to_keep(len(rows), budget, fraction)
    if keep is None:
        raise CurateError("the learnability selector needs budget= or fraction=")
    perm, scores = rows_by_score(ws, rows, column)
    out = SelectorResult(info={"column": column, "reducer": scores.reducer, "keep": keep})
    for rank, i in enumerate(perm.tolist()):
        s = float(scores.values[i])
        if math.isnan(s):
            out.add(rows[i], Decision.UNSCORED, Reason.NO_SCORE, scores.detail(i))
        elif rank < keep:
            out.add(rows[i], Decision.KEPT, Reason.SELECTED, {"score": s, "rank": rank + 1})
        else:
            out.add(rows[i], Decision.REJECTED, Reason.BUDGET_FILLED, {"score": s, "budget": keep})
    return out


SIGNAL_SELECTORS = {"ifd": select_ifd, "perplexity": select_perplexity, "learnability": select_learnability}
for _name, _fn in SIGNAL_SELECTORS.items():
    register(_name)(_fn)
