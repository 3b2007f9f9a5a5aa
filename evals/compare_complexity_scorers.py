"""Compare complexity scorers on the val and test splits, to choose between training recipes on val.

    python evals/compare_complexity_scorers.py SCORER [SCORER ...] [--data ../shared/data]
    # e.g. the shipped default against the former one:
    #   git show 1e6c85c:curate/scorers/weights/complexity/adapter.safetensors > /tmp/old/adapter.safetensors (+ scorer.json)
    #   python evals/compare_complexity_scorers.py complexity /tmp/old

Per split, through ``Scorer.predict`` (the calibrated scores ``curate score`` writes): FLASK Spearman with its
interval, same-task constraint order on appended chains and on rewritten (length-neutral) chains -- val: training
families, val seeds; test: held-out families, held-out seeds and phrasings -- and the share of filler-padded twins
scored above their plain version (no length bias: ~0.5). The val criterion weighs FLASK and the two chain styles
as evals/train_default_scorers.py's ``complexity_val`` weighs FLASK and chains: 0.5 * Spearman + 0.25 * (2 *
order - 1) per style. Last line: ``RESULT`` with the val choice.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import scorer_label_data as D  # noqa: E402
import train_default_scorers as T  # noqa: E402

from curate.scorers import Scorer  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scorers", nargs="+", help="shipped names or saved scorer folders")
    ap.add_argument("--data", type=Path, default=D.DATA)
    args = ap.parse_args()
    flask, chain_sets = T.complexity_sets(args.data, "appended")
    sets = D.complexity_chain_sets(flask)
    lengths = {split: {style: T._chain_figures(Scorer.load(args.scorers[0]), sets[style][split], [])["instruction_length"]
                       for style in ("appended", "rewritten")} for split in ("val", "test")}
    criterion = {}
    for path in args.scorers:
        sc = Scorer.load(path)
        for split in ("val", "test"):
            rep = T.complexity_report(sc, flask, chain_sets, split)
            order = {style: T._chain_figures(sc, sets[style][split], [])["scorer"] for style in ("appended", "rewritten")}
            f = rep["flask"]["scorer"]
            value = 0.5 * f["spearman"] + sum(0.25 * (2 * o - 1) for o in order.values())
            if split == "val":
                criterion[path] = value
            print(f"{path:40} {split:4}: FLASK {f['spearman']:.3f} ({f['spearman_ci95'][0]:.2f}..{f['spearman_ci95'][1]:.2f}) "
                  f"appended {order['appended']:.3f} rewritten {order['rewritten']:.3f} "
                  f"filler twin scored higher {rep['filler_twins']['scorer_padded_higher']:.3f}  criterion {value:.3f}")
    for split in ("val", "test"):
        print(f"{'instruction length':40} {split:4}: appended {lengths[split]['appended']:.3f} "
              f"rewritten {lengths[split]['rewritten']:.3f}")
    best = max(criterion, key=criterion.get)
    print(f"RESULT val_choice={best} " + " ".join(f"{p}={v:.3f}" for p, v in criterion.items()))


if __name__ == "__main__":
    main()
