"""`curate train-scorer --target difficulty --labels evol_complexity --chain-pairs` on real FLASK difficulty labels:
does the product's mixed call learn DEITA's Evol order without losing FLASK, as the shipped complexity scorer does?

    python evals/eval_chain_pairs_flask.py [--data ../shared/data] [--recipe appended|rewritten]
                                           [--kind ridge|cross-encoder --epochs 1]

A workspace is built the way a user would hold the data: a pool file of FLASK's train and val instructions with
their difficulty level (1-5) as a field, and an Evol complexity label set whose ``sets.jsonl`` holds constraint
chains of those same instructions (``curate.scorers.constraints``: the shipped complexity scorer's training chains,
training families only; every set marked as if its rank-and-score call failed, so the chains give order alone).
``train_scorer(target="difficulty")`` with and without ``labels=..., chain_pairs=True`` (``--kind``: ridge, the
product's default, or the cross-encoder, fine-tuned from the packaged MiniLM) is then scored on FLASK's test
instructions (Spearman) and on the test chains (held-out constraint families; order accuracy of version pairs),
beside instruction length and the shipped ``complexity_ridge`` and ``complexity`` (cross-encoder) scorers.
Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scorer_label_data as D  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from curate.evol.rules import RankFailure  # noqa: E402
from curate.evol.run import Variant, VariantSet  # noqa: E402
from curate.scorers import Scorer, train_scorer  # noqa: E402
from curate.scorers.constraints import order_accuracy  # noqa: E402
from curate.session import Workspace  # noqa: E402


def sets_jsonl(chains: list[list[str]]) -> str:
    """The chains as `curate evol --kind complexity` stores its variant sets, each rank call failed."""
    lines = []
    for c, chain in enumerate(chains):
        variants = [Variant(f"s{c}", k, "seed" if k == 0 else "add_constraint", text, None if k == 0 else k - 1)
                    for k, text in enumerate(chain)]
        lines.append(json.dumps(asdict(VariantSet(f"s{c}", chain[0], variants, failure=RankFailure.JUDGE_FAILED))))
    return "\n".join(lines) + "\n"


def figures(scorer: Scorer, test_rows: list[dict], test_chains: dict[str, list[list[str]]]) -> dict[str, float]:
    out = {"flask_spearman": float(spearmanr([r["label"] for r in test_rows],
                                            scorer.predict([r["instruction"] for r in test_rows])).statistic)}
    for style, chains in test_chains.items():
        out[f"chain_order_{style}"] = order_accuracy(chains, [scorer.predict(c).tolist() for c in chains])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--recipe", choices=("appended", "rewritten"), default="appended",
                    help="training chains: appended (the shipped scorer's) or rewritten with filler")
    ap.add_argument("--kind", choices=("ridge", "cross-encoder"), default="ridge")
    ap.add_argument("--epochs", type=float, default=1.0, help="cross-encoder: passes over the labels or pairs")
    args = ap.parse_args()
    flask = D.flask_levels(args.data)
    chain_sets = D.complexity_chain_sets(flask)
    train_chains = chain_sets[args.recipe]["train"] + chain_sets[args.recipe]["val"]
    test_rows = [r for r in flask if r["split"] == "test"]
    test_chains = {"appended": chain_sets["appended"]["test"], "rewritten": chain_sets["rewritten"]["test"]}
    pool = [{"instruction": r["instruction"], "output": "", "difficulty": r["label"]}
            for r in flask if r["split"] in ("train", "val")]
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flask.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in pool), encoding="utf-8")
        ws = Workspace(Path(tmp) / "ws")
        ws.load(path)
        ws.add_labels("evol_complexity", [], {"kind": "complexity"}, files={"sets.jsonl": sets_jsonl(train_chains).encode()})
        for label, mixed in (("difficulty alone", False), ("difficulty + chain pairs", True)):
            t0 = time.perf_counter()
            res = train_scorer(ws, target="difficulty", reads=["instruction"], kind=args.kind,
                               epochs=None if args.kind == "ridge" else args.epochs,
                               **({"labels": "evol_complexity", "chain_pairs": True} if mixed else {}))
            seconds = time.perf_counter() - t0
            held = res.evaluation.holdout
            results[label] = figures(res.scorer, test_rows, test_chains)
            print(f"{label}: {res.data.labelled:,} labels, {len(res.data) - res.data.labelled:,} chain versions, "
                  f"{res.scorer.metadata.get('ordered_pairs', 0):,} ordered pairs; in-call held-out Spearman "
                  f"{held['scorer']['spearman']:.3f} (length {held['length']['spearman']:.3f})"
                  + (f", chain order {held['scorer']['chain_order']:.3f} (length {held['length']['chain_order']:.3f})"
                     if "chain_order" in held["scorer"] else "")
                  + (f"; chosen {res.evaluation.extra['chosen_by_kfold']['chosen']}" if args.kind == "ridge" else
                     f"; {res.scorer.metadata['train']['steps']} steps") + f"; {seconds:.0f} s on this machine")
    results["shipped complexity_ridge"] = figures(Scorer.load("complexity_ridge"), test_rows, test_chains)
    results["shipped complexity (CE)"] = figures(Scorer.load("complexity"), test_rows, test_chains)
    length = {"flask_spearman": float(spearmanr([r["label"] for r in test_rows],
                                                [len(r["instruction"]) for r in test_rows]).statistic),
              **{f"chain_order_{s}": order_accuracy(c, [[len(v) for v in ch] for ch in c]) for s, c in test_chains.items()}}
    results["instruction length"] = length
    print(f"FLASK test: {len(test_rows)} instructions; test chains of held-out families: "
          + ", ".join(f"{s} {len(c)}" for s, c in test_chains.items()))
    for who, f in results.items():
        print(f"  {who:28s} " + "  ".join(f"{k} {v:.3f}" for k, v in f.items()))
    a, m = results["difficulty alone"], results["difficulty + chain pairs"]
    s = results["shipped complexity_ridge" if args.kind == "ridge" else "shipped complexity (CE)"]
    print(f"RESULT kind={args.kind} recipe={args.recipe} flask_alone={a['flask_spearman']:.3f} flask_mixed={m['flask_spearman']:.3f} "
          f"flask_shipped={s['flask_spearman']:.3f} chain_order_alone={a['chain_order_appended']:.3f} "
          f"chain_order_mixed={m['chain_order_appended']:.3f} chain_order_shipped={s['chain_order_appended']:.3f} "
          f"rewritten_alone={a['chain_order_rewritten']:.3f} rewritten_mixed={m['chain_order_rewritten']:.3f} "
          f"rewritten_shipped={s['chain_order_rewritten']:.3f} length={length['chain_order_appended']:.3f}")


if __name__ == "__main__":
    main()
