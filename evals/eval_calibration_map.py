"""Eval: the shipped complexity cross-encoder's calibration map, today's against the two maps before it.

    python evals/eval_calibration_map.py [--data ../shared/data]

The reader's raw scores of FLASK's held-out instructions and of the held-out constraint chains (appended style; the
same sets as ``evals/bench_scorers.py``, from ``--data``, read by path) are mapped onto DEITA's 1-6 three ways:
``flat``, the quantile map alone (``np.interp`` through the stored knots: the map before bc5cf16), ``logistic``,
that map blended with 2% of a logistic of the raw score (bc5cf16 until 90fadac), and ``today``
(``curate.scorers.readermap.apply_map``: the knots dequantised, then the same blend). Per map: the share of chain
versions at exactly 6.0, the chains' order accuracy, the share of FLASK scores within 0.03 of one of FLASK's five
levels, FLASK Spearman and the scores' mean / std (labels beside). The raw scores are the same for all three, so
every difference is the map's. With ``--pool-rows N`` (default 4,000; 0 skips it) a seeded sample of N rows of
``pool_30k.jsonl`` (in ``--data``) is scored too: per map the share of its complexity scores within 0.03 of a level,
and how many of the top ``--top`` (2,000) rows by complexity x quality (the shipped ``quality`` scorer) differ from
today's map's. One ``RESULT`` line (``flat`` and ``logistic`` are the references).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scorer_label_data as D  # noqa: E402
import train_default_scorers as T  # noqa: E402

from curate.scorers import Scorer, agreement  # noqa: E402
from curate.scorers.constraints import order_accuracy  # noqa: E402
from curate.scorers.readermap import TIE_BREAK_SHARE, apply_map  # noqa: E402

LEVELS = 1 + (np.arange(1, 6) - 1) * 5 / 4  # FLASK's five levels on DEITA's 1-6


def _maps(x: np.ndarray, y: np.ndarray):
    k = len(x) - 1
    centre, spread = x[k // 2], max((x[(3 * k) // 4] - x[k // 4]) / 1.349, 1e-6)

    def flat(raw):
        return np.interp(raw, x, y)

    def logistic(raw):
        blend = y[0] + (y[-1] - y[0]) / (1.0 + np.exp(-(raw - centre) / spread))
        return (1.0 - TIE_BREAK_SHARE) * flat(raw) + TIE_BREAK_SHARE * blend

    return {"flat": flat, "logistic": logistic, "today": lambda raw: apply_map(raw, x, y)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--pool-rows", type=int, default=4000)
    ap.add_argument("--top", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    sc = Scorer.load("complexity")
    flask, chain_sets = T.complexity_sets(args.data, "appended")
    rows = [r for r in flask if r["split"] == "test"]
    labels = D.flask_to6(rows)
    chains = chain_sets["chains"]["test"]
    flat_versions = [t for c in chains for t in c]
    raw_flask = np.asarray(sc.predict_raw([{"instruction": r["instruction"]} for r in rows]), dtype=np.float64)
    raw_chain = np.asarray(sc.predict_raw([{"instruction": t} for t in flat_versions]), dtype=np.float64)
    x, y = (np.asarray(sc.weights[f"calibration.{a}"], dtype=np.float64) for a in "xy")
    print(f"FLASK test {len(rows)} rows (labels mean {labels.mean():.2f}, std {labels.std():.2f}); "
          f"{len(chains)} held-out chains, {len(flat_versions)} versions; raw chain order "
          f"{order_accuracy(chains, _split(raw_chain, chains)):.3f}")
    fields = []
    for name, fn in _maps(x, y).items():
        f, c = fn(raw_flask), fn(raw_chain)
        at6 = float(np.mean(c >= 6.0 - 1e-9))
        order = order_accuracy(chains, _split(c, chains))
        near = _near(f)
        rho = agreement(labels, f)["spearman"]
        print(f"{name:9s} chains at exactly 6.0 {at6:.1%}, chain order {order:.3f}; FLASK within 0.03 of a level "
              f"{near:.1%}, Spearman {rho:.3f}, mean {f.mean():.2f}, std {f.std():.2f}")
        fields += [f"{name}_chain_at_6={at6:.3f}", f"{name}_chain_order={order:.3f}",
                   f"{name}_flask_near_level={near:.3f}", f"{name}_flask_spearman={rho:.3f}",
                   f"{name}_flask_mean_std={f.mean():.2f}/{f.std():.2f}"]
    if args.pool_rows:
        fields += _pool(args, sc, _maps(x, y))
    print("RESULT " + " ".join(fields))


def _near(scores: np.ndarray) -> float:
    return float(np.mean(np.min(np.abs(scores[:, None] - LEVELS[None, :]), axis=1) < 0.03))


def _pool(args, sc, maps) -> list[str]:
    """The pool sample's figures: share near a level per map, top rows by complexity x quality against today's."""
    lines = (args.data / "pool_30k.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [{k: r.get(k, "") for k in ("instruction", "input", "output")} for r in map(json.loads, lines)]
    rows = [r for r in rows if r["instruction"].strip() and r["output"].strip()]
    rows = random.Random(args.seed).sample(rows, min(args.pool_rows, len(rows)))
    raw = np.asarray(sc.predict_raw(rows), dtype=np.float64)
    quality = np.asarray(Scorer.load("quality").predict(rows), dtype=np.float64)
    tops = {name: set(np.argsort(-(fn(raw) * quality), kind="stable")[:args.top].tolist()) for name, fn in maps.items()}
    out = []
    print(f"pool_30k sample of {len(rows)} rows (seed {args.seed}); top {args.top} by complexity x quality")
    for name, fn in maps.items():
        near, differ = _near(fn(raw)), len(tops[name] - tops["today"])
        print(f"{name:9s} pool within 0.03 of a level {near:.1%}; top {args.top} rows not in today's: {differ}")
        out += [f"{name}_pool_near_level={near:.3f}", f"{name}_top{args.top}_differ_from_today={differ}"]
    return out


def _split(scores: np.ndarray, chains) -> list[list[float]]:
    out, k = [], 0
    for c in chains:
        out.append(scores[k:k + len(c)].tolist())
        k += len(c)
    return out


if __name__ == "__main__":
    main()
