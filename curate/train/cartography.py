"""Dataset Cartography (Swayamdipta et al. 2020): where each row sits on the data map of a training run.

From the per-epoch records of :func:`curate.train.harness.finetune` (one value per row per epoch, taken from
the training forward pass, as the paper's training dynamics are):

- ``confidence``: mean over epochs of the row's mean gold-token probability (the paper: mean probability of
  the gold label);
- ``variability``: standard deviation over epochs of the same (population std, as the paper's code);
- ``correctness``: share of epochs in which the row counts as correct. A classifier is correct when its argmax
  is the gold label; for generation we count an epoch correct when the row's teacher-forced token accuracy
  (share of response tokens whose argmax is the gold token) exceeds ``TRAIN.correct_accuracy`` (0.5: most
  tokens right).

Regions (for the map and the selector): ``ambiguous`` = the top third by variability; of the rest, ``easy``
= confidence at or above the median confidence of all rows, ``hard`` = below it (low confidence, low
variability: the paper finds label errors here).
"""

from __future__ import annotations

import numpy as np

from curate.defaults import TRAIN
from curate.errors import CurateError, OptionError

CARTOGRAPHY_COLUMNS = ("confidence", "variability", "correctness")
AMBIGUOUS_QUANTILE = 2 / 3
REGIONS = ("easy", "ambiguous", "hard")


def data_map(gold_prob: np.ndarray, token_accuracy: np.ndarray,
             correct_accuracy: float = TRAIN.correct_accuracy) -> dict[str, np.ndarray]:
    """``confidence``, ``variability``, ``correctness`` per row from [epochs, rows] record arrays."""
    gold_prob = np.asarray(gold_prob, dtype=np.float64)
    if gold_prob.ndim != 2 or gold_prob.shape[0] < 2:
        raise CurateError(f"cartography needs records of at least 2 epochs, got shape {gold_prob.shape}")
    return {"confidence": gold_prob.mean(axis=0), "variability": gold_prob.std(axis=0),
            "correctness": (np.asarray(token_accuracy) > correct_accuracy).mean(axis=0)}


def regions(confidence: np.ndarray, variability: np.ndarray) -> np.ndarray:
    """``easy`` / ``ambiguous`` / ``hard`` per row (see the module doc); ``""`` where a value is NaN."""
    conf = np.asarray(confidence, dtype=np.float64)
    var = np.asarray(variability, dtype=np.float64)
    ok = ~(np.isnan(conf) | np.isnan(var))
    out = np.full(len(conf), "", dtype=object)
    if not ok.any():
        return out
    var_cut = float(np.quantile(var[ok], AMBIGUOUS_QUANTILE))
    conf_cut = float(np.median(conf[ok]))
    out[ok] = np.where(var[ok] >= var_cut, "ambiguous", np.where(conf[ok] >= conf_cut, "easy", "hard"))
    return out


def ambiguous_first(confidence: np.ndarray, variability: np.ndarray, keep: int,
                    easy_share: float = TRAIN.easy_share) -> tuple[list[int], list[str]]:
    """The paper's advice for a subset: mostly the most ambiguous rows (highest variability), topped up with
    ``easy_share`` of ``keep`` from the most confident rows (easy rows help optimisation). Returns the chosen
    indices in pick order and, per pick, ``ambiguous`` or ``easy`` (why it was picked). NaN rows are never picked."""
    if not 0.0 <= easy_share <= 1.0:
        raise OptionError(f"easy_share must be in [0, 1], got {easy_share}")
    conf = np.asarray(confidence, dtype=np.float64)
    var = np.asarray(variability, dtype=np.float64)
    valid = np.flatnonzero(~(np.isnan(conf) | np.isnan(var)))
    keep = min(keep, len(valid))
    n_easy = int(round(easy_share * keep))
    by_var = valid[np.lexsort((valid, -var[valid]))].tolist()
    by_conf = valid[np.lexsort((valid, -conf[valid]))].tolist()
    picked: list[int] = by_var[:keep - n_easy]
    taken = set(picked)
    why = ["ambiguous"] * len(picked)
    for i in by_conf:
        if len(picked) >= keep:
            break
        if i not in taken:
            picked.append(i)
            taken.add(i)
            why.append("easy")
    return picked, why
