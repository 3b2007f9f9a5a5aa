"""Ablation (issue 13): does the complexity head lose FLASK agreement by learning constraint chains?

Fits the default complexity head on the FLASK train split with and without chain pairs (pair_weight 0) and prints
held-out FLASK Spearman and held-out chain order for each setting. Run: python3 evals/ablate_complexity_chains.py
Last line: ``RESULT`` with the best test FLASK Spearman without chain pairs and with them (the reference is the
same head without chains, in the same run)."""
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import train_default_scorers as T  # noqa: E402  (evals/ on the path first)

data = Path(__file__).resolve().parents[2] / 'shared' / 'data'
flask, chains = T.complexity_sets(data)
best: dict[bool, float] = {}
for cfg in [dict(alpha=10.0, pair_weight=0.0, embedding_weight=1.0), dict(alpha=10.0, pair_weight=0.0, embedding_weight=0.5),
            dict(alpha=100.0, pair_weight=0.0, embedding_weight=0.5)] + T.GRID["complexity"]:
    sc = T.fit_complexity(cfg, flask, chains, ("train",))
    r = T.complexity_report(sc, flask, chains, "test", ("train",))
    rv = T.complexity_report(sc, flask, chains, "val", ("train",))
    print(cfg, "test flask", round(r["flask"]["scorer"]["spearman"], 3), "chains", round(r["chains"]["scorer"], 3),
          "| val flask", round(rv["flask"]["scorer"]["spearman"], 3), "chains", round(rv["chains"]["scorer"], 3), flush=True)
    with_chains = cfg.get("pair_weight", 0.0) > 0
    best[with_chains] = max(best.get(with_chains, float("-inf")), r["flask"]["scorer"]["spearman"])
print(f"RESULT flask_test_spearman_without_chains={best.get(False, float('nan')):.3f} "
      f"flask_test_spearman_with_chains={best.get(True, float('nan')):.3f}")
