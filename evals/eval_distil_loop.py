"""`curate distil` itself on real labels: the active loop spends ~1,000 GPT-4 labels of a pool and its scorer
must agree with GPT-4 on every row it never asked about.

    python evals/eval_distil_loop.py [--data ../shared/data] [--source mtbench|autoj] [--n 800] [--rounds 2]
                                     [--uncertain-k 50] [--holdout-n 100] [--unseen questions|rows]

The pool is every answer of the source, loaded into a workspace from a JSONL file; GPT-4's score is a field of
that file (the oracle column), and so is the question id both kinds group by (``--group-by question``). The labeller is ``column_labeller`` on that field, wrapped to record which rows it
was asked about; every label asked for counts, the held-out ones too. Compared, with the same label budget: the
``train-scorer`` path (``train_scorer(target=..., group_by=...)`` on a random sample of rows of the same size, the
other rows unlabelled), both measured on rows they never saw, beside response length.

``--unseen questions`` (the default, the issue's split by instruction): the questions are split in two by a hash
of their id; the loop and train-scorer see the pool of one half (``--labelled-share`` of the questions) and are
measured on every answer of the other half, so no answer to a question they are measured on was labelled.
``--unseen rows``: one pool, rows sampled, measured on the rows never asked about; on MT-bench nearly every one of
them answers a question that has labelled answers (81 questions, ~28 answers each), so this figure is high.
Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import hashlib
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


def _pool(ws_path: Path, rows: list[dict], file: Path) -> Workspace:
    with file.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"instruction": r["instruction"], "output": r["response"], "question": r["group"],
                                 "gpt4": r["label"]}) + "\n")
    ws = Workspace(ws_path)
    ws.load(file)
    return ws


def _lengths(ws: Workspace) -> np.ndarray:
    return np.log1p([len(t[0].response or "") for t in ws.turns()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--source", choices=("mtbench", "autoj"), default="mtbench")
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--uncertain-k", type=int, default=50)
    ap.add_argument("--holdout-n", type=int, default=100)
    ap.add_argument("--unseen", choices=("questions", "rows"), default="questions")
    ap.add_argument("--labelled-share", type=float, default=0.5, help="--unseen questions: share of the questions "
                    "whose answers form the pool the labels come from")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = D.single_scores(args.source, args.data)
    with tempfile.TemporaryDirectory() as tmp:
        if args.unseen == "questions":
            side = {g: hashlib.sha256(f"distil-pool:{g}".encode()).hexdigest() for g in {r["group"] for r in rows}}
            cut = sorted(side.values())[int(len(side) * args.labelled_share)] if side else ""
            pool_rows = [r for r in rows if side[r["group"]] < cut]
            rest_rows = [r for r in rows if side[r["group"]] >= cut]
            ws = _pool(Path(tmp) / "ws", pool_rows, Path(tmp) / "pool.jsonl")
            rest = _pool(Path(tmp) / "rest", rest_rows, Path(tmp) / "rest.jsonl")
        else:
            ws = _pool(Path(tmp) / "ws", rows, Path(tmp) / "pool.jsonl")
            rest = None
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
        # the train-scorer path with the same budget: a random sample of rows keeps its label, the rest lose it
        rng = np.random.default_rng(args.seed)
        keep = set(rng.choice(len(ids), size=min(report.labels_spent, len(ids)), replace=False).tolist())
        ws.add_column("gpt4_sample", [truth[i] if i in keep else None for i in range(len(ids))],
                      {"kind": "judge", "judge": "gpt-4", "reads": ["instruction", "response"]})
        res = train_scorer(ws, target="gpt4_sample", group_by="question", name="gpt4_trained", seed=args.seed)
        ws.apply(res.scorer, progress=False)
        trained = (f"curate train-scorer --group-by question ({len(keep):,} random rows) -> chosen "
                   f"{res.scorer.alpha:g}/{res.scorer.embedding_weight:g}")
        distilled = (f"curate distil --group-by question ({report.labels_spent:,} labels asked: {args.holdout_n} held "
                     f"out, {args.n} random, {args.rounds} x {args.uncertain_k} least certain)")
        if rest is not None:  # every answer of the questions no label came from
            rest.apply(report.scorer, progress=False)
            rest.apply(res.scorer, progress=False)
            r_truth, r_groups = np.array(rest.column_array("gpt4")), [str(g) for g in rest.column("question")]
            everything = list(range(len(rest)))
            results = {f"{distilled}, on unseen questions": _measure(rest, "gpt4_distilled", everything, r_truth,
                                                                       r_groups),
                       f"{trained}, on unseen questions": _measure(rest, "gpt4_trained", everything, r_truth,
                                                                    r_groups)}
            lengths = _lengths(rest)
            results["response length (unseen questions)"] = {
                **agreement(r_truth, lengths), "ci": spearman_interval(r_truth, lengths, r_groups), "failed": 0}
            where = f"{len(rest):,} answers to {len(set(r_groups)):,} questions no label came from"
        else:
            unseen = [i for i, rid in enumerate(ids) if rid not in asked]
            unseen_random = [i for i in range(len(ids)) if i not in keep]
            results = {distilled: _measure(ws, "gpt4_distilled", unseen, truth, groups),
                       trained: _measure(ws, "gpt4_trained", unseen_random, truth, groups)}
            lengths = _lengths(ws)
            for name, pick in (("response length (distil's unseen rows)", unseen),
                               ("response length (train-scorer's unseen rows)", unseen_random)):
                m = agreement(truth[pick], lengths[pick])
                results[name] = {**m, "ci": spearman_interval(truth[pick], lengths[pick], [groups[i] for i in pick]),
                                 "failed": 0}
            seen = {groups[i] for i, rid in enumerate(ids) if rid in asked}
            share = np.mean([groups[i] in seen for i in unseen]) if unseen else float("nan")
            where = f"rows never asked about; {share:.1%} of them answer a question with a labelled answer"
    print(f"pool: {args.source}, {len(ids):,} rows ({len(set(groups)):,} questions); measured on {where}; distil "
          "rounds: " + "; ".join(f"round {r['round']} trained on {r['labelled']} held-out spearman "
                                 f"{r.get('spearman', float('nan')):.3f} chosen {r.get('chosen')}" for r in report.rounds))
    for name, m in results.items():
        failed = f" ({m['failed']} unseen rows failed: no response)" if m["failed"] else ""
        print(f"{m['spearman']:.3f} ({m['ci'][0]:.2f}..{m['ci'][1]:.2f})  n={m['n']:,}{failed}  {name}")
    first, figures = next(iter(results)), list(results.values())
    print(f"RESULT source={args.source} unseen={args.unseen} labels_spent={report.labels_spent} "
          f"distil_unseen_spearman={results[first]['spearman']:.3f} (95% {results[first]['ci'][0]:.2f}.."
          f"{results[first]['ci'][1]:.2f}) train_scorer_unseen_spearman={figures[1]['spearman']:.3f} "
          f"length_spearman={figures[2]['spearman']:.3f} target=0.50")


if __name__ == "__main__":
    main()
