"""Benchmark: the hnsw dedup's missed-duplicate check (``curate.select.ann_check``) against the true misses.

    python evals/bench_ann_check.py [--n 5000] [--dim 64] [--threshold 0.9] [--efs 1,8,64] [--seed 0]

The semantic dedup walk over an hnswlib graph (``index="hnsw"``) keeps a row whose kept neighbour above the threshold
the graph does not return. After the walk, a seeded sample of ``ANN.check_rows`` kept rows is compared exactly with
every row kept before it, and the sample's missed share times the kept rows is recorded as ``estimated_missed``.
Here the true count is the same check run over *every* kept row (each compared with all kept before it), and both
are printed per ``ef`` (the graph's query beam: 1 misses many, 64 is the default), with the check's seconds beside
the hnsw walk's (the walk's own seconds, its check excluded) in the same run, and their ratios (``estimate_vs_true``:
the estimate over the true count; ``check_vs_walk_s``: the check's seconds over the walk's). Data: ``--n`` clustered synthetic
unit vectors (``evals/bench_admission.synthetic``: clusters from near-duplicates to loose). The machine is shared:
times are indicative. Prints one ``RESULT`` line per ``ef``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.defaults import ANN  # noqa: E402
from curate.select.admission import unit_rows  # noqa: E402
from curate.select.ann_check import missed_duplicates  # noqa: E402
from curate.select.dedup import semantic_duplicates  # noqa: E402
from evals.bench_admission import synthetic  # noqa: E402


def ratio(value: float, reference: float) -> str:
    """``value / reference`` to 3 places; ``1`` when both are 0 (the estimate matched no misses), ``inf`` when only
    the reference is."""
    if reference == 0:
        return "1" if value == 0 else "inf"
    return f"{value / reference:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--efs", default="1,8,64")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    x = unit_rows(synthetic(args.n, args.dim, seed=args.seed))
    print(f"{len(x):,} clustered {args.dim}-d rows, threshold {args.threshold}, check sample {ANN.check_rows:,}, "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    for ef in (int(e) for e in args.efs.split(",")):
        started = time.perf_counter()
        duplicate, _, _, _, info = semantic_duplicates(x, args.threshold, "hnsw", ef=ef, seed=args.seed)
        walk_and_check_s = time.perf_counter() - started
        kept = np.flatnonzero(~duplicate)
        started = time.perf_counter()
        check = missed_duplicates(x, kept, args.threshold, ANN.check_rows, args.seed)  # as the walk ran it
        check_s = time.perf_counter() - started
        assert check["estimated_missed"] == info["index_check"]["estimated_missed"]
        true = missed_duplicates(x, kept, args.threshold, len(kept), args.seed)["missed"]  # every kept row
        print(f"RESULT ef={ef}: kept {len(kept):,}; true misses {true:,}, check estimated "
              f"{check['estimated_missed']:,} ({check['missed']} of {check['checked']:,} sampled); check "
              f"{check_s:.3f} s beside the hnsw walk's {walk_and_check_s - check_s:.3f} s; "
              f"estimate_vs_true={ratio(check['estimated_missed'], true)} "
              f"check_vs_walk_s={ratio(check_s, walk_and_check_s - check_s)}", flush=True)


if __name__ == "__main__":
    main()
