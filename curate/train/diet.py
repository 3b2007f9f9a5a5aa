"""Data Diet (Paul et al. 2021): EL2N and GraNd scores early in training, and pruning the easiest rows.

- ``el2n``: the row's mean per-token error norm ‖p − e_y‖₂ (see :mod:`curate.train.records`);
- ``grand``: the norm of the row's loss gradient with respect to the output-head weights (the records'
  ``grad_norm``: exact for that layer, closed form; the paper's GraNd takes all weights).

Both come from the records of epoch ``TRAIN.early_epoch`` (default 2: each row's forward pass in the second
epoch, i.e. the model after one epoch of training). The paper averages over several initialisations; one run
gives one draw. High scores mark hard (informative) rows; pruning keeps the highest and drops the lowest.
"""

from __future__ import annotations

import numpy as np

from curate.defaults import TRAIN
from curate.errors import CurateError, OptionError

DIET_COLUMNS = {"el2n": "el2n", "grand": "grad_norm"}  # column -> record key


def diet_scores(records_by_epoch: dict[str, np.ndarray], epoch: int = TRAIN.early_epoch) -> dict[str, np.ndarray]:
    """``el2n`` and ``grand`` per row from stacked records ([epochs, rows] per key) at ``epoch`` (1-based)."""
    epochs = records_by_epoch["el2n"].shape[0]
    if not 1 <= epoch <= epochs:
        raise CurateError(f"EL2N/GraNd at epoch {epoch}: the run has {epochs} finished epoch(s)")
    return {col: np.asarray(records_by_epoch[key][epoch - 1], dtype=np.float64) for col, key in DIET_COLUMNS.items()}


def prune_easiest(scores: np.ndarray, keep: int, skip_hardest: float = 0.0) -> tuple[list[int], list[int], list[int]]:
    """(kept, pruned as easiest, dropped as hardest) indices: drop the top ``skip_hardest`` share of scored rows
    (the paper's offset for very high pruning: the hardest are often noise), then keep the ``keep`` highest
    scores; the rest are pruned as easiest. Kept rows come hardest first; NaN rows are in no list."""
    if not 0.0 <= skip_hardest < 1.0:
        raise OptionError(f"skip_hardest must be in [0, 1), got {skip_hardest}")
    s = np.asarray(scores, dtype=np.float64)
    valid = np.flatnonzero(~np.isnan(s))
    order = valid[np.lexsort((valid, -s[valid]))].tolist()
    n_skip = int(round(skip_hardest * len(order)))
    hardest, rest = order[:n_skip], order[n_skip:]
    return rest[:keep], rest[keep:], hardest
