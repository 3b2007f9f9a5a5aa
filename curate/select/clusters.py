"""K-means for the selectors (``kmeans``; semantic dedup's default index): scikit-learn's Lloyd iterations over
the float32 rows, seeded by k-means++ run in float64 on at most ``KMEANS.init_rows`` rows.

Why not ``KMeans(init="k-means++")`` on the rows as they are: scikit-learn's k-means++ on float32 rows computes its
distances chunk by chunk, upcast to float64 (1,000 centres over 10,000 rows: 229 s here, 13 s on the same rows as
float64), and its cost grows with k x n, so with k = sqrt(n) it took 125 s of a 135 s fit at 50,000 rows and would
take hours at 1M. Seeding from a sample of rows is what scikit-learn's own MiniBatchKMeans does (``init_size``);
below ``init_rows`` rows every row seeds, as before. ``evals/bench_kmeans.py`` measures both.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from curate.defaults import KMEANS


def fit_kmeans(x: np.ndarray, k: int, seed: int, *, verbose: bool = False, max_iter: int = KMEANS.max_iter,
               init_rows: int = KMEANS.init_rows) -> tuple[Any, dict[str, Any]]:
    """A fitted scikit-learn ``KMeans`` of ``k`` clusters over the rows ``x`` (see the module docstring), and what
    seeded it: ``{"init": "k-means++", "init_rows": rows it seeded from}``."""
    from sklearn.cluster import KMeans, kmeans_plusplus
    from sklearn.exceptions import ConvergenceWarning

    n, size = len(x), max(init_rows, k)  # k-means++ needs a row per centre at least
    rows = np.arange(n) if n <= size else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    sample = np.asarray(x[rows], dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct vectors than clusters: the caller says so
        centers, _ = kmeans_plusplus(sample, k, random_state=seed)
        km = KMeans(n_clusters=k, n_init=1, init=centers.astype(x.dtype, copy=False), random_state=seed,
                    max_iter=max_iter, verbose=int(verbose)).fit(x)
    return km, {"init": "k-means++", "init_rows": len(rows)}
