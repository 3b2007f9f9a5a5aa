"""The readers' calibration map: raw network scores onto the judge's scale, matching its quantiles, continuous
where the judge's labels are discrete levels (:func:`dequantise`), strictly increasing (:func:`apply_map`). The
fine-tuned scorers (:mod:`curate.scorers.finetuned`) and the GPU training scripts use it; numpy only, so
``evals/train_scorers_gpu.py`` loads this file by path on a machine without curate's dependencies, as it does
:mod:`curate.scorers.crossencoder`.
"""

from __future__ import annotations

import numpy as np


def linear_map(values: np.ndarray, source: tuple[float, float], target: tuple[float, float]) -> np.ndarray:
    """``values`` on the scale ``source`` (low, high) mapped linearly onto ``target``: a judge's labels onto the
    readers' output scale or onto the digits a digit head learns."""
    (lo, hi), (c, d) = source, target
    return c + (np.asarray(values, dtype=np.float64) - lo) * (d - c) / (hi - lo)


def quantile_map(raw: np.ndarray, labels: np.ndarray, points: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """A monotone map raw score -> label scale matching quantiles (the judge's spread, not a squeezed mean)."""
    q = np.linspace(0, 1, points)
    x = np.quantile(np.asarray(raw, dtype=np.float64), q)
    y = np.quantile(np.asarray(labels, dtype=np.float64), q)
    x = np.maximum.accumulate(x + np.arange(points) * 1e-9)  # strictly increasing for np.interp
    return x, np.maximum.accumulate(y)


def map_fault(weights: dict[str, np.ndarray]) -> str | None:
    """Why ``weights`` hold no usable calibration map (``calibration.x`` / ``.y``: equal-length 1-D arrays of at
    least two finite knots, ``x`` in increasing order, as :func:`quantile_map` writes them), or None when they do."""
    if "calibration.x" not in weights or "calibration.y" not in weights:
        return "no calibration map (calibration.x and calibration.y)"
    x, y = (np.asarray(weights[f"calibration.{a}"]) for a in "xy")
    if x.ndim != 1 or y.shape != x.shape or len(x) < 2:
        return f"a calibration map of {x.shape} and {y.shape} knots, not two equal lists of 2 or more"
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and np.all(np.diff(x) >= 0)):
        return "a calibration map whose knots are not finite and in increasing order"
    return None


OUTPUT_MAP = "quantile-dequantised+logistic-2"  # names apply_map; the cross-encoder scorer's fingerprint includes it
TIE_BREAK_SHARE = 0.02  # share of the calibrated score given to a logistic map of the raw score (see apply_map)


def dequantise(y: np.ndarray) -> np.ndarray:
    """The label quantiles ``y`` (increasing) of a judge that gives discrete levels, made continuous: each run of
    knots sharing one level v is spread linearly over the level's half-intervals ``[(v_prev + v) / 2,
    (v + v_next) / 2]`` (v_prev, v_next: the knots beside the run; at either end of the scale the bound is v
    itself, so the range stays ``[y[0], y[-1]]``). Knots with no equal neighbour are unchanged: labels that are
    continuous already keep their map exactly.

    The quantiles of five levels (FLASK's difficulty) made a map flat across each level: 49% of 4,000 pool rows
    landed within 0.03 of one of them, and a sort by complexity x quality ordered a level by quality alone. The
    spread is the distribution a judge's expected score (DEITA's, a digit-probability expectation) has when its
    probability mass straddles neighbouring levels: a run's knots sit at the middle of their quantile cells of the
    level's mass, that mass taken to start and end half a cell beyond the run (at the scale's ends: at the end)."""
    y = np.asarray(y, dtype=np.float64)
    out, last, i = y.copy(), len(y) - 1, 0
    while i <= last:
        j = i
        while j < last and y[j + 1] == y[i]:
            j += 1
        if j > i:  # knots i..j share the level y[i]
            v = y[i]
            lo, start = (v, 0.0) if i == 0 else ((y[i - 1] + v) / 2, 0.5)
            hi, end = (v, 0.0) if j == last else ((v + y[j + 1]) / 2, 0.5)
            cells = (j - i) + start + end
            out[i:j + 1] = lo + (hi - lo) * (np.arange(j - i + 1) + start) / cells
        i = j + 1
    return out


def apply_map(raw: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """:func:`quantile_map`'s piecewise-linear map through its knots made continuous (:func:`dequantise`),
    blended with a small logistic map of the raw score so that it is strictly increasing beyond the knots too: a
    different raw score never lands on the same calibrated score.

    The quantile map alone is flat beyond the training range, so it tied rows the network ranks apart (the
    shipped complexity scorer put 65% of the held-out constraint-chain versions at exactly 6.0, and its chain
    order fell from 0.993 to 0.790). The blend moves a score by at most ``TIE_BREAK_SHARE`` of the scale and
    stays inside ``[y[0], y[-1]]``; the logistic's centre and spread are the map's median and interquartile knots."""
    raw = np.asarray(raw, dtype=np.float64)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    k = len(x) - 1
    centre = x[k // 2]
    spread = max((x[(3 * k) // 4] - x[k // 4]) / 1.349, 1e-6)  # the interquartile range of a normal, as a std
    logistic = y[0] + (y[-1] - y[0]) / (1.0 + np.exp(-(raw - centre) / spread))
    return (1.0 - TIE_BREAK_SHARE) * np.interp(raw, x, dequantise(y)) + TIE_BREAK_SHARE * logistic
