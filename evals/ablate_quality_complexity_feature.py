"""The instruction's complexity score as a feature of the quality ridge: GPT-4 rates answers to hard questions
lower (MT-bench's math and reasoning turns), so does knowing how hard the instruction is lift zero-shot agreement?

    python evals/ablate_quality_complexity_feature.py [--data ../shared/data] [--scorer complexity]

``curate run`` computes the complexity score before quality anyway, so the feature would cost nothing there. This
scores every labelled instruction with the shipped complexity scorer (cached), prints its Spearman with the quality
labels, refits the shipped quality ridge (evals/train_default_scorers.py: same config, split, sources) with the
score as one more statistics column, and prints val, test and zero-shot figures (one source left out of training,
measured on all of its rows) beside the shipped features. Last line: ``RESULT ...``.
Measured (evals/results/issue13_quality_complexity_feature.log): the score carries almost nothing of GPT-4's
quality labels (Spearman 0.071 on MT-bench, -0.049 on Auto-J). Val rises (0.553 vs 0.543) but the test and
zero-shot figures move by less than 0.01 (MT-bench 0.534 vs 0.541; zero-shot MT-bench 0.384 vs 0.383, Auto-J
0.251 vs 0.247). Not adopted: that does not pay for a quality scorer that cannot run without the complexity
scorer's column.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import quality_ablation as Q  # noqa: E402
import scorer_label_data as D  # noqa: E402
import train_default_scorers as T  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from curate.scorers import Scorer  # noqa: E402

SHIPPED = "shipped features"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--scorer", default="complexity", help="the complexity scorer (shipped name or folder)")
    args = ap.parse_args()
    pairs, singles = T.quality_sets(args.data)
    instructions = sorted({r["instruction"] for rows in singles.values() for r in rows} | {q["instruction"] for q in pairs})
    t0 = time.perf_counter()
    score = dict(zip(instructions, T.predict(Scorer.load(args.scorer), instructions), strict=True))
    print(f"{len(instructions):,} instructions scored by {args.scorer} in {time.perf_counter() - t0:.0f} s")
    for s, rows in singles.items():
        rho = spearmanr([score[r["instruction"]] for r in rows], [r["label"] for r in rows]).statistic
        print(f"{s}: Spearman of the complexity score with GPT-4's quality label, all rows: {rho:.3f}")
    def complexity_column(instructions, responses):  # centred and scaled like the other statistics
        return (np.array([score[t] for t in instructions])[:, None] - 3.5) / 1.5

    shipped = dict(T.GRID["quality"][0])
    rows = {SHIPPED: Q.measure(shipped, pairs, singles)}
    with Q.extra_columns(complexity_column, 1):
        rows["+ instruction's complexity score"] = Q.measure(shipped, pairs, singles)
    Q.print_rows(rows, SHIPPED)


if __name__ == "__main__":
    main()
