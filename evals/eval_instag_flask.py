"""InsTag on FLASK: tag-coverage sampling vs random, and the small tagger's F1 on held-out skills.

FLASK (1,740 instructions) carries GPT-4 labels: 3 of 12 skills and 1-2 of 10 domains per row. Treating
`skill:` + `domain:` labels as a row's tags (domain "-1" = unknown, left out):

1. coverage of the InsTag complexity-first diverse sample of N rows vs uniform random N rows (mean of
   10 seeds), N = 100 (the headline) and smaller budgets where random sampling misses labels; the 22
   labels saturate by N=100, so also with finer tags (each skill|domain pair added as a tag);
2. the small tagger (one-vs-rest logistic regression on all-MiniLM-L6-v2 embeddings of the instruction)
   trained on 80% of the rows' skill labels, scored on the held-out 20% (micro/macro F1), beside a
   reference that gives every row the training set's 3 most frequent skills.

Usage: python evals/eval_instag_flask.py [--data PATH] [--budget 100] [--seeds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flask_1740_difficulty_skills.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--test-share", type=float, default=0.2)
    args = ap.parse_args()
    if not args.data.exists():
        sys.exit(f"FLASK data not found at {args.data} (pass --data PATH); nothing to evaluate")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from curate.embed import encode
    from curate.tags import TagClassifier, all_tags, coverage, random_coverage, tagger_agreement
    from curate.tags.sampling import instag_sample

    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    tags = [[f"skill:{s}" for s in r["skill"]] + [f"domain:{d}" for d in r["domain"] if d != "-1"] for r in rows]
    ids = [f"{r['idx']:06d}" for r in rows]
    universe = all_tags(tags)
    print(f"FLASK rows: {len(rows):,}; labels used as tags: {len(universe)} "
          f"({sum(t.startswith('skill:') for t in universe)} skills, {sum(t.startswith('domain:') for t in universe)} domains)")

    print(f"\n1. coverage of skill+domain labels: instag sample vs random (mean ± std over seeds 0..{args.seeds - 1})")
    headline = None
    for budget in sorted({5, 10, 20, 50, args.budget}):
        kept = [tags[p] for p in instag_sample(tags, budget, ids).kept]
        cov = coverage(kept, universe)
        mean, std = random_coverage(tags, budget, args.seeds)
        tpq = np.mean([len(t) for t in kept])
        print(f"  N={budget:4d}: instag {cov:.3f} ({tpq:.2f} tags/row)  random {mean:.3f} ± {std:.3f}  "
              f"(pool {np.mean([len(t) for t in tags]):.2f} tags/row)")
        if budget == args.budget:
            headline = (cov, mean)

    # 22 labels saturate by N=100 (random too); finer tags: every skill x domain pair is a tag as well
    pair_tags = [t + [f"{a}|{b}" for a in t if a.startswith("skill:") for b in t if b.startswith("domain:")]
                 for t in tags]
    kept = [pair_tags[p] for p in instag_sample(pair_tags, args.budget, ids).kept]
    pair_cov = coverage(kept, pair_tags)
    pair_mean, pair_std = random_coverage(pair_tags, args.budget, args.seeds)
    print(f"  finer tags (labels + skill|domain pairs, {len(all_tags(pair_tags))} tags), N={args.budget}: "
          f"instag {pair_cov:.3f}  random {pair_mean:.3f} ± {pair_std:.3f}")

    print(f"\n2. small tagger on FLASK skills: train {1 - args.test_share:.0%}, held-out {args.test_share:.0%} (seed 0)")
    skills = [list(r["skill"]) for r in rows]
    perm = np.random.default_rng(0).permutation(len(rows))
    n_test = int(round(args.test_share * len(rows)))
    test, train = perm[:n_test], perm[n_test:]
    X = encode([r["instruction"] for r in rows], batch_size=64)
    clf = TagClassifier().fit(X[train], [skills[i] for i in train])
    true = [skills[i] for i in test]
    scores = tagger_agreement(clf.predict(X[test]), true, clf.labels)
    top3 = tagger_agreement(clf.predict(X[test], top_k=3), true, clf.labels)
    common = [t for t, _ in Counter(t for i in train for t in skills[i]).most_common(3)]
    ref = tagger_agreement([common] * len(test), true, clf.labels)
    for name, s in (("tagger, threshold 0.5", scores), ("tagger, top 3", top3), ("reference: 3 most frequent", ref)):
        print(f"  {name:28s} micro F1 {s['micro_f1']:.3f}  macro F1 {s['macro_f1']:.3f}  "
              f"tags/row {s['tags_per_query_pred']:.2f} (true {s['tags_per_query_true']:.2f})  "
              f"labels covered {s['coverage_pred']:.2f} (true {s['coverage_true']:.2f})")
    assert headline is not None
    print(f"RESULT instag_coverage={headline[0]:.4f} random_coverage={headline[1]:.4f} "
          f"tagger_micro_f1={scores['micro_f1']:.4f} tagger_macro_f1={scores['macro_f1']:.4f} "
          f"instag_pair_coverage={pair_cov:.4f} random_pair_coverage={pair_mean:.4f} "
          f"reference_micro_f1={ref['micro_f1']:.4f} reference_macro_f1={ref['macro_f1']:.4f}")


if __name__ == "__main__":
    main()
