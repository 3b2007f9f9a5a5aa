"""Ablation: does averaging the ridge with a fine-tuned cross-encoder beat the ridge alone in distillation?

    python evals/ablate_distil_blend.py [--source mtbench|autoj] [--labels 1000] [--seeds 0,1,2] [--device cpu] \
        [--reader-predictions DIR]

Both are fitted exactly as ``curate train-scorer`` fits them on the judged part of evals/eval_distil.py's split: the
ridge default (alpha and embedding weight by grouped K-fold, refit on every label) and the cross-encoder
(:func:`curate.scorers.training.train_finetuned`, 2 epochs, fresh adapter). The blend is the mean of their z-scores
over the rest of the pool, an equal weight fixed before looking (choosing it on the labels would need a third
split of ~1,000 labels). Figures on the rest of the pool. Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scorer_label_data as D  # noqa: E402
from eval_distil_finetuned import training_data  # noqa: E402

from curate.scorers import Scorer, agreement, train_and_evaluate  # noqa: E402
from curate.scorers.features import to_turn  # noqa: E402
from curate.scorers.training import DEFAULT_CONFIG, RIDGE_SEARCH, train_finetuned  # noqa: E402


def z(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / x.std()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--source", choices=("mtbench", "autoj"), default="mtbench")
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reader-predictions", type=Path, help="read the cross-encoder's scores of the rest of the pool "
                    "from here (evals/eval_distil_finetuned.py --save-predictions, e.g. run on a GPU) instead of "
                    "fitting it on this machine")
    args = ap.parse_args()
    rows = D.single_scores(args.source, args.data)
    figures: dict[str, list[float]] = {"ridge": [], "cross-encoder": [], "blend": []}
    for seed in (int(s) for s in args.seeds.split(",")):
        judged = D.judged_groups(rows, args.labels, seed)
        train = [r for r in rows if r["group"] in judged]
        rest = [r for r in rows if r["group"] not in judged]
        y = np.array([r["label"] for r in rest], dtype=np.float64)
        with tempfile.TemporaryDirectory() as tmp:
            ridge = Scorer(reads=["instruction", "response"], head="ridge", name="gpt4_scorer", **DEFAULT_CONFIG[2])
            train_and_evaluate(ridge, [to_turn(r) for r in train], [r["label"] for r in train],
                               groups=[r["group"] for r in train], cache_dir=tmp, search=RIDGE_SEARCH)
            p_ridge = ridge.predict([to_turn(r) for r in rest], cache_dir=tmp)
        if args.reader_predictions:
            p_ce = np.load(args.reader_predictions / f"{args.source}_cross-encoder_seed{seed}.npy")
            if len(p_ce) != len(rest):
                raise SystemExit(f"{args.reader_predictions}: {len(p_ce)} scores for {len(rest)} rows (another split?)")
        else:
            ce = train_finetuned(training_data(train, args.source), "gpt4_scorer", holdout=0.2, seed=seed,
                                 kind="cross-encoder", device=args.device).scorer
            p_ce = ce.predict([to_turn(r) for r in rest])
        preds = {"ridge": p_ridge, "cross-encoder": p_ce, "blend": z(p_ridge) + z(p_ce)}
        line = []
        for name, p in preds.items():
            figures[name].append(agreement(y, p)["spearman"])
            line.append(f"{name} {figures[name][-1]:.3f}")
        corr = agreement(p_ridge, p_ce)["spearman"]
        print(f"seed {seed}: {len(train)} labels -> {len(rest)} answers: " + ", ".join(line)
              + f" (ridge vs cross-encoder spearman {corr:.3f})", flush=True)
    print(f"RESULT source={args.source} seeds={args.seeds} " + " ".join(
        f"{name.replace('-', '_')}_mean={np.mean(v):.3f}" for name, v in figures.items()))


if __name__ == "__main__":
    main()
