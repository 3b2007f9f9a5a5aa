"""Benchmark: semantic dedup over an hnswlib kNN graph against the exact walk (and today's K-means default).

    python evals/bench_dedup.py [--n 100000] [--threshold 0.95] [--ef 64] [--threads 1]
                                [--workspace /work/runs/new30k/workspace (evals/pool30k_workspace.py builds it)] [--large 0]

The semantic dedup walk (``curate.select.dedup``): rows in pool order; a row is a duplicate when a kept
earlier row has cosine > threshold. ``exact`` checks every pair (the admission loop over all rows, no
budget) and is the reference; ``hnsw`` runs the same loop with the kept rows in an hnswlib graph (cosine):
each row asks it for its nearest kept row, rows in a block and rows near the threshold are compared
exactly, so its only error is a kept neighbour the graph does not return; ``kmeans`` (today's default)
checks pairs inside K-means clusters only. For each: duplicates found, missed (exact says duplicate, it keeps)
and added (it says duplicate, exact keeps: a row whose witness was itself missed), recall, seconds.
Data: ``--n`` clustered synthetic unit vectors (``evals/bench_admission.synthetic``: clusters whose
spread runs from near-duplicates, cosine ~0.98, to loose) and the real MiniLM embeddings of pool_30k
(``--workspace``, read only). ``--large N``: also time hnsw alone on N synthetic rows (no exact reference).
The machine is shared: times are indicative, both sides run in the same process. Prints ``RESULT`` lines.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.defaults import DEITA  # noqa: E402
from curate.select.admission import unit_rows  # noqa: E402
from curate.select.dedup import semantic_duplicates  # noqa: E402
from evals.bench_admission import synthetic  # noqa: E402
from evals.pool30k_workspace import DEFAULT, missing  # noqa: E402


def compare(name: str, x: np.ndarray, args, methods=("exact", "hnsw", "kmeans")) -> None:
    import sklearn.cluster  # noqa: F401  (kmeans' lazy import: 20 s on a loaded machine, no part of the timed walk)

    print(f"\n== {name}: {len(x):,} rows, threshold {args.threshold}, load {os.getloadavg()[0]:.1f}", flush=True)
    found, secs = {}, {}
    for m in methods:
        t = time.perf_counter()
        dup, _, _, _, info = semantic_duplicates(x, args.threshold, m, ef=args.ef, threads=args.threads)
        secs[m], found[m] = time.perf_counter() - t, dup
        print(f"{m:7s} {secs[m]:8.1f}s  {int(dup.sum()):,} duplicates  {info}", flush=True)
    ref = found["exact"]
    for m in methods[1:]:
        missed, added = int((ref & ~found[m]).sum()), int((found[m] & ~ref).sum())
        recall = float((ref & found[m]).sum() / max(1, ref.sum()))
        print(f"RESULT data={name} method={m} n={len(x)} exact_duplicates={int(ref.sum())} found={int(found[m].sum())} "
              f"missed={missed} added={added} recall={recall:.4f} seconds={secs[m]:.1f} exact_seconds={secs['exact']:.1f} "
              f"time_ratio={secs[m] / secs['exact']:.2f} "
              f"ef={args.ef} threads={args.threads}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--threshold", type=float, default=DEITA.semantic_duplicate_similarity)
    ap.add_argument("--ef", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1, help="hnswlib build threads (1: deterministic)")
    ap.add_argument("--workspace", default=DEFAULT)
    ap.add_argument("--large", type=int, default=0)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, shared with other work; load {os.getloadavg()}")
    if args.workspace and (absent := missing(args.workspace)):
        print(f"real pool_30k case skipped: {absent}")
    elif args.workspace:
        from curate.storage.workspace import Workspace

        x = unit_rows(Workspace.open(args.workspace).embeddings("default"))
        compare(f"real MiniLM pool_30k ({len(x):,})", x, args)
    if args.n:
        compare("synthetic clustered", unit_rows(synthetic(args.n, 384)), args)
    if args.large:
        x = unit_rows(synthetic(args.large, 384))
        t = time.perf_counter()
        dup, *_, info = semantic_duplicates(x, args.threshold, "hnsw", ef=args.ef, threads=args.threads)
        dt = time.perf_counter() - t
        print(f"RESULT data=synthetic method=hnsw n={args.large} found={int(dup.sum())} seconds={dt:.1f} "
              f"rows_per_s={args.large / dt:.0f} threads={args.threads} {info}", flush=True)


if __name__ == "__main__":
    main()
