"""Recall of the ``minhash`` selector near its threshold, and its cost, against datasketch's default band layout.

A near-duplicate pair is only found when the LSH bands make its rows candidates; the selector then checks the
estimated Jaccard against ``threshold``. datasketch's default layout (weights 0.5/0.5, as data-juicer uses it) finds a
pair at Jaccard 0.8 40% of the time; curate's default (``MinHashDefaults.false_positive_weight``) favours recall,
since a false candidate costs one signature comparison. This measures, on planted pairs of known shingle Jaccard
(random words, some replaced), the share of pairs whose copy is marked a near-duplicate per Jaccard bin, for both
layouts, and the selector's time on a real pool (``--pool``, e.g. ../shared/data/pool_30k.jsonl) for both.

    python evals/bench_minhash_recall.py [--pool ../shared/data/pool_30k.jsonl] [--pairs 2000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from curate.defaults import MINHASH
from curate.select.dedup import shingles
from curate.session import Workspace

LAYOUTS = {"curate": MINHASH.false_positive_weight, "datasketch default": 0.5}
BINS = [(0.70, 0.75), (0.75, 0.80), (0.80, 0.85), (0.85, 0.90), (0.90, 0.95), (0.95, 1.01)]




def planted_pairs(n: int, seed: int = 0) -> tuple[list[dict], list[float]]:
    """``n`` (original, copy) pairs of 40-80 random words, the copy with 1-4 words replaced; their true Jaccard."""
    rnd = random.Random(seed)
    vocab = [f"w{i}" for i in range(20000)]
    records, jaccard = [], []
    for p in range(n):
        words = [rnd.choice(vocab) for _ in range(rnd.randint(40, 80))]
        copy = list(words)
        for pos in rnd.sample(range(len(words)), rnd.randint(1, 4)):
            copy[pos] = rnd.choice(vocab)
        a, b = " ".join(words), " ".join(copy)
        sa, sb = shingles(a, MINHASH.shingle), shingles(b, MINHASH.shingle)
        jaccard.append(len(sa & sb) / len(sa | sb))
        records += [{"instruction": a, "output": f"pair {p}"}, {"instruction": b, "output": f"pair {p}"}]
    return records, jaccard


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--pool", default=None, help="a real pool to time both layouts on")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-minhash-"))
    records, jaccard = planted_pairs(args.pairs)
    (tmp / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    ws = Workspace(tmp / "pairs")
    ws.load(tmp / "pairs.jsonl")
    jac = np.array(jaccard)
    found: dict[str, np.ndarray] = {}
    for name, weight in LAYOUTS.items():
        sel = ws.select(method="minhash", name=f"m{weight}", text="instruction", false_positive_weight=weight)
        decided = dict(zip(sel.table["id"].to_pylist(), sel.table["decision"].to_pylist(), strict=True))
        copies = [ws.ids[2 * p + 1] for p in range(args.pairs)]
        found[name] = np.array([decided[c] == "duplicate" for c in copies])
        prov = sel.provenance
        print(f"{name}: false_positive_weight {weight}, {prov['bands']} bands x {prov['rows_per_band']} rows")
    print(f"{'true Jaccard':>14} {'pairs':>6} " + " ".join(f"{n:>20}" for n in LAYOUTS))
    for lo, hi in BINS:
        inside = (jac >= lo) & (jac < hi)
        print(f"{lo:.2f}-{min(hi, 1):.2f} {inside.sum():>11} " + " ".join(
            f"{found[n][inside].mean():>20.3f}" if inside.any() else f"{'-':>20}" for n in LAYOUTS))
    above = jac >= MINHASH.threshold
    recall = {n: float(found[n][above].mean()) for n in LAYOUTS}
    below = {n: float(found[n][jac < 0.75].mean()) if (jac < 0.75).any() else float("nan") for n in LAYOUTS}
    seconds = {}
    if args.pool:
        real = Workspace(tmp / "real")
        real.load(args.pool, on_error="skip")
        for name, weight in LAYOUTS.items():
            started = time.perf_counter()
            sel = real.select(method="minhash", name=f"r{weight}", false_positive_weight=weight)
            seconds[name] = time.perf_counter() - started
            print(f"{name}: {args.pool}: {len(real):,} rows, {sel.decisions().get('duplicate', 0):,} near-duplicates, "
                  f"{seconds[name]:.1f} s")
    ours, ref = "curate", "datasketch default"
    timing = (f" pool_seconds={seconds[ours]:.1f} reference_pool_seconds={seconds[ref]:.1f} "
              f"time_ratio={seconds[ours] / seconds[ref]:.2f}") if seconds else ""
    print(f"RESULT minhash_recall_at_or_above_{MINHASH.threshold}={recall[ours]:.3f} "
          f"reference_recall={recall[ref]:.3f} recall_ratio={recall[ours] / recall[ref]:.3f} "
          f"found_below_0.75={below[ours]:.3f} "
          f"reference_found_below_0.75={below[ref]:.3f}{timing}")


if __name__ == "__main__":
    main()
