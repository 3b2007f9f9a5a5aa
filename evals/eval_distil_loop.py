"""`curate distil` itself on real labels: the active loop spends ~1,000 GPT-4 labels of a pool and its scorer
must agree with GPT-4 on every row it never asked about.

    python evals/eval_distil_loop.py [--data ../shared/data] [--source mtbench|autoj] [--n 800] [--rounds 2]
                                     [--uncertain-k 50] [--holdout-n 100]

The pool is every answer of the source, loaded into a workspace from a JSONL file; GPT-4's score is a field of
that file (the oracle column), and so is the question id both kinds group by (``--group-by question``). The labeller is ``column_labeller`` on that field, wrapped to record which rows it
was asked about; every label asked for counts, the held-out ones too. Compared, with the same label budget: the
``train-scorer`` path (``train_scorer(target=..., group_by=...)`` on a random sample of rows of the same size, the
other rows unlabelled), both measured on the rows they never saw, beside response length. Rows are sampled, not
questions, as a user with an unjudged pool would (so both kinds may see other answers to a question they are
measured on). Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scorer_label_data as D  # noqa: E402

from curate.scorers import Scorer, agreement, column_judge, column_labeller, distil, train_scorer  # noqa: E402
from curate.scorers.metrics import spearman_interval  # noqa: E402
from curate.scorers.training import DEFAULT_CONFIG, RIDGE_SEARCH  # noqa: E402
from curate.session import Workspace  # noqa: E402


def _measure(ws: Workspace, column: str, unseen: list[int], truth: np.ndarray, groups: list[str]) -> dict:
    pred = np.array(ws.column_array(column))
    scored = [i for i in unseen if not np.isnan(pred[i])]  # a row without a response has a failure, not a score
    m = agreement(truth[scored], pred[scored])
    return {**m, "ci": spearman_interval(truth[scored], pred[scored], [groups[i] for i in scored]),
            "failed": len(unseen) - len(scored)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--source", choices=("mtbench", "autoj"), default="mtbench")
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--uncertain-k", type=int, default=50)
    ap.add_argument("--holdout-n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = D.single_scores(args.source, args.data)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pool.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({"instruction": r["instruction"], "output": r["response"], "question": r["group"],
                                     "gpt4": r["label"]}) + "\n")
        ws = Workspace(Path(tmp) / "ws")
        ws.load(path)
        truth = np.array(ws.column_array("gpt4"))
        groups = [str(g) for g in ws.column("question")]
        ids = ws.ids
        asked: set[str] = set()
        oracle = column_labeller(ws, "gpt4")

        def label_fn(batch: list[str]) -> list:
            asked.update(batch)
            return oracle(batch)

        reads, imitates = column_judge(ws, "gpt4")
        scorer = Scorer(reads=reads, name="gpt4_distilled", imitates=imitates, **DEFAULT_CONFIG[len(reads)])
        report = distil(ws, label_fn, scorer=scorer, n=args.n, rounds=args.rounds, uncertain_k=args.uncertain_k,
                        holdout_n=args.holdout_n, search=RIDGE_SEARCH, seed=args.seed, progress=False,
                        group_by="question")
        unseen = [i for i, rid in enumerate(ids) if rid not in asked]
        results = {f"curate distil --group-by question ({report.labels_spent:,} labels asked: {args.holdout_n} held out, {args.n} random, "
                   f"{args.rounds} x {args.uncertain_k} least certain)": _measure(ws, "gpt4_distilled", unseen, truth, groups)}
        # the train-scorer path with the same budget: a random sample of rows keeps its label, the rest lose it
        rng = np.random.default_rng(args.seed)
        keep = set(rng.choice(len(ids), size=report.labels_spent, replace=False).tolist())
        ws.add_column("gpt4_sample", [truth[i] if i in keep else None for i in range(len(ids))],
                      {"kind": "judge", "judge": "gpt-4", "reads": ["instruction", "response"]})
        res = train_scorer(ws, target="gpt4_sample", group_by="question", name="gpt4_trained", seed=args.seed)
        ws.apply(res.scorer, progress=False)
        unseen_random = [i for i in range(len(ids)) if i not in keep]
        results[f"curate train-scorer --group-by question ({len(keep):,} random rows) -> chosen "
                f"{res.scorer.alpha:g}/{res.scorer.embedding_weight:g}"] = _measure(ws, "gpt4_trained", unseen_random,
                                                                                    truth, groups)
        lengths = np.log1p([len(t[0].response or "") for t in ws.turns()])
        for name, where in (("response length (distil's unseen rows)", unseen),
                            ("response length (train-scorer's unseen rows)", unseen_random)):
            m = agreement(truth[where], lengths[where])
            results[name] = {**m, "ci": spearman_interval(truth[where], lengths[where], [groups[i] for i in where]),
                             "failed": 0}
    print(f"pool: {args.source}, {len(ids):,} rows; distil rounds: "
          + "; ".join(f"round {r['round']} trained on {r['labelled']} held-out spearman {r.get('spearman', float('nan')):.3f}"
                      f" chosen {r.get('chosen')}" for r in report.rounds))
    for name, m in results.items():
        failed = f" ({m['failed']} unseen rows failed: no response)" if m["failed"] else ""
        print(f"{m['spearman']:.3f} ({m['ci'][0]:.2f}..{m['ci'][1]:.2f})  n={m['n']:,}{failed}  {name}")
    first = next(iter(results))
    print(f"RESULT source={args.source} labels_spent={report.labels_spent} distil_unseen_spearman="
          f"{results[first]['spearman']:.3f} (95% {results[first]['ci'][0]:.2f}..{results[first]['ci'][1]:.2f}) "
          f"train_scorer_unseen_spearman={list(results.values())[1]['spearman']:.3f} "
          f"length_spearman={list(results.values())[2]['spearman']:.3f} target=0.50")


if __name__ == "__main__":
    main()
