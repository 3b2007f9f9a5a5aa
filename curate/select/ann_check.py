"""How many near duplicates an approximate (hnswlib) dedup walk left kept: an exact check of a sample of its kept rows.

The hnsw walk (:class:`curate.select.products.HnswProducts`) is exact wherever the graph answers, but a kept row
whose kept neighbour above the threshold the graph did not find (a small ``ef`` or ``M``, dense data) stays kept,
and nothing in the result said so. This check takes a seeded sample of the kept rows and compares each with every
row kept before it in the walk, exactly (float64 near the threshold): a sampled row with one above the threshold
is a duplicate the index missed. The sample's share, times the kept rows, estimates the misses of the whole walk;
the selection records it and ``curate select`` says it when any was found.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.select.admission import cosines
from curate.select.products import FLOAT32_MARGIN, blas_threads

KEPT_CHUNK = 8192  # kept rows per product: a sample of 1,000 rows takes 32 MB


def missed_duplicates(x: np.ndarray, kept: np.ndarray, tau: float, sample: int, seed: int) -> dict[str, Any]:
    """Check up to ``sample`` of the ``kept`` rows (positions in ``x``, the walk order: ascending) of a dedup walk
    over unit rows ``x`` at threshold ``tau``: ``checked`` rows, ``missed`` (those with an earlier kept row above
    ``tau``, which the walk should have marked duplicates), up to 10 of them as ``examples`` (walk positions with
    the earlier kept row and its similarity), and ``estimated_missed``: the missed share times the kept rows."""
    kept = np.asarray(kept, np.int64)
    if not len(kept) or sample < 1:
        return {"checked": 0, "missed": 0, "estimated_missed": 0, "kept": int(len(kept))}
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(len(kept), min(sample, len(kept)), replace=False))
    rows = kept[picked]  # walk positions of the sampled kept rows
    xs = np.asarray(x[rows], np.float32)
    best = np.full(len(rows), -np.inf, np.float32)
    for start in range(0, len(kept), KEPT_CHUNK):
        part = kept[start:start + KEPT_CHUNK]
        with blas_threads(len(rows) * len(part) * x.shape[1]):
            sims = xs @ np.asarray(x[part], np.float32).T
        sims[part[None, :] >= rows[:, None]] = -np.inf  # only rows kept before the sampled one count
        top = sims.max(axis=1)
        np.maximum(best, top, out=best)
    missed = []
    for i in np.flatnonzero(best > tau - FLOAT32_MARGIN).tolist():
        earlier = kept[kept < rows[i]]
        exact = cosines(np.asarray(x[earlier], np.float32), xs[i])  # float64: the walk's own rule near tau
        k = int(np.argmax(exact))
        if exact[k] > tau:
            missed.append({"row": int(rows[i]), "kept_before": int(earlier[k]), "similarity": float(exact[k])})
    return {"checked": int(len(rows)), "missed": len(missed), "kept": int(len(kept)),
            "estimated_missed": int(round(len(missed) / len(rows) * len(kept))), "seed": seed, "examples": missed[:10]}
