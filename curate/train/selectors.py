"""Selectors on training dynamics: ``cartography`` (ambiguous-first with a share of easy rows) and ``el2n`` /
``grand`` (Data Diet: prune the easiest rows). They read the columns :func:`curate.train.columns.write_columns`
writes (run ``ws.train()`` first). Importing this module registers them with :mod:`curate.select.registry`.
"""

from __future__ import annotations

import numpy as np

from curate.codes import Decision, FailureCode, Reason
from curate.defaults import TRAIN
from curate.errors import NotInWorkspaceError, OptionError
from curate.select.inputs import in_id_order
from curate.select.registry import SelectorResult, register
from curate.signals.selectors import answered, keep_all_eligible
from curate.train.cartography import ambiguous_first, regions
from curate.train.diet import prune_easiest


def _keep(n: int, budget: int | None, fraction: float | None) -> int:
    if (budget is None) == (fraction is None):
        raise OptionError("pass exactly one of budget= (rows) or fraction= (of the candidates)")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise OptionError(f"fraction must be in (0, 1], got {fraction}")
        return max(1, round(fraction * n))
    if budget < 0:
        raise OptionError(f"budget must be >= 0, got {budget}")
    return int(budget)


def _values(ws, rows: np.ndarray, column: str, without_run: str = "give a budget that keeps every row with an "
            "answer (then no training is needed)") -> np.ndarray:
    if not ws.has_column(column):
        raise NotInWorkspaceError(f"no column {column!r}: run ws.train() (or `curate train run`) first, or "
                                  f"{without_run}")
    pool_ids = ws.ids
    return ws.column_array(column, [pool_ids[p] for p in rows.tolist()])


def _untrained(ws, rows: np.ndarray, column: str, budget: int | None, fraction: float | None) -> SelectorResult | None:
    """Without the training columns, a budget that keeps every row the run would train (an answered turn) needs no
    run: those rows kept (``budget_covers_all``), the rest unscored as the run leaves them. None otherwise (the
    columns exist, or the budget chooses)."""
    if ws.has_column(column):
        return None  # read them: a free ranking (and its details) is better than none
    trainable = answered(ws, rows)
    return keep_all_eligible(ws, rows, trainable, _keep(int(trainable.sum()), budget, fraction),
                             skipped="the training run (`curate train run`)",
                             unscored={"column": column, "failure": FailureCode.NO_RESPONSE.value})


def _unscored(out: SelectorResult, rows: np.ndarray, missing: np.ndarray, column: str) -> None:
    for i in np.flatnonzero(missing).tolist():
        out.add(rows[i], Decision.UNSCORED, Reason.NO_SCORE, {"column": column})


@register("cartography")
def select_cartography(ws, rows: np.ndarray, budget: int | None = None, fraction: float | None = None,
                       easy_share: float = TRAIN.easy_share) -> SelectorResult:
    """Dataset Cartography: the most ambiguous rows (highest variability) first, plus ``easy_share`` of the
    budget from the most confident rows; the rest rejected (``hard_to_learn`` for hard-region rows)."""
    rows = in_id_order(ws, rows)  # ties (equal variability, equal confidence) go by row id, not pool position
    if (out := _untrained(ws, rows, "confidence", budget, fraction)) is not None:
        return out
    conf, var = _values(ws, rows, "confidence"), _values(ws, rows, "variability")
    keep = _keep(int((~np.isnan(conf)).sum()), budget, fraction)
    picked, why = ambiguous_first(conf, var, keep, easy_share)
    region = regions(conf, var)
    out = SelectorResult(info={"keep": keep, "easy_share": easy_share,
                               "picked": {"ambiguous": why.count("ambiguous"), "easy": why.count("easy")}})
    detail = lambda i: {"confidence": float(conf[i]), "variability": float(var[i]), "region": str(region[i])}  # noqa: E731
    for rank, (i, w) in enumerate(zip(picked, why, strict=True)):
        out.add(rows[i], Decision.KEPT, Reason.SELECTED, {**detail(i), "picked_as": w, "rank": rank + 1})
    taken = set(picked)
    missing = np.isnan(conf) | np.isnan(var)
    rest = [i for i in np.lexsort((np.arange(len(var)), -np.nan_to_num(var, nan=-1))).tolist()
            if i not in taken and not missing[i]]
    for i in rest:
        reason = Reason.HARD_TO_LEARN if region[i] == "hard" else Reason.BUDGET_FILLED
        out.add(rows[i], Decision.REJECTED, reason, {**detail(i), "budget": keep})
    _unscored(out, rows, missing, "confidence")
    return out


def _diet(ws, rows: np.ndarray, column: str, budget: int | None, fraction: float | None,
          skip_hardest: float) -> SelectorResult:
    rows = in_id_order(ws, rows)  # equal scores go by row id, not pool position
    # skip_hardest drops the hardest share whatever the budget: which rows those are takes the training run
    if not skip_hardest and (out := _untrained(ws, rows, column, budget, fraction)) is not None:
        return out
    scores = (_values(ws, rows, column, "give skip_hardest=0 and a budget that keeps every row with an answer")
              if skip_hardest else _values(ws, rows, column))
    keep = _keep(int((~np.isnan(scores)).sum()), budget, fraction)
    kept, easiest, hardest = prune_easiest(scores, keep, skip_hardest)
    out = SelectorResult(info={"column": column, "keep": keep, "skip_hardest": skip_hardest,
                               "epoch": ws.column_provenance(column).get("epoch")})
    for rank, i in enumerate(kept):
        out.add(rows[i], Decision.KEPT, Reason.SELECTED, {"score": float(scores[i]), "rank": rank + 1})
    for i in hardest:
        out.add(rows[i], Decision.REJECTED, Reason.HARD_TO_LEARN, {"score": float(scores[i]),
                                                                    "skip_hardest": skip_hardest})
    for i in easiest:
        out.add(rows[i], Decision.REJECTED, Reason.PRUNED_EASY, {"score": float(scores[i]), "keep": keep})
    _unscored(out, rows, np.isnan(scores), column)
    return out


@register("el2n")
def select_el2n(ws, rows: np.ndarray, budget: int | None = None, fraction: float | None = None,
                skip_hardest: float = 0.0) -> SelectorResult:
    """Data Diet EL2N: keep the ``budget`` (or ``fraction``) highest-EL2N rows, pruning the easiest; optionally
    drop the ``skip_hardest`` share of the very hardest first (likely noise)."""
    return _diet(ws, rows, "el2n", budget, fraction, skip_hardest)


@register("grand")
def select_grand(ws, rows: np.ndarray, budget: int | None = None, fraction: float | None = None,
                 skip_hardest: float = 0.0) -> SelectorResult:
    """Data Diet GraNd (output-layer gradient norm): as ``el2n`` on the ``grand`` column."""
    return _diet(ws, rows, "grand", budget, fraction, skip_hardest)
