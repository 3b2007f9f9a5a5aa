"""DEITA's loop with the packaged local model, end to end: `curate evol` (SmolLM2 rewrites and rank-and-scores) ->
`curate train-scorer --labels evol_complexity [--chain-pairs] [--target difficulty]` -> held-out agreement.

    python evals/eval_local_evol_loop.py [--data ../shared/data] [--seeds 100] [--steps 4] [--workdir DIR]

The pool is FLASK's train and val instructions with their difficulty level (1-5) as a field (FLASK's test
instructions stay unseen). ``curate evol --kind complexity`` runs on the CLI with its default local backend (SmolLM2
on an embedded vLLM server; responses cached in the workspace, so a rerun is quick). Four scorers are then trained
with ``train_scorer`` (ridge, the product's defaults): the rank judge's labels alone, the same with the chains'
order (``chain_pairs``), FLASK's levels alone, and FLASK's levels with the chains' order. Each is scored on FLASK's
338 test instructions (Spearman) and on constraint chains of held-out families (``curate.scorers.constraints``;
share of version pairs ordered right), beside instruction length. Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import scorer_label_data as D  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from curate.scorers import train_scorer  # noqa: E402
from curate.scorers.constraints import order_accuracy  # noqa: E402
from curate.scorers.training_data import chain_order_pairs, chain_records  # noqa: E402
from curate.session import Workspace  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=None, help="keep the workspace here (default: a temporary folder)")
    args = ap.parse_args()
    flask = D.flask_levels(args.data)
    sets = D.complexity_chain_sets(flask)
    test_rows = [r for r in flask if r["split"] == "test"]
    test_chains = {"appended": sets["appended"]["test"], "rewritten": sets["rewritten"]["test"]}
    work = args.workdir or Path(tempfile.mkdtemp())
    work.mkdir(parents=True, exist_ok=True)
    pool = work / "flask_train_val.jsonl"
    pool.write_text("".join(json.dumps({"instruction": r["instruction"], "output": "", "difficulty": r["label"]}) + "\n"
                            for r in flask if r["split"] in ("train", "val")), encoding="utf-8")
    ws_path = work / "ws"
    if not ws_path.exists():
        subprocess.run(["curate", "load", str(pool), "--workspace", str(ws_path)], check=True)
    t0 = time.perf_counter()
    evol = subprocess.run(["curate", "evol", str(ws_path), "--kind", "complexity", "--seeds", str(args.seeds),
                           "--steps", str(args.steps)], check=True, capture_output=True, text=True)
    evol_seconds = time.perf_counter() - t0
    summary = [line for line in evol.stdout.splitlines() if not line.startswith("evol_")]
    print("\n".join(summary[-8:]))
    print(f"curate evol: {evol_seconds:.0f} s on this machine")
    ws = Workspace.open(ws_path)
    recs = chain_records(ws, "evol_complexity")
    pairs = chain_order_pairs([(r["seed_id"], r["step"], r["operation"]) for r in recs])
    longer = sum(len(recs[a]["text"]) > len(recs[b]["text"]) for a, b in pairs) / max(len(pairs), 1)
    print(f"{len(recs)} chain versions, {len(pairs)} ordered pairs; the later version is the longer in {longer:.3f} "
          "(the shipped constraint chains: 1.000 appended)")
    recipes = {"rank labels alone": {"labels": "evol_complexity"},
               "rank labels + chain pairs": {"labels": "evol_complexity", "chain_pairs": True},
               "FLASK levels alone": {"target": "difficulty", "reads": ["instruction"]},
               "FLASK levels + chain pairs": {"target": "difficulty", "labels": "evol_complexity", "chain_pairs": True,
                                              "reads": ["instruction"]}}
    figures: dict[str, dict[str, float]] = {}
    for label, kw in recipes.items():
        res = train_scorer(ws, **kw)
        held = res.evaluation.holdout.get("scorer", {})
        f = {"flask": float(spearmanr([r["label"] for r in test_rows],
                                      res.scorer.predict([r["instruction"] for r in test_rows])).statistic)}
        for style, chains in test_chains.items():
            f[style] = order_accuracy(chains, [res.scorer.predict(c).tolist() for c in chains])
        figures[label] = f
        print(f"{label:28s} labels {res.data.labelled:5,}  pairs {res.scorer.metadata.get('ordered_pairs', 0):5,}  "
              f"in-call held-out chain order {held.get('chain_order', float('nan')):.3f} | FLASK test {f['flask']:.3f}  "
              f"chains appended {f['appended']:.3f}  rewritten {f['rewritten']:.3f}")
    length = {"flask": float(spearmanr([r["label"] for r in test_rows], [len(r["instruction"]) for r in test_rows]).statistic),
              **{s: order_accuracy(c, [[len(v) for v in ch] for ch in c]) for s, c in test_chains.items()}}
    print(f"{'instruction length':28s} {'':28s}                                   | FLASK test {length['flask']:.3f}  "
          f"chains appended {length['appended']:.3f}  rewritten {length['rewritten']:.3f}")
    a, b = figures["rank labels alone"], figures["rank labels + chain pairs"]
    c, d = figures["FLASK levels alone"], figures["FLASK levels + chain pairs"]
    print(f"RESULT seeds={args.seeds} evol_s={evol_seconds:.0f} pairs={len(pairs)} later_longer={longer:.3f} rank_alone_rewritten={a['rewritten']:.3f} "
          f"rank_pairs_rewritten={b['rewritten']:.3f} rank_alone_appended={a['appended']:.3f} "
          f"rank_pairs_appended={b['appended']:.3f} flask_alone={c['flask']:.3f} flask_pairs={d['flask']:.3f} "
          f"flask_alone_rewritten={c['rewritten']:.3f} flask_pairs_rewritten={d['rewritten']:.3f} "
          f"length_rewritten={length['rewritten']:.3f}")


if __name__ == "__main__":
    main()
