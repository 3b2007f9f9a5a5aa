"""`curate train-scorer --labels evol_complexity --chain-pairs` against the same call without the pairs, when the
rank-and-score judge's numbers are noise (a small local judge): does the order the chains have by construction
teach the scorer what a requirement is?

    python evals/eval_chain_pairs.py [--seeds 3] [--chains 60]

Label sets are synthetic Evol complexity chains (``curate.scorers.constraints.rewritten_chains``: version ``i`` of a
chain asks for ``i`` requirements, each version phrased afresh and padded with requirement-free filler, so more
requirements often means fewer words), stored as a workspace label set with ``seed_id``, ``step`` and ``operation``
as ``curate evol`` writes them, and judge scores drawn at random (1-6). Per draw, ``train_scorer(labels=...)`` with
and without ``chain_pairs=True`` is scored on 40 new chains of new tasks in the held-out phrasings: the share of
version pairs of one chain it orders right, beside "the longer version is the harder". Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from curate.scorers import train_scorer  # noqa: E402
from curate.scorers.constraints import order_accuracy, rewritten_chains  # noqa: E402
from curate.session import Workspace  # noqa: E402

TOPICS = ["rivers", "volcanoes", "chess", "bread", "comets", "bees", "bridges", "jazz", "glaciers", "tea",
          "owls", "deserts", "printing", "tides", "maps", "violins", "coral", "trains", "salt", "kites"]
AUDIENCES = ["young", "curious", "busy", "tired", "new", "old"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--chains", type=int, default=60, help="training chains per draw (of 5 versions each)")
    args = ap.parse_args()
    tasks = [f"Write a short note about {t} for a {a} reader." for a in AUDIENCES for t in TOPICS]
    fresh = rewritten_chains([f"Explain how {t} work to a friend who is {a}." for t in TOPICS for a in ("new", "old")],
                             steps=4, seed=10_000, held_out=True)
    length = order_accuracy(fresh, [[len(v) for v in chain] for chain in fresh])
    figures: dict[str, list[float]] = {"with": [], "without": [], "held_with": [], "held_length": []}
    for draw in range(args.seeds):
        rng = np.random.default_rng(draw)
        picked = [tasks[i] for i in rng.choice(len(tasks), size=args.chains, replace=False)]
        chains = rewritten_chains(picked, steps=4, seed=draw)
        rows = [{"text": text, "score": float(rng.integers(1, 7)), "seed_id": f"s{c}", "step": k,
                 "operation": None if k == 0 else "add_constraint"} for c, chain in enumerate(chains) for k, text in enumerate(chain)]
        with tempfile.TemporaryDirectory() as tmp:
            ws = Workspace(Path(tmp) / "ws")
            ws.add_labels("evol_complexity", rows, {"kind": "complexity"})
            out = {}
            for label, pairs in (("without", False), ("with", True)):
                result = train_scorer(ws, labels="evol_complexity", chain_pairs=pairs, seed=draw)
                out[label] = order_accuracy(fresh, [result.scorer.predict(chain).tolist() for chain in fresh])
                figures[label].append(out[label])
            held = result.evaluation.holdout
            figures["held_with"].append(held["scorer"]["chain_order"])
            figures["held_length"].append(held["length"]["chain_order"])
        print(f"draw {draw}: {len(chains)} chains, random judge scores -> new chains ordered: with the pairs "
              f"{out['with']:.3f}, without {out['without']:.3f} (length {length:.3f}); held-out training chains: "
              f"{held['scorer']['chain_order']:.3f} (length {held['length']['chain_order']:.3f})")
    mean = {k: float(np.mean(v)) for k, v in figures.items()}
    print(f"RESULT chain_order_with_pairs={mean['with']:.3f} chain_order_without_pairs={mean['without']:.3f} "
          f"length={length:.3f} held_out_with_pairs={mean['held_with']:.3f} held_out_length={mean['held_length']:.3f} "
          f"draws={args.seeds}")


if __name__ == "__main__":
    main()
