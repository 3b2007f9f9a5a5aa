"""Another judge's labels on another kind of data as a fourth source of the quality ridge: does it make the
zero-shot agreement with GPT-4 on an unseen source generalise better (issue 13)?

    python evals/ablate_quality_extra_judge.py [--data ../shared/data]

AlpaGasus' binary flags on a uniform sample of Alpaca (alpaca_9k_judge_flags.jsonl: Claude quality >= 4.5 and
ChatGPT helpfulness >= 4.5) are summed into a 0-2 label and added, standardised like the other pointwise sources,
to the shipped quality ridge's training (evals/train_default_scorers.py: same config, splits, pair loss). The
flags are plentiful (9,229 rows) and the head's loss is a mean over all pointwise rows, so a subsample of N rows
(hash of the instruction) is added, for N in a small grid. Printed per N: test figures per source and zero-shot
(MT-bench or Auto-J left out, all of its rows), beside the shipped training. Last line: ``RESULT ...``.

Measured (evals/results/issue13_quality_extra_judge.log): no. The more flags, the lower MT-bench (test 0.541 ->
0.499 / 0.455 / 0.414; zero-shot 0.383 -> 0.362 / 0.288 / 0.276), while Auto-J moves within +0.02. The val
choice (1,000 rows) is below the shipped training on val too (0.539 vs 0.543). Not adopted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import quality_ablation as Q  # noqa: E402
import scorer_label_data as D  # noqa: E402
import train_default_scorers as T  # noqa: E402

SHIPPED = "shipped training (3 sources)"
SIZES = (1000, 3000, 10_000)  # the last: all of them


def alpagasus(data: Path) -> list[dict]:
    """``D.single_scores("alpagasus")`` (label 0-2), sorted by a hash: its first N rows are a fixed random subsample."""
    return sorted(D.single_scores("alpagasus", data),
                  key=lambda r: D.split_of(r["instruction"], salt="alpagasus-subsample") + r["instruction"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    args = ap.parse_args()
    pairs, singles = T.quality_sets(args.data)
    flags = alpagasus(args.data)
    t0 = time.perf_counter()
    cfg, zero_shot = T.GRID["quality"][0], ("mtbench", "autoj")
    rows = {SHIPPED: Q.measure(cfg, pairs, singles, zero_shot=zero_shot)}
    for n in SIZES:
        rows[f"+ AlpaGasus flags, {min(n, len(flags))} rows"] = Q.measure(cfg, pairs, {**singles, "alpagasus": flags[:n]},
                                                                     Q.SOURCES + ("alpagasus",), zero_shot)
    print(f"({time.perf_counter() - t0:.0f} s; zero-shot = source left out of training, all of its rows; "
          f"flags: {len(flags)} rows, label 0/1/2 = {[sum(r['label'] == k for r in flags) for k in (0, 1, 2)]})")
    Q.print_rows(rows, SHIPPED, "training")

if __name__ == "__main__":
    main()
