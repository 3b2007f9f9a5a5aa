"""Agreement metrics of predictions against judge labels, and the length baseline beside them.

Pure numpy/scipy on label and prediction arrays: Spearman, Kendall, MAE, pairwise accuracy (optionally within
groups: answers to one instruction), bootstrap intervals that resample whole groups, calibration bins, the order
of known (harder, easier) pairs. :mod:`~curate.scorers.evaluation` runs the splits that produce them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

import numpy as np

METRICS = ("spearman", "kendall", "mae", "pairwise_accuracy")
MIN_INTERVAL_GROUPS = 3  # fewer groups to resample give no interval
MIN_FIGURE_LABELS = 3  # distil takes no held-out figure from fewer labels


class NoFigure(StrEnum):
    """Why an agreement figure could not be computed (it is NaN in memory, null in scorer.json)."""
    LABELS_ALL_EQUAL = "labels_all_equal"            # no order among the labels: no rank correlation, no pair
    PREDICTIONS_ALL_EQUAL = "predictions_all_equal"  # the predictor gave one value: no rank correlation
    TOO_FEW_GROUPS = "too_few_groups"                # the interval resamples whole groups: fewer than 3
    NO_RESAMPLE_SPREAD = "no_resample_spread"        # no resample held two label or prediction values
    TOO_FEW_LABELS = "too_few_labels"                # fewer than MIN_FIGURE_LABELS held-out labels: none taken


NO_FIGURE_TEXT = {NoFigure.LABELS_ALL_EQUAL: "held-out labels all equal",
                  NoFigure.PREDICTIONS_ALL_EQUAL: "its predictions all equal",
                  NoFigure.TOO_FEW_GROUPS: f"fewer than {MIN_INTERVAL_GROUPS} held-out groups to resample",
                  NoFigure.NO_RESAMPLE_SPREAD: "no resample held two different values",
                  NoFigure.TOO_FEW_LABELS: f"fewer than {MIN_FIGURE_LABELS} held-out labels"}
NO_FIGURE = "-"  # a table cell whose figure could not be computed; a line beside the table says why
FIGURE_NAMES = {"spearman": "Spearman", "kendall": "Kendall", "mae": "MAE", "pairwise_accuracy": "pairwise acc",
                "spearman_ci95": "Spearman interval"}


def figure(value: float | None, digits: int = 3) -> str:
    """A metric for a table cell: ``NO_FIGURE`` where it could not be computed (None, NaN), never ``nan``."""
    return NO_FIGURE if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def no_figure_reason(code: str) -> str:
    """A ``no_figure`` code in words; a code this curate does not know (a newer one's scorer) as itself."""
    try:
        return NO_FIGURE_TEXT[NoFigure(code)]
    except ValueError:
        return f"reason code {code!r}"


def figure_with_reason(metrics: Mapping[str, Any], name: str, digits: int = 3) -> str:
    """A predictor's figure ``name`` as :func:`figure` writes it, with the reason its ``no_figure`` codes give when it
    could not be computed: ``"- (held-out labels all equal)"``."""
    text = figure(metrics.get(name), digits)
    code = (metrics.get("no_figure") or {}).get(name)
    return f"{text} ({no_figure_reason(code)})" if text == NO_FIGURE and code else text


def figures_text(metrics: Mapping[str, Any]) -> str:
    """A predictor's figures on one line (``spearman 0.812, kendall - (held-out labels all equal)``), never ``nan``."""
    missing = metrics.get("no_figure") or {}  # a figure stored as None (JSON's NaN) is shown with its reason too
    return ", ".join(f"{k} {figure_with_reason(metrics, k)}" for k, v in metrics.items()
                     if isinstance(v, float) or (v is None and k in missing))


def missing_figure_text(no_figure: Mapping[str, Mapping[str, str]]) -> str:
    """Predictor -> its ``no_figure`` codes as one line, grouped by reason (empty when none is missing):
    ``"Spearman, Kendall of scorer, length (held-out labels all equal)"``."""
    held: dict[tuple[str, str], list[str]] = {}  # (figures, reason) -> predictors
    for who, codes in no_figure.items():
        by_reason: dict[str, list[str]] = {}
        for name, code in codes.items():
            by_reason.setdefault(no_figure_reason(code), []).append(FIGURE_NAMES.get(name, name))
        for reason, names in by_reason.items():
            held.setdefault((", ".join(names), reason), []).append(who.replace("_", " "))
    return "; ".join(f"{names} of {', '.join(whos)} ({reason})" for (names, reason), whos in held.items())


def missing_figures(y_true: Sequence[float], y_pred: Sequence[float], interval: Sequence[float] | None = None,
                    groups: Sequence[Any] | None = None) -> dict[str, NoFigure]:
    """Figure name -> why :func:`agreement` (and ``interval``, :func:`spearman_interval`'s) could not compute it."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    why: dict[str, NoFigure] = {}
    if len(t) and np.ptp(t) == 0:
        why.update(spearman=NoFigure.LABELS_ALL_EQUAL, kendall=NoFigure.LABELS_ALL_EQUAL,
                   pairwise_accuracy=NoFigure.LABELS_ALL_EQUAL)
    elif len(p) and np.ptp(p) == 0:
        why.update(spearman=NoFigure.PREDICTIONS_ALL_EQUAL, kendall=NoFigure.PREDICTIONS_ALL_EQUAL)
    if interval is not None and not np.isfinite(np.asarray(interval, dtype=np.float64)).all():
        n_groups = len(t) if groups is None else len(_group_members(groups))
        why["spearman_ci95"] = (NoFigure.TOO_FEW_GROUPS if n_groups < MIN_INTERVAL_GROUPS
                                else why.get("spearman", NoFigure.NO_RESAMPLE_SPREAD))
    return why


def _group_members(groups: Sequence[Any]) -> list[np.ndarray]:
    """The positions of each group's rows (groups compared as strings)."""
    keys = np.unique(np.asarray([str(g) for g in groups], dtype=object), return_inverse=True)[1]
    order = np.argsort(keys, kind="stable")
    return np.split(order, np.cumsum(np.bincount(keys))[:-1])


PAIR_MATRIX_MAX_ROWS = 512  # up to here pairs are compared in an n x n matrix; above, counted in O(n log n)


def _tied_pairs(*columns: np.ndarray) -> int:
    """Pairs of rows equal in every column."""
    counts = np.unique(np.stack(columns, axis=1), axis=0, return_counts=True)[1].astype(np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _ordered_pairs(t: np.ndarray, p: np.ndarray) -> tuple[float, int]:
    """(pairs the predictions order as the labels do, prediction ties 1/2; pairs with different labels)."""
    if len(t) <= PAIR_MATRIX_MAX_ROWS:
        dt = np.sign(t[:, None] - t[None, :])
        dp = np.sign(p[:, None] - p[None, :])
        mask = dt > 0
        return float((dp[mask] > 0).sum() + 0.5 * (dp[mask] == 0).sum()), int(mask.sum())
    # Counted without the n x n matrices (a held-out part of 20K rows would need GBs): Kendall's tau-b is
    # (C - D) / sqrt((n0 - label ties)(n0 - prediction ties)), computed by scipy in O(n log n).
    from scipy.stats import kendalltau

    n0 = len(t) * (len(t) - 1) // 2
    label_ties, pred_ties, both_ties = _tied_pairs(t), _tied_pairs(p), _tied_pairs(t, p)
    untied = n0 - label_ties
    if untied == 0:
        return 0.0, 0
    c_minus_d = 0
    if pred_ties < n0:
        c_minus_d = round(float(kendalltau(t, p).statistic) * float(np.sqrt(float(untied) * float(n0 - pred_ties))))
    only_pred_tied = pred_ties - both_ties
    concordant = (untied - only_pred_tied + c_minus_d) // 2
    return float(concordant + 0.5 * only_pred_tied), int(untied)


def pairwise_accuracy(y_true: Sequence[float], y_pred: Sequence[float], groups: Sequence[Any] | None = None) -> float:
    """Share of pairs with different labels that the predictions order the same way (prediction ties 1/2).

    ``groups``: only pairs within one group, e.g. answers to one instruction -- what a set of labelled
    preference pairs measures, where a question's difficulty cannot help (counted group by group)."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    parts = [_ordered_pairs(t, p)] if groups is None else [_ordered_pairs(t[m], p[m]) for m in _group_members(groups)]
    n = sum(k for _, k in parts)
    return float("nan") if n == 0 else float(sum(a for a, _ in parts) / n)


def calibration(y_true: Sequence[float], y_pred: Sequence[float], bins: int = 10) -> list[dict[str, float]]:
    """Calibration plot data: quantile bins of the prediction, mean prediction vs mean label per bin."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    out = []
    for chunk in np.array_split(order, min(bins, len(order))):
        if len(chunk):
            out.append({"n": int(len(chunk)), "mean_predicted": float(p[chunk].mean()),
                        "mean_label": float(t[chunk].mean())})
    return out


def agreement(y_true: Sequence[float], y_pred: Sequence[float]) -> dict[str, float]:
    """Spearman, Kendall (tau-b), MAE and pairwise accuracy of predictions against judge labels."""
    from scipy.stats import kendalltau, spearmanr

    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    constant = np.ptp(p) == 0 or np.ptp(t) == 0
    return {"spearman": float("nan") if constant else float(spearmanr(t, p).statistic),
            "kendall": float("nan") if constant else float(kendalltau(t, p).statistic),
            "mae": float(np.mean(np.abs(t - p))), "pairwise_accuracy": pairwise_accuracy(t, p), "n": int(len(t))}


def spearman_interval(y_true: Sequence[float], y_pred: Sequence[float], groups: Sequence[Any] | None = None, *,
                      level: float = 0.95, n_boot: int = 1000, seed: int = 0) -> list[float]:
    """A percentile bootstrap interval of the Spearman correlation, resampling whole groups (a query and all its
    responses move together, as in the split), so a figure from a few hundred held-out labels shows its spread."""
    from scipy.stats import rankdata

    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    members = [np.array([i]) for i in range(len(t))] if groups is None else _group_members(groups)
    if len(members) < MIN_INTERVAL_GROUPS:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    stats = []
    for _ in range(n_boot):
        idx = np.concatenate([members[g] for g in rng.integers(0, len(members), len(members))])
        rt, rp = rankdata(t[idx]), rankdata(p[idx])
        if rt.std() > 0 and rp.std() > 0:
            stats.append(np.corrcoef(rt, rp)[0, 1])
    if not stats:
        return [float("nan"), float("nan")]
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return [float(lo), float(hi)]


def length_baseline(chars_train: np.ndarray, y_train: np.ndarray, chars_test: np.ndarray) -> np.ndarray:
    """Length baseline: least squares of the label on log length (fitted in-fold so its MAE is fair)."""
    x = np.log1p(chars_train)
    a, b = np.polyfit(x, y_train, 1) if np.ptp(x) > 0 else (0.0, float(np.mean(y_train)))
    return np.clip(a * np.log1p(chars_test) + b, y_train.min(), y_train.max())


def pair_order(pairs: np.ndarray, values: np.ndarray) -> float:
    """Share of (harder, easier) pairs that ``values`` order right (ties count one half)."""
    a, b = values[pairs[:, 0]], values[pairs[:, 1]]
    return float(np.mean((a > b) + 0.5 * (a == b))) if len(pairs) else float("nan")


def within_group_pairs(held: dict[str, dict[str, Any]], y: np.ndarray, preds: dict[str, np.ndarray],
                       groups: Sequence[Any] | None) -> None:
    """Add each predictor's pairwise accuracy over pairs within one group (``pairwise_within_group``) and the
    number of such pairs, where the held-out part has any (several answers to one instruction)."""
    if groups is None:
        return
    n = sum(_ordered_pairs(y[m], y[m])[1] for m in _group_members(groups))
    if not n:
        return
    for who, p in preds.items():
        if who in held:
            held[who].update(pairwise_within_group=pairwise_accuracy(y, p, groups), pairs_within_group=n)


def imitates_text(imitates: dict[str, Any]) -> str:
    """What a scorer imitates in words, ``judge complexity (model gpt-4, label_set FLASK ...)``: the notebook view
    printed its dict as JSON."""
    rest = ", ".join(f"{k} {v if isinstance(v, str | int | float) else json.dumps(v, default=str)}"
                     for k, v in imitates.items() if k != "judge" and v not in (None, "", [], {}))
    judge = f"judge {imitates['judge']}" if imitates.get("judge") else "no judge recorded"
    return judge + (f" ({rest})" if rest else "")
