"""Ablation: the default complexity cross-encoder plus w * log(instruction chars), i.e. length as an explicit
covariate blended into the score. Does it lift same-task constraint order on rewritten (length-neutral) chains
without costing FLASK? w would be chosen on val (FLASK val + rewritten chains of the training families); the
test figures are printed beside, for every w.

    python evals/ablate_complexity_length_blend.py [--data ../shared/data]

Measured on the then-default adapter (appended chains only, commit 1e6c85c; evals/results/
issue13_complexity_length_blend.log): no. The best val w (0.3) takes rewritten-chain order from 0.719 to 0.773
(length alone: 0.845) and FLASK test from 0.694 to 0.687; larger w trades more FLASK for little order. Not
adopted; training on rewritten chains as well did better (evals/compare_complexity_scorers.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scorer_label_data as D  # noqa: E402
import train_default_scorers as T  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from curate.scorers import Scorer  # noqa: E402
from curate.scorers.constraints import order_accuracy  # noqa: E402

WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    args = ap.parse_args()
    flask = D.flask_levels(args.data)
    sets = D.complexity_chain_sets(flask)
    ce = Scorer.load("complexity")

    def blended(texts: list[str], w: float) -> np.ndarray:
        return T.predict(ce, texts) + w * np.log([len(t) for t in texts])

    def chain_order(chains: list[list[str]], w: float) -> float:
        flat = [t for c in chains for t in c]
        s, per, k = blended(flat, w), [], 0
        for c in chains:
            per.append(s[k:k + len(c)].tolist())
            k += len(c)
        return order_accuracy(chains, per)

    def flask_spearman(split: str, w: float) -> float:
        rows = [r for r in flask if r["split"] == split]
        return float(spearmanr(blended([r["instruction"] for r in rows], w), [r["label"] for r in rows]).statistic)

    val = {}
    for w in WEIGHTS:
        val[w] = 0.5 * flask_spearman("val", w) + 0.5 * (2 * chain_order(sets["rewritten"]["val"], w) - 1)
        print(f"w={w:<5} val: flask {flask_spearman('val', w):.3f} rewritten {chain_order(sets['rewritten']['val'], w):.3f} "
              f"| test: flask {flask_spearman('test', w):.3f} rewritten {chain_order(sets['rewritten']['test'], w):.3f} "
              f"appended {chain_order(sets['appended']['test'], w):.3f}")
    best = max(val, key=val.get)
    lengths = [[len(t) for t in c] for c in sets["rewritten"]["test"]]
    print(f"RESULT chosen_w={best} flask_test={flask_spearman('test', best):.3f} (w=0: {flask_spearman('test', 0.0):.3f}) "
          f"rewritten_order={chain_order(sets['rewritten']['test'], best):.3f} (w=0: "
          f"{chain_order(sets['rewritten']['test'], 0.0):.3f}; length alone "
          f"{order_accuracy(sets['rewritten']['test'], lengths):.3f})")


if __name__ == "__main__":
    main()
