"""Benchmark: curate's K-means (the ``kmeans`` selector, semantic dedup's default index) against scikit-learn's
``KMeans`` used the plain way, as curate did before, on the same rows.

    python evals/bench_kmeans.py [--n 50000] [--dim 384] [--clusters 2000]

Rows: ``--n`` unit float32 vectors (the embedding set's dtype) around ``--clusters`` random centres, k = sqrt(n) as
the ``kmeans`` selector picks. Reference: ``KMeans(n_clusters=k, n_init=1, random_state=0).fit(x)`` (k-means++ on
every float32 row). curate: :func:`curate.select.clusters.fit_kmeans` (k-means++ in float64 on at most
``KMEANS.init_rows`` sampled rows, then the same Lloyd iterations over every row). Quality: the inertia (sum of
squared distances to the centres; lower is better) and how alike the two partitions are (adjusted Rand index). The
machine is shared: times are indicative. Prints a ``RESULT`` line (ratios: reference / curate).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.defaults import KMEANS  # noqa: E402
from curate.select.clusters import fit_kmeans  # noqa: E402


def rows(n: int, dim: int, clusters: int, seed: int = 0) -> np.ndarray:
    """``n`` unit float32 rows scattered around ``clusters`` random centres."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    x = (centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def main() -> None:
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--clusters", type=int, default=2000)
    args = ap.parse_args()
    x = rows(args.n, args.dim, args.clusters)
    k = int(math.sqrt(args.n))
    began = time.perf_counter()
    ref = KMeans(n_clusters=k, n_init=1, random_state=0).fit(x)
    ref_s = time.perf_counter() - began
    began = time.perf_counter()
    ours, seeding = fit_kmeans(x, k, 0)
    our_s = time.perf_counter() - began
    agreement = adjusted_rand_score(ref.labels_, ours.labels_)
    print(f"{args.n:,} rows x {args.dim}, k {k}: scikit-learn KMeans {ref_s:.1f}s ({ref.n_iter_} iterations), "
          f"inertia {ref.inertia_:,.1f}; curate {our_s:.1f}s ({ours.n_iter_} iterations, seeded from "
          f"{seeding['init_rows']:,} rows of at most {KMEANS.init_rows:,}), inertia {ours.inertia_:,.1f}; "
          f"adjusted Rand index {agreement:.3f}")
    print(f"RESULT kmeans_rows={args.n} k={k} seconds_ratio={ref_s / our_s:.2f} "
          f"inertia_ratio={ours.inertia_ / ref.inertia_:.4f} adjusted_rand={agreement:.3f} "
          f"reference=sklearn_kmeans_float32_kmeans++")


if __name__ == "__main__":
    main()
