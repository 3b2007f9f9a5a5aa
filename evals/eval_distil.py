"""The distillation workflow on real labels: ~1,000 GPT-4 labels of a pool train a scorer that must agree
with GPT-4 on the rest of that pool (split by question, never by row).

    python evals/eval_distil.py [--data ../shared/data] [--labels 1000] [--source mtbench|autoj|alpagasus] [--with-default]

Pool: MT-bench answers with GPT-4 single scores 1-10 (evals/scorer_label_data.py); or Auto-J's rated answers; or
AlpaGasus' 9K Alpaca answers, one per instruction, with other judges' flags (Claude quality >= 4.5 plus ChatGPT
helpfulness >= 4.5: 0-2; ``alpagasus_claude`` / ``_chatgpt``: one judge's flag; evals/results/
issue13_distil_alpagasus.log). A random set of whole
questions holding ~``--labels`` answers is "judged" (training labels); every other answer is the rest of
the pool. Kinds: the ridge ``Scorer`` that ``curate train-scorer WS --target gpt4 --features length,stats
--embed-inputs none`` fits (lengths + response statistics, no MiniLM), then (``--kinds 2`` ... ``5``) with
the instruction embedding / both embeddings (``curate train-scorer``'s default for a two-text judge: the ridge's
alpha and embedding weight chosen by grouped 5-fold Spearman on its training part) / the same features at the
former fixed settings / the former default; beside the response-length and instruction-length baselines.
Last line: ``RESULT ...``.
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
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from curate.scorers import Scorer, agreement, train_and_evaluate  # noqa: E402
from curate.scorers.features import to_turn  # noqa: E402
from curate.scorers.metrics import spearman_interval  # noqa: E402
from curate.scorers.training import DEFAULT_CONFIG, RIDGE_SEARCH  # noqa: E402

KINDS = {
    "ridge: lengths + response statistics (no MiniLM)": dict(features=["length", "stats"], alpha=10.0, embed_inputs=[]),
    "ridge: instruction embedding + response stats": dict(features=["embeddings", "length", "stats"], alpha=30.0,
                                                          embedding_weight=0.05, embed_inputs=["instruction"]),
    "ridge: curate train-scorer's default (both embeddings + length + stats; alpha, weight by K-fold)":
        dict(DEFAULT_CONFIG[2], search=RIDGE_SEARCH),
    "ridge: the same features, the former fixed alpha 100, embedding weight 0.2": dict(DEFAULT_CONFIG[2], alpha=100.0,
                                                                                        embedding_weight=0.2),
    "ridge: the former default (embeddings + product + length, alpha 10)": dict(features=["embeddings", "product",
                                                                                          "length"]),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--source", choices=("mtbench", "autoj", "alpagasus", "alpagasus_claude", "alpagasus_chatgpt"), default="mtbench",
                    help="the pool: MT-bench answers (questions as groups), Auto-J's 960 rated answers, or AlpaGasus' "
                         "9K Alpaca answers with Claude + ChatGPT flags (0-2; other judges, one answer per instruction)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--with-default", action="store_true",
                    help="also the shipped default quality scorer on the rest of the pool, no labels spent (zero-shot "
                         "only for the alpagasus pools: it was trained on MT-bench's and Auto-J's train groups)")
    ap.add_argument("--kinds", type=int, default=len(KINDS), help="run the first N kinds (the later ones embed more)")
    args = ap.parse_args()
    rows = D.single_scores(args.source, args.data)
    judged = D.judged_groups(rows, args.labels, args.seed)
    train = [r for r in rows if r["group"] in judged]
    rest = [r for r in rows if r["group"] not in judged]
    console = Console(width=140)
    judge = {"alpagasus": "Claude + ChatGPT flag", "alpagasus_claude": "Claude flag",
             "alpagasus_chatgpt": "ChatGPT flag"}.get(args.source, "GPT-4")
    table = Table(title=f"distilling {judge} {args.source} scores: {len(train):,} judged answers ({len(judged)} questions) -> "
                        f"the other {len(rest):,} answers of the pool")
    for h in ("kind", "spearman", "95% CI", "kendall", "MAE", "pairwise acc"):
        table.add_column(h)
    y_rest = np.array([r["label"] for r in rest])
    g_rest = [r["group"] for r in rest]  # the interval resamples whole questions
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfg in list(KINDS.items())[: args.kinds]:
            cfg = dict(cfg)
            search = cfg.pop("search", None)
            sc = Scorer(reads=["instruction", "response"], head="ridge", name="gpt4_scorer",
                        imitates={"judge": "gpt-4 single", "model": "gpt-4"}, **cfg)
            if search:  # what `curate train-scorer` does: choose on the folds of its training part, refit on all
                train_and_evaluate(sc, [to_turn(r) for r in train], [r["label"] for r in train],
                                   groups=[r["group"] for r in train], cache_dir=tmp, search=search)
                chosen = sc.metrics["chosen_by_kfold"]["chosen"]
                name = f"{name} -> {', '.join(f'{k} {v:g}' for k, v in chosen.items())}"
            else:
                emb_train = sc.embed([to_turn(r) for r in train], cache_dir=tmp)
                sc.fit_features(sc.featurize(emb_train), [r["label"] for r in train])
            pred = sc.predict([to_turn(r) for r in rest], cache_dir=tmp)
            results[name] = {**agreement(y_rest, pred), "ci": spearman_interval(y_rest, pred, g_rest)}
        if args.with_default:
            pred = Scorer.load("quality").predict([to_turn(r) for r in rest], cache_dir=tmp)
            results["shipped default quality, no labels"] = {**agreement(y_rest, pred),
                                                             "ci": spearman_interval(y_rest, pred, g_rest)}
    for base, key in (("response length", "response"), ("instruction length", "instruction")):
        chars = np.log1p([len(r[key]) for r in rest])
        results[base] = {**agreement(y_rest, chars), "ci": spearman_interval(y_rest, chars, g_rest)}
        results[base]["mae"] = float("nan")  # a raw length is not on the label scale
    for name, m in results.items():
        table.add_row(name, f"{m['spearman']:.3f}", f"{m['ci'][0]:.2f}..{m['ci'][1]:.2f}",
                      *(f"{m[k]:.3f}" for k in ("kendall", "mae", "pairwise_accuracy")))
    console.print(table)
    ran = [k for k in results if any(k.startswith(kind) for kind in KINDS)]  # the default's name gains its choice
    # what a user gets: train-scorer's default kind; with --kinds below it, the last kind run
    best = next((k for k in ran if k.startswith("ridge: curate train-scorer's default")), ran[-1])
    print(f"RESULT source={args.source} distil_labels={len(train)} distil_rest={len(rest)} kind='{best}' "
          f"distil_spearman={results[best]['spearman']:.3f} (95% {results[best]['ci'][0]:.2f}..{results[best]['ci'][1]:.2f}) "
          f"response_length_spearman={results['response length']['spearman']:.3f} "
          f"target=0.50")


if __name__ == "__main__":
    main()
