"""Ablation (issue 13): choose the quality ridge's hyperparameters by a split by source instead of by pooled val?

The issue asks scorers to generalise to judges and sources never trained on ("early-stop on a split by source").
For each config of a grid (alpha x pair_weight x embedding_weight) this fits the head on two sources' ``train``
groups and scores the third source's ``val`` groups (leave-one-source-out, LOSO), for each source in turn; it also
gives the pooled val score the shipped config was chosen by. Then, for the shipped config and the LOSO-best one,
the held-out figures: ``test`` groups with all sources trained (train split), and zero-shot on each source's
``test`` groups from the other two (train + val). Test figures are printed for the record, never used to choose.

    python3 evals/ablate_quality_selection.py [--data ../shared/data]   # ~10 min on 2 cores (features cached)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import numpy as np  # noqa: E402
import train_default_scorers as T  # noqa: E402  (evals/ on the path first)

SOURCES = ("alpaca_eval", "mtbench", "autoj")
GRID = [dict(alpha=a, pair_weight=p, embedding_weight=e) for a in (10.0, 30.0, 100.0, 300.0, 1000.0)
        for p in (0.3, 1.0, 3.0) for e in (0.005, 0.05, 0.2, 0.5, 1.0)]


def figure(report: dict, source: str) -> float:
    """One number per source: Spearman for single scores, 2 x (accuracy - 0.5) for the preference pairs."""
    return 2 * (report[source]["all"]["scorer"] - 0.5) if source == "alpaca_eval" else report[source]["scorer"]["spearman"]


def loso(cfg: dict, pairs, singles, split: str, fit_splits: tuple[str, ...]) -> dict:
    out = {}
    for held in SOURCES:
        sc = T.fit_quality(cfg, pairs, singles, fit_splits, tuple(s for s in SOURCES if s != held))
        out[held] = T.quality_report(sc, pairs, singles, split, fit_splits)[held]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=T.D.DATA)
    data = ap.parse_args().data
    pairs, singles = T.quality_sets(data)
    rows = []
    for cfg in GRID:
        lv = loso(cfg, pairs, singles, "val", ("train",))
        pooled = T.val_score(T.quality_report(T.fit_quality(cfg, pairs, singles, ("train",)), pairs, singles, "val",
                                              ("train",)))
        rows.append(dict(cfg=cfg, loso_val=float(np.mean([figure(lv, s) for s in SOURCES])), pooled_val=pooled))
        print(json.dumps(rows[-1]), flush=True)
    shipped = T.GRID["quality"][0]
    best = max(rows, key=lambda r: r["loso_val"])["cfg"]
    result = {}
    for name, cfg in (("shipped", shipped), ("loso_best", best)):
        test = T.quality_report(T.fit_quality(cfg, pairs, singles, ("train",)), pairs, singles, "test")
        zero = loso(cfg, pairs, singles, "test", ("train", "val"))
        r = {"mtbench": test["mtbench"]["scorer"]["spearman"], "autoj": test["autoj"]["scorer"]["spearman"],
             "pairs": test["alpaca_eval"]["all"]["scorer"], "pairs_length_matched": test["alpaca_eval"]["length_matched"]["scorer"],
             "zero_shot_autoj": zero["autoj"]["scorer"]["spearman"], "zero_shot_mtbench": zero["mtbench"]["scorer"]["spearman"],
             "zero_shot_pairs": zero["alpaca_eval"]["all"]["scorer"]}
        result[name] = r
        print(name, cfg, {k: round(v, 3) for k, v in r.items()}, flush=True)
    print("RESULT " + " ".join(f"{name}_{k}={v:.3f}" for name, r in result.items() for k, v in r.items()))


if __name__ == "__main__":
    main()
