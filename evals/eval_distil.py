"""Distillation on real labels: how many judge labels does a complexity scorer need?

    python evals/eval_distil.py [--data ../shared/data]

Loads FLASK's 1,740 instructions into a fresh workspace, stores GPT-4's difficulty levels as the judge
column, and lets :func:`curate.scorers.distil` ask for labels through that column (only the rows it
asks for are read and counted). The same 200 held-out rows (same seed) score every run:
random sample only, random sample + uncertainty rounds, a random sample of the same total size, and
"judge everything" (train on every other row). Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from default_scorer_data import DATA, FLASK, FLASK_LEVELS, _read_jsonl, require  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from curate.scorers import Scorer, distil  # noqa: E402
from curate.session import Workspace  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--holdout", type=int, default=200)
    args = parser.parse_args()
    path = require(args.data, FLASK)
    level = {r["instruction"]: (FLASK_LEVELS.index(r["difficulty"]) + 1 if r["difficulty"] in FLASK_LEVELS else None)
             for r in _read_jsonl(path)}
    console = Console(width=130)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        ws.load(path, format="alpaca", mapping={"instruction": "instruction", "output": "answer"})
        labels = [level.get(conv[0]["content"]) for conv in ws.conversations()]
        ws.add_column("gpt4_difficulty", labels, {"judge": "complexity", "model": "gpt-4", "label_set": "FLASK"})
        total = len(ws)
        n_other = total - args.holdout - 1

        def oracle(ids: list[str]) -> list[float | None]:
            return ws.column("gpt4_difficulty", ids)

        runs = {"random 300": dict(n=300, rounds=0, uncertain_k=0),
                "random 300 + 2 x 100 least certain": dict(n=300, rounds=2, uncertain_k=100),
                "random 500": dict(n=500, rounds=0, uncertain_k=0),
                f"judge everything ({n_other:,})": dict(n=n_other, rounds=0, uncertain_k=0)}
        table = Table(title=f"distilling GPT-4 FLASK difficulty ({total:,} rows; {args.holdout} held-out judged rows)")
        for head in ("run", "labels spent (incl. held-out)", "trained on", "held-out spearman", "kendall", "MAE"):
            table.add_column(head)
        results = {}
        for name, kw in runs.items():
            scorer = Scorer(reads=["instruction"], features=["embeddings", "length", "stats"], head="ridge", alpha=100.0,
                            name="complexity_distilled", imitates={"judge": "complexity"})
            rep = distil(ws, oracle, scorer=scorer, holdout_n=args.holdout, seed=0, write=False, **kw)
            results[name] = rep
            last = rep.rounds[-1]
            table.add_row(name, f"{rep.labels_spent:,} ({rep.fraction_spent:.0%})", f"{last['labelled']:,}",
                          f"{last['spearman']:.3f}", f"{last['kendall']:.3f}", f"{last['mae']:.3f}")
        console.print(table)
    small = results["random 300 + 2 x 100 least certain"]
    full = results[f"judge everything ({n_other:,})"]
    print(f"RESULT distil_labels={small.labels_spent} distil_spearman={small.holdout['spearman']:.3f} "
          f"full_labels={full.labels_spent} full_spearman={full.holdout['spearman']:.3f}")


if __name__ == "__main__":
    main()
