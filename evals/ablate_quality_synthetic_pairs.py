"""Synthetic degradation pairs for the quality ridge: an answer beats its own damaged copy. Do they teach the head
something that carries to unseen sources and judges (issue 13's zero-shot quality target)?

    python evals/ablate_quality_synthetic_pairs.py [--data ../shared/data] [--pairs 2000]

Each pair needs no judge: an answer from the training groups (MT-bench / Auto-J answers GPT-4 rated >= 6, the
AlpacaEval answer GPT-4 preferred) against a copy of it that is
- ``truncate``: cut off mid-sentence after 20-50% of its sentences;
- ``loop``: stuck repeating one sentence 3-6 times (longer, and worse);
- ``refuse``: replaced by a stock refusal;
with P(original wins) = 0.9, added to the head's preference pairs (``--pairs`` of them, drawn from the fit's own
sources and splits, so a held-out source contributes none). Everything else is the shipped recipe
(evals/train_default_scorers.py). Printed per variant: the in-distribution val criterion (how the quality
ablations choose), the zero-shot val figures (one source left out, its val groups), and the test and zero-shot
all-rows figures of :mod:`quality_ablation`. Last line: ``RESULT ...``. ~30 min on 2 CPU cores (features cached).

Measured (evals/results/issue13_quality_synthetic_pairs.log): not adopted. Val picks ``refuse`` by 0.545 against
0.543, within the noise of one synthetic draw, and its figures move both ways: test Auto-J 0.278 (shipped 0.290),
zero-shot MT-bench 0.376 (0.383), Auto-J 0.251 (0.247), AlpacaEval pairs 0.800 (0.781; "longer wins" 0.832).
The pairs' gain on AlpacaEval is the length prior (a refusal is short), and teaching "a refusal is worse" is a prior
no judge label taught (a judge may prefer a refusal of a harmful request). ``loop`` lifts zero-shot MT-bench to
0.415, but its val is below the shipped recipe's (0.539 against 0.543), so the rule does not pick it.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import quality_ablation as Q  # noqa: E402
import train_default_scorers as T  # noqa: E402

P_ORIGINAL = 0.9
_PIECES = re.compile(r"(?<=[.!?])\s+|\n+")
REFUSALS = ("I'm sorry, but I can't help with that.", "As an AI language model, I am unable to answer this question.",
            "I apologize, but I cannot provide an answer to that request.", "Sorry, I don't know.")


def _pieces(text: str) -> list[str]:
    return [p for p in _PIECES.split(text) if p.strip()]


def truncate(text: str, rnd: random.Random) -> str | None:
    parts = _pieces(text)
    if len(parts) < 3:
        return None
    k = max(1, int(len(parts) * rnd.uniform(0.2, 0.5)))
    cut = text.find(parts[k])
    if cut <= 0:
        return None
    words = parts[k].split()
    return text[:cut] + " ".join(words[: max(1, len(words) // 2)])  # stops mid-sentence


def loop(text: str, rnd: random.Random) -> str | None:
    parts = _pieces(text)
    if len(parts) < 2:
        return None
    i = rnd.randrange(len(parts))
    return " ".join(parts[: i + 1] + [parts[i]] * rnd.randint(3, 6))


def refuse(text: str, rnd: random.Random) -> str:
    return rnd.choice(REFUSALS)


DAMAGE = {"truncate": truncate, "loop": loop, "refuse": refuse}


def synthetic(pairs, singles, sources, splits, kinds, n: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """(instruction, answer, damaged answer) from the good answers of ``sources``' ``splits``."""
    rnd = random.Random(seed)
    good = [(r["instruction"], r["response"]) for s in ("mtbench", "autoj") if s in sources
            for r in singles[s] if r["split"] in splits and r["label"] >= 6]
    if "alpaca_eval" in sources:
        good += [(q["instruction"], q["b"] if q["p_b"] > 0.5 else q["a"]) for q in pairs if q["split"] in splits]
    rnd.shuffle(good)
    out = []
    for instruction, answer in good:
        if len(out) >= n:
            break
        damaged = DAMAGE[rnd.choice(kinds)](answer, rnd)
        if damaged and damaged != answer:
            out.append((instruction, answer, damaged))
    return out


@contextmanager
def with_extra_pairs(make, p_first: float = P_ORIGINAL):
    """Within the block, every quality fit also learns from the pairs ``make(pairs, singles, sources, splits)``
    returns, (instruction, better answer, worse answer) each, with P(first wins) = ``p_first``."""
    base_fit, base_head = T.fit_quality, T.fit_joint_head
    current: dict[str, np.ndarray] = {}

    def fit(cfg, pairs, singles, splits, sources=Q.SOURCES):
        extra = make(pairs, singles, sources, splits)
        sc = T.make("quality", **cfg)
        ins = [s[0] for s in extra]
        current["a"], current["b"] = T.features(sc, ins, [s[1] for s in extra]), T.features(sc, ins, [s[2] for s in extra])
        return base_fit(cfg, pairs, singles, splits, sources)

    def head(X, y, pa, pb, pp, **kw):
        a, b = current["a"], current["b"]
        pa = a if pa is None else np.vstack([pa, a])
        pb = b if pb is None else np.vstack([pb, b])
        return base_head(X, y, pa, pb, list(pp or []) + [p_first] * len(a), **kw)

    T.fit_quality, T.fit_joint_head = fit, head
    try:
        yield
    finally:
        T.fit_quality, T.fit_joint_head = base_fit, base_head


def with_synthetic_pairs(kinds, n: int):
    """Every quality fit also learns from ``n`` synthetic pairs of its own sources and splits."""
    return with_extra_pairs(lambda pairs, singles, sources, splits: synthetic(pairs, singles, sources, splits, kinds, n))


def zero_shot_val(cfg, pairs, singles) -> dict[str, float]:
    """Each source left out of a train-groups fit, measured on its own val groups."""
    out = {}
    for held in Q.SOURCES:
        rep = T.quality_report(T.fit_quality(cfg, pairs, singles, ("train",), tuple(s for s in Q.SOURCES if s != held)),
                               pairs, singles, "val", ("train",))[held]
        out[held] = rep["all"]["scorer"] if held == "alpaca_eval" else rep["scorer"]["spearman"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=T.D.DATA)
    ap.add_argument("--pairs", type=int, default=2000)
    args = ap.parse_args()
    T.with_interval = lambda metrics, y, pred, groups: metrics  # figures only: no bootstrap intervals here
    pairs, singles = T.quality_sets(args.data)
    cfg = T.GRID["quality"][0]
    variants = {"shipped (no synthetic pairs)": None} | {
        name: (lambda kinds=kinds: with_synthetic_pairs(kinds, args.pairs))
        for name, kinds in ({k: [k] for k in DAMAGE} | {"all three": list(DAMAGE)}).items()}
    compare(variants, cfg, pairs, singles, "synthetic pairs")


def compare(variants: dict, cfg, pairs, singles, title: str) -> None:
    """Measure each variant (name -> a context-manager factory, None for the shipped recipe, listed first) and
    print the zero-shot val figures, the table, the val choice and the ``RESULT`` line."""
    rows = {}
    for name, extra in variants.items():
        with extra() if extra else nullcontext():
            rows[name], z = Q.measure(cfg, pairs, singles), zero_shot_val(cfg, pairs, singles)
        print(f"{name}: zero-shot val MT-bench {z['mtbench']:.3f}, Auto-J {z['autoj']:.3f}, AlpacaEval pairs "
              f"{z['alpaca_eval']:.3f}", flush=True)
    Q.print_rows(rows, next(iter(variants)), title)


if __name__ == "__main__":
    main()
