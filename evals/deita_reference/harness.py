"""Running DEITA's own ``Combined_Filter`` (``IterativeFilter.filter``) on curate's data, for the benchmark.

DEITA's input is a DataFrame with one embedding array per row and its sort-key columns (per-turn score
lists); ``filter`` sorts by Σ_t complexity_t·quality_t (pandas' default, unstable sort), admits the top
row, then walks the rest ``batch_size`` at a time and stops at ``data_size`` admitted rows. The result's
``idx`` column is the row position we gave it, in admission order.

When the full batch-size-1 run would take longer than allowed, :func:`extrapolate` times DEITA's code on
prefixes of the walk (``data_size`` = a fraction of the budget; each prefix is also compared with curate's
first admissions) and extrapolates the full time with the cost model DEITA's loop has: a fixed cost
(sorting and stacking the embeddings) + per candidate (α + β·|admitted so far|), with α and β fitted on
the prefixes and summed over the candidates and admitted-set sizes of the real (curate's, identical) walk.
"""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import pandas as pd

from evals.deita_reference.combined_filter import Combined_Filter

logging.getLogger("evals.deita_reference").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=".*torch.range is deprecated.*")  # DEITA's code, unchanged
warnings.filterwarnings("ignore", message="To copy construct from a tensor.*")
SORT_KEY = ["complexity_scores", "quality_scores"]


def frame(x: np.ndarray, complexity: np.ndarray, quality: np.ndarray) -> pd.DataFrame:
    """DEITA's input: ``embedding`` (one float32 array per row), ``idx`` (row position) and the per-turn
    score lists (one turn per row here)."""
    return pd.DataFrame({"embedding": list(np.asarray(x, np.float32)), "idx": np.arange(len(x)),
                         "complexity_scores": [[float(c)] for c in complexity],
                         "quality_scores": [[float(q)] for q in quality]})


def run_filter(df: pd.DataFrame, budget: int, tau: float, batch_size: int) -> tuple[np.ndarray, float]:
    """DEITA's filter on a copy of ``df`` (its ``_sort`` writes columns): admitted row positions in order,
    and the seconds ``filter`` took (building the frame is not timed)."""
    df = df.copy(deep=False)
    f = Combined_Filter(threshold=tau, data_size=budget, sort_key=SORT_KEY, chunk_size=100000,
                        batch_size=batch_size, distance_metric="cosine", device="cpu")
    t = time.perf_counter()
    out = f.filter(df)
    return out["idx"].to_numpy(), time.perf_counter() - t


def walk_costs(order_admitted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a walk whose examined candidates are flagged ``order_admitted`` (bool, in order): after the k-th
    admission, how many candidates DEITA has examined (E[k]) and Σ|admitted before each| (S[k]); k = 1..K.
    DEITA admits the first row without a comparison and stops right after the ``data_size``-th admission."""
    flags = np.asarray(order_admitted, bool)
    adm_before = np.concatenate(([0], np.cumsum(flags)[:-1]))
    pos = np.flatnonzero(flags)  # position of the k-th admission in the walk
    cum_s = np.cumsum(adm_before)
    return pos + 1, cum_s[pos]


def extrapolate(df: pd.DataFrame, admitted_flags: np.ndarray, ours_admitted: np.ndarray, budget: int,
                tau: float, fractions: tuple[float, ...] = (1 / 16, 1 / 8, 1 / 4), repeats: int = 2) -> dict:
    """DEITA batch size 1 on prefixes (``data_size`` = fraction x budget), compared with curate's first
    admissions, and its full time extrapolated (see the module docstring); each prefix timed ``repeats``
    times (best kept)."""
    e, s = walk_costs(admitted_flags)
    fixed = min(run_filter(df, 1, tau, 1)[1] for _ in range(2))  # sort + stack + one candidate
    rows, prefix_equal = [], True
    for f in fractions:
        k = max(2, int(budget * f))
        runs = [run_filter(df, k, tau, 1) for _ in range(repeats)]
        got, secs = runs[0][0], min(r[1] for r in runs)
        prefix_equal &= bool(np.array_equal(got, ours_admitted[:k]))
        rows.append((e[k - 1], s[k - 1], secs - fixed, k, secs))
    a = np.array([[r[0], r[1]] for r in rows], float)
    y = np.array([r[2] for r in rows], float)
    (alpha, beta), *_ = np.linalg.lstsq(a, y, rcond=None)
    alpha, beta = max(alpha, 0.0), max(beta, 0.0)
    total = fixed + alpha * e[budget - 1] + beta * s[budget - 1]
    return {"seconds": float(total), "fixed": fixed, "alpha": float(alpha), "beta": float(beta),
            "prefixes": [{"data_size": r[3], "seconds": round(r[4], 3), "examined": int(r[0])} for r in rows],
            "prefix_equal": prefix_equal}
