"""Token signals as scorer columns in the distillation workflow: ``curate train-scorer --feature-column`` on real
GPT-4 labels of a pool, with and without the pool's SmolLM2 IFD columns.

    python evals/eval_distil_signal_columns.py --signals .devsig/signals_mt_aj.jsonl.gz [--seeds 5]

The signals file is ``evals/ablate_quality_signals.py compute`` over the MT-bench and Auto-J answers (curate's own
``IFD`` step, the packaged SmolLM2; 3,003 distinct answers in 31 s on the lent H200); its values become the columns
``curate signal --signal ifd`` writes (``ifd``, ``ifd_loss_conditioned``, ``ifd_loss_alone``, one value per turn).
Each pool (every answer of the source, GPT-4's score and the question id as fields of the pool file) is loaded into
a workspace; per seed a random sample of rows keeps its label (1,000 on MT-bench; on Auto-J 500, capped at half
the pool: 480 of its 960), ``train_scorer(target=..., group_by="question")`` fits the shipped default ridge kind without and with
``columns=[...]``, and both score the pool through ``ws.apply``. Figures: Spearman with GPT-4 on the rows that kept
no label (the rows where either kind failed are left out of both, and counted), beside response length.
Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scorer_label_data as D  # noqa: E402
from ablate_quality_signals import key  # noqa: E402

from curate.scorers import agreement, train_scorer  # noqa: E402
from curate.session import Workspace  # noqa: E402

COLUMNS = ["ifd", "ifd_loss_conditioned", "ifd_loss_alone"]
LABELS = {"mtbench": 1000, "autoj": 500}


def pool_workspace(source: str, data: Path, signals: dict[str, dict], tmp: Path) -> Workspace:
    rows = D.single_scores(source, data)
    path = tmp / f"{source}.jsonl"
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({"instruction": r["instruction"], "output": r["response"], "question": r["group"],
                                 "gpt4": r["label"]}) + "\n")
    ws = Workspace(tmp / f"ws-{source}")
    ws.load(path)
    found = [signals.get(key(t[0].instruction, t[0].response or "")) for t in ws.turns()]
    prov = {"kind": "signal", "model": "SmolLM2-135M-Instruct (packaged)", "fingerprint": "ablate_quality_signals compute",
            "computed_by": "evals/ablate_quality_signals.py compute (curate.signals.IFD) on the lent H200"}
    for column, field in zip(COLUMNS, ("ifd", "loss_conditioned", "loss_alone"), strict=True):
        ws.add_column(column, [[s[field]] if s and s.get(field) is not None else None for s in found], prov)
    return ws


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--signals", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=5)
    args = ap.parse_args()
    with gzip.open(args.signals, "rt", encoding="utf-8") as fh:
        signals = {r["key"]: r for r in map(json.loads, fh)}
    summary = {}
    with tempfile.TemporaryDirectory() as tmp:
        for source, n_labels in LABELS.items():
            ws = pool_workspace(source, args.data, signals, Path(tmp))
            truth = np.array(ws.column_array("gpt4"))
            lengths = np.log1p([len(t[0].response or "") for t in ws.turns()])
            without_signal = sum(v is None for v in ws.column("ifd"))
            print(f"{source}: {len(ws):,} answers, {without_signal} without an IFD value (their failure in the signal run)")
            figures = {"without": [], "with": [], "length": []}
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                keep = set(rng.choice(len(ws), size=min(n_labels, len(ws) // 2), replace=False).tolist())
                ws.add_column("gpt4_sample", [[float(truth[i])] if i in keep else None for i in range(len(ws))],
                              {"kind": "judge", "judge": "gpt-4", "reads": ["instruction", "response"]})
                preds = {}
                for label, columns in (("without", []), ("with", COLUMNS)):
                    res = train_scorer(ws, target="gpt4_sample", group_by="question", name=f"s_{label}", seed=seed,
                                       columns=columns)
                    ws.apply(res.scorer, progress=False, force=True)
                    preds[label] = np.array(ws.column_array(res.scorer.column), dtype=np.float64)
                unseen = [i for i in range(len(ws)) if i not in keep
                          and not np.isnan(preds["without"][i]) and not np.isnan(preds["with"][i])]
                failed = len(ws) - len(keep) - len(unseen)
                row = {who: agreement(truth[unseen], preds[who][unseen])["spearman"] for who in ("without", "with")}
                row["length"] = agreement(truth[unseen], lengths[unseen])["spearman"]
                for who, v in row.items():
                    figures[who].append(v)
                print(f"  seed {seed}: {len(keep)} labels -> {len(unseen)} unseen answers ({failed} left out: a kind "
                      f"failed); Spearman without {row['without']:.3f}, with the IFD columns {row['with']:.3f}, "
                      f"response length {row['length']:.3f}")
            mean = {who: float(np.mean(v)) for who, v in figures.items()}
            up = sum(w > wo for w, wo in zip(figures["with"], figures["without"], strict=True))
            print(f"  mean over {args.seeds} draws: without {mean['without']:.3f}, with {mean['with']:.3f} "
                  f"({up} of {args.seeds} draws up), length {mean['length']:.3f}")
            summary[source] = mean
    print("RESULT " + " ".join(f"{s}_without={m['without']:.3f} {s}_with_signal_columns={m['with']:.3f} "
                                f"{s}_length={m['length']:.3f}" for s, m in summary.items()))


if __name__ == "__main__":
    main()
