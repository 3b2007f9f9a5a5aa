"""Splits of labelled rows for scorer evaluation: a held-out share of whole groups, grouped K folds, the ordered
pairs inside a part, whether a part's labels spread (:mod:`~curate.scorers.evaluation` runs the figures on them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def finite_mean(values: Sequence[float]) -> float:
    """The mean of the finite ``values`` (NaN: none)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def group_split(n: int, groups: Sequence[Any] | None, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) positions: a ``holdout`` share of the groups, drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    keys = np.arange(n) if groups is None else np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)[1]
    uniq = np.unique(keys)
    rng.shuffle(uniq)
    test_keys = set(uniq[: max(1, int(round(holdout * len(uniq))))].tolist())
    test = np.array([k in test_keys for k in keys])
    return np.flatnonzero(~test), np.flatnonzero(test)


def split_off(n: int, groups: Sequence[Any] | None, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return group_split(n, groups, holdout, seed) if holdout > 0 else (np.arange(n), np.array([], int))


def group_folds(positions: np.ndarray, groups: Sequence[Any] | None, k: int, rng: np.random.Generator):
    """K (train, test) position pairs over ``positions``, whole groups on one side; the group order is shuffled
    first (GroupKFold itself is deterministic)."""
    from sklearn.model_selection import GroupKFold

    g = np.arange(len(positions)) if groups is None else np.asarray(groups, dtype=object).astype(str)[positions]
    perm = rng.permutation(len(positions))
    for tr, te in GroupKFold(n_splits=k).split(perm, groups=np.asarray(g)[perm]):
        yield positions[perm[tr]], positions[perm[te]]


def pairs_within(pairs: np.ndarray | None, positions: np.ndarray, n: int) -> np.ndarray | None:
    """The ordered pairs with both rows among ``positions``, re-indexed to them (None without pairs)."""
    if pairs is None:
        return None
    where = np.full(n, -1)
    where[positions] = np.arange(len(positions))
    inside = pairs[(where[pairs[:, 0]] >= 0) & (where[pairs[:, 1]] >= 0)]
    return where[inside]


def label_spread(y: np.ndarray) -> bool:
    """Whether the labelled rows of ``y`` (NaN: a pair-only row) hold two different values, so a head can be
    fitted on them: a fold of a judge that gave one number to nearly everything may have none."""
    return np.unique(y[np.isfinite(y)]).size >= 2
