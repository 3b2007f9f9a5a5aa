"""Weak-model pairs for the quality ridge: the pool's reply beats a 135M model's answer to the same instruction.
Do they teach the head what carries to unseen sources and judges (issue 13's zero-shot quality target)?

    python evals/ablate_quality_weak_model_pairs.py ANSWERS [--data ../shared/data] [--pairs 2000] [--max-length-ratio R]

ANSWERS: ``answers.jsonl.gz`` of ``evals/mods_downstream.py answer`` (SmolLM2-135M fine-tuned on a k-center seed of
pool_30k answering 6,000 other pool rows; made on the lent GPU). The MoDS run found the shipped scorer rating such
answers above the pool's own replies (5.71 against 4.28 with ``repetition_penalty`` 1.15), which no judge would.
Each finished answer gives a pair (instruction, the pool's reply, the model's answer) with P(pool reply wins) = 0.9,
added to every quality fit's preference pairs (``--pairs`` of them, seeded); instructions that any evaluation set
holds are left out. Unlike the synthetic degradations of ``ablate_quality_synthetic_pairs.py``, the worse answer is a
real model's, in its own style and length. Everything else is the shipped recipe (evals/train_default_scorers.py).
Printed per variant: the in-distribution val criterion (how the quality ablations choose), the zero-shot val
figures, and the test and zero-shot all-rows figures of :mod:`quality_ablation`; last a ``RESULT`` line.

Measured (evals/results/issue13_quality_weak_model_pairs.log, the answers of the H200 run decoded with
``repetition_penalty`` 1.15, 2,000 pairs, ~10 min on 2 CPU cores): not adopted. The val criterion falls (0.535 against
the shipped 0.543; "chosen on val" there only ranks the variants besides the shipped one), and so do the zero-shot
figures that matter: MT-bench 0.365 (0.383), AlpacaEval pairs 0.611 (0.781). The model's answers run 2.7 times the
pool replies' length (1,347 against 494 characters), so the pairs mostly teach "shorter wins", which GPT-4's
preferences contradict. Auto-J moves up a little (test 0.301 against 0.290, zero-shot 0.254 against 0.247).
Length-matched (``--max-length-ratio 1.3``: 152 pairs whose two answers are within 1.3x in length): val 0.545
against 0.543, within noise, every test figure level, and zero-shot AlpacaEval pairs fall (0.721 against 0.781,
length-matched 0.558 against 0.629). Not adopted either.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import train_default_scorers as T  # noqa: E402
from ablate_quality_synthetic_pairs import compare, with_extra_pairs  # noqa: E402
from downstream import load_pool, norm  # noqa: E402


def weak_pairs(answers: Path, data: Path, pairs, singles, n: int, seed: int = 0,
               max_length_ratio: float | None = None) -> list[tuple[str, str, str]]:
    """(instruction, pool reply, model answer) for ``n`` finished answers whose instruction no evaluation set holds;
    with ``max_length_ratio``, only those whose two answers' lengths are within that ratio of each other."""
    held = {norm(q["instruction"]) for q in pairs} | {norm(r["instruction"]) for s in singles.values() for r in s}
    pool = {p["uid"]: p for p in load_pool(data / "pool_30k.jsonl")}
    out = []
    for line in gzip.open(answers, "rt"):
        a = json.loads(line)
        p = pool.get(a["uid"])
        if p and not a["truncated"] and a["answer"].strip() and norm(p["instruction"]) not in held:
            ratio = max(len(p["output"]), len(a["answer"])) / max(1, min(len(p["output"]), len(a["answer"])))
            if max_length_ratio is None or ratio <= max_length_ratio:
                out.append((p["instruction"], p["output"], a["answer"]))
    random.Random(seed).shuffle(out)
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("answers", type=Path)
    ap.add_argument("--data", type=Path, default=T.D.DATA)
    ap.add_argument("--pairs", type=int, default=2000)
    ap.add_argument("--max-length-ratio", type=float, default=None, help="length-matched pairs only (e.g. 1.3)")
    args = ap.parse_args()
    T.with_interval = lambda metrics, y, pred, groups: metrics  # figures only: no bootstrap intervals here
    pairs, singles = T.quality_sets(args.data)
    cfg = T.GRID["quality"][0]
    extra = weak_pairs(args.answers, args.data, pairs, singles, args.pairs, max_length_ratio=args.max_length_ratio)
    print(f"{len(extra)} weak-model pairs; the model's answers {sum(len(e[2]) for e in extra) / len(extra):.0f} "
          f"characters on average, the pool's replies {sum(len(e[1]) for e in extra) / len(extra):.0f}", flush=True)
    compare({"shipped (no weak-model pairs)": None,
             f"weak-model pairs ({len(extra)})": lambda: with_extra_pairs(lambda *_: extra)},
            cfg, pairs, singles, "weak-model pairs")


if __name__ == "__main__":
    main()
