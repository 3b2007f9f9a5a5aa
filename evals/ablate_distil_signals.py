"""Token signals as features of the distillation ridge: does a pool's SmolLM2 loss / IFD per answer help ~1,000
judge labels (500 on Auto-J) teach a scorer the rest of the pool? (issue 13: signals may enter "when present")

    python evals/ablate_distil_signals.py --signals .devsig/signals.jsonl.gz [--seeds 5]

The pools and splits are evals/eval_distil.py's: a random set of whole questions holding ~``--labels`` answers
is judged, every other answer is scored (seeds 0..N-1 draw the set). The ridge reads the features of
``curate train-scorer``'s instruction-embedding kind (instruction embedding + lengths + response statistics;
alpha and embedding weight chosen by grouped 5-fold Spearman on the judged part), with and without three more
columns: the response's loss given the instruction, its loss alone, and log IFD (evals/ablate_quality_signals.py
``compute`` wrote them for every MT-bench and Auto-J answer on the lent GPU at stop 24). An answer without a
signal gets the pool mean. Last line: ``RESULT ...`` (mean Spearman on the unseen answers, per pool).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scorer_label_data as D  # noqa: E402
import train_default_scorers as T  # noqa: E402
from ablate_quality_signals import key  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402
from sklearn.model_selection import GroupKFold  # noqa: E402

from curate.scorers import Scorer  # noqa: E402
from curate.scorers.features import n_stat_columns  # noqa: E402
from curate.scorers.head import fit_head, predict_head  # noqa: E402

GRID = [(alpha, weight) for alpha in (10.0, 30.0, 100.0, 300.0) for weight in (0.05, 0.2)]
POOLS = {"mtbench": 1000, "autoj": 500}


def fit_predict(X, y, X_new, alpha, weight, n_stat):
    w = fit_head(X, y, head="ridge", alpha=alpha, C=1.0, n_embedding_columns=X.shape[1] - n_stat, embedding_weight=weight)
    return predict_head(w, X_new, "ridge")


def chosen(X, y, groups, n_stat):
    """The (alpha, embedding weight) with the best grouped 5-fold Spearman on the judged part."""
    def folds_spearman(cfg):
        pred = np.zeros(len(y))
        for a, b in GroupKFold(5).split(X, y, groups):
            pred[b] = fit_predict(X[a], y[a], X[b], *cfg, n_stat)
        return spearmanr(pred, y)[0]
    return max(GRID, key=folds_spearman)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--signals", type=Path, required=True, help="ablate_quality_signals.py compute's output")
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    with gzip.open(args.signals, "rt", encoding="utf-8") as fh:
        sig = {r["key"]: r for r in map(json.loads, fh)}
    reader = Scorer(reads=["instruction", "response"], head="ridge", features=["embeddings", "length", "stats"],
                    embed_inputs=["instruction"], name="distil")
    n_stat = n_stat_columns(reader.reads, reader.embed_inputs, reader.features)
    result = {}
    for source, labels in POOLS.items():
        rows = D.single_scores(source, args.data)
        ins, res = [r["instruction"] for r in rows], [r["response"] for r in rows]
        S = np.array([[np.nan] * 3 if (s := sig.get(key(i, r))) is None or s.get("ifd") is None else
                      [s["loss_conditioned"], s["loss_alone"], np.log(max(s["ifd"], 1e-6))] for i, r in zip(ins, res, strict=True)])
        missing = int(np.isnan(S).any(axis=1).sum())
        S = np.where(np.isnan(S), np.nanmean(S, axis=0), S)
        y = np.array([r["label"] for r in rows], float)
        X = T.features(reader, ins, res)
        Xs = np.hstack([X, S])
        alone = ", ".join(f"{n} {spearmanr(S[:, k], y)[0]:+.3f}" for k, n in enumerate(("loss|instruction", "loss alone", "log IFD")))
        print(f"{source}: {len(rows):,} answers, {missing} without a signal; each signal alone vs the label over the pool: {alone}")
        runs = []
        for seed in range(args.seeds):
            judged = D.judged_groups(rows, labels, seed)
            tr = np.array([r["group"] in judged for r in rows])
            g = np.array([r["group"] for r in rows])[tr]
            without = fit_predict(X[tr], y[tr], X[~tr], *chosen(X[tr], y[tr], g, n_stat), n_stat)
            with_sig = fit_predict(Xs[tr], y[tr], Xs[~tr], *chosen(Xs[tr], y[tr], g, n_stat + 3), n_stat + 3)
            runs.append((spearmanr(without, y[~tr])[0], spearmanr(with_sig, y[~tr])[0]))
            print(f"  seed {seed}: {int(tr.sum())} judged -> {int((~tr).sum())} unseen; Spearman without {runs[-1][0]:.3f}, "
                  f"with signals {runs[-1][1]:.3f}", flush=True)
        a = np.array(runs)
        result[source] = a.mean(axis=0)
        print(f"  mean over {args.seeds} draws: without {a[:, 0].mean():.3f}, with {a[:, 1].mean():.3f} "
              f"({np.mean(a[:, 1] > a[:, 0]):.0%} of draws up)")
    print("RESULT " + " ".join(f"{s}_without={m[0]:.3f} {s}_with_signals={m[1]:.3f}" for s, m in result.items()))


if __name__ == "__main__":
    main()
