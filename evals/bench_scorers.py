"""Benchmark the default scorers: agreement with their real GPT-4 labels, throughput, cost per row.

    python evals/bench_scorers.py [--data ../shared/data] [--rows 512] [--repeats 3] [--compare]

1. Held-out agreement (Spearman etc.) of each default scorer configuration with its judge's labels,
   beside the length baseline (response length for quality, instruction length for complexity) and
   random. The held-out groups are split off before any fitting (same split as the training script).
2. Throughput on this machine: the shipped scorer's rows/s against MiniLM's own ``encode`` on the same
   texts (instruction, and response for quality), timed alternately, median of ``--repeats``. Absolute
   rows/s follow the machine's load (other jobs share the cores); the ratio is the comparable figure.
3. Cost per row against the API judge it imitates (GPT-4; price assumptions printed).
``--compare`` also prints the K-fold figures of the alternative heads/features tried.
Last line: ``RESULT quality_spearman=<x> complexity_spearman=<y> rows_per_s=<n>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from default_scorer_data import CACHE, DATA, SPECS, cached_embed, load_labels  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from train_default_scorers import CONFIGS, build  # noqa: E402

from curate.cli.scorers import evaluation_table  # noqa: E402
from curate.embed import encode  # noqa: E402
from curate.scorers import Scorer, evaluate_features, input_texts, load_default, train_and_evaluate  # noqa: E402

# Price assumptions (USD), stated in the output.
GPT4_IN_PER_M, GPT4_OUT_PER_M = 30.0, 60.0  # GPT-4 (8K) list price per million tokens
GPT4O_IN_PER_M, GPT4O_OUT_PER_M = 2.50, 10.0  # gpt-4o, a cheaper GPT-4-class judge
PROMPT_OVERHEAD_TOKENS = 350  # judge instructions + few-shot examples around the row text
OUTPUT_TOKENS = 1  # one score digit (logprob scoring)
CPU_HOUR_USD = 0.10  # a 2-vCPU cloud VM, on-demand


def alternatives(name: str) -> dict[str, dict]:
    base = dict(CONFIGS[name])
    alts = {"shipped": base}
    if name == "quality":
        alts["embeddings + length only"] = {"head": "ridge", "alpha": 1000.0, "features": ["embeddings", "length"]}
        alts["+ product, alpha 1000"] = {"head": "ridge", "alpha": 1000.0, "features": ["embeddings", "product", "length"]}
        alts["length + stats, no embeddings"] = {"head": "ridge", "alpha": 10.0, "features": ["length", "stats"]}
        alts["+ product"] = {**base, "features": ["embeddings", "product", "length", "stats"]}
        for a, w in ((100.0, 0.1), (300.0, 0.1), (30.0, 0.3), (30.0, 1.0)):
            alts[f"alpha {a:g}, embedding weight {w:g}"] = {**base, "alpha": a, "embedding_weight": w}
    else:
        alts["ridge, embeddings + length, alpha 1000"] = {"head": "ridge", "alpha": 1000.0, "features": ["embeddings", "length"]}
        alts["ridge + stats, alpha 1000"] = {"head": "ridge", "alpha": 1000.0, "features": ["embeddings", "length", "stats"]}
        alts["ordinal, no stats"] = {**base, "features": ["embeddings", "length"]}
        alts["ordinal C=0.003"] = {**base, "C": 0.003}
        alts["ordinal C=0.03"] = {**base, "C": 0.03}
    return alts


def compare(name: str, rows, labels, groups, emb, console: Console) -> None:
    table = Table(title=f"{name}: alternatives, 5-fold on the training part (held-out untouched)")
    for head in ("config", "spearman", "± std", "kendall", "MAE"):
        table.add_column(head)
    spec = SPECS[name]
    for label, cfg in alternatives(name).items():
        cfg = dict(cfg)
        reads = cfg.pop("reads", spec["reads"])
        def make(cfg=cfg, reads=reads) -> Scorer:
            return Scorer(reads=reads, **cfg)
        X = make().featurize(emb)
        chars = emb["_chars_response" if "response" in spec["reads"] else "_chars_instruction"]
        ev = evaluate_features(make, X, labels, chars, groups=groups)
        m = ev.kfold["scorer"]
        table.add_row(label, f"{m['spearman']:.3f}", f"{m['spearman_std']:.3f}", f"{m['kendall']:.3f}", f"{m['mae']:.3f}")
    console.print(table)


def throughput(name: str, rows, n: int, repeats: int) -> dict[str, float]:
    scorer = load_default(name)
    rows = rows[:n]
    texts = input_texts(rows, scorer.reads)
    encode(["warm up"] * 8)
    scorer.predict(rows[:8])
    enc_times, sc_times = [], []
    for _ in range(repeats):  # alternate so both see the same machine load
        t0 = time.perf_counter()
        for inp in scorer.reads:
            encode(texts[inp])
        enc_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        scorer.predict(rows)
        sc_times.append(time.perf_counter() - t0)
    enc, sc = statistics.median(enc_times), statistics.median(sc_times)
    # What the scorer adds to encode (text statistics + head), timed without encoding: load-insensitive.
    embeddings = {inp: encode(texts[inp]) for inp in scorer.reads}
    t0 = time.perf_counter()
    scorer.predict_features(scorer.featurize(scorer.measure(texts, embeddings)))
    extra = time.perf_counter() - t0
    return {"extra_ms_per_row": 1000 * extra / len(rows), "encode_ms_per_row": 1000 * enc / len(rows),
            "rows": len(rows), "encode_rows_per_s": len(rows) / enc, "scorer_rows_per_s": len(rows) / sc,
            "ratio": enc / sc, "texts_per_row": len(scorer.reads),
            "mean_chars": float(np.mean([sum(len(texts[i][r]) for i in scorer.reads) for r in range(len(rows))]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--cache", type=Path, default=CACHE, help="embedding cache folder")
    parser.add_argument("--rows", type=int, default=512, help="rows per throughput measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compare", action="store_true", help="also print alternative heads/features (K-fold)")
    args = parser.parse_args()
    console = Console(width=140)

    held: dict[str, dict] = {}
    data: dict[str, tuple] = {}
    for name in ("complexity", "quality"):
        rows, labels, groups = load_labels(name, args.data)
        scorer = build(name)
        emb = cached_embed(scorer, rows, args.cache)
        data[name] = (rows, labels, groups)
        ev = train_and_evaluate(scorer, rows, labels, k=5, holdout=0.2, groups=groups, seed=args.seed,
                                refit_all=False, embedded=emb)
        console.print(evaluation_table(ev, f"{name}: agreement with GPT-4 labels ({SPECS[name]['imitates']['label_set']})"))
        held[name] = ev.holdout
        from scipy.stats import spearmanr

        chars = emb["_chars_response" if "response" in SPECS[name]["reads"] else "_chars_instruction"]
        console.print(f"  length vs label on all {len(labels):,} rows: spearman {spearmanr(chars, labels).statistic:.3f}"
                      " (data README: 0.14 for quality)")
        shipped = load_default(name).metrics["holdout"]["scorer"]["spearman"]
        console.print(f"  shipped {name} scorer.json held-out spearman: {shipped:.3f} (this run: "
                      f"{ev.holdout['scorer']['spearman']:.3f})")
        if args.compare:
            compare(name, rows, labels, groups, emb, console)

    table = Table(title="held-out Spearman vs the length baseline (target: gain >= 0.25)")
    for head in ("scorer", "scorer rho", "length rho", "random rho", "gain", "n held-out", "target met"):
        table.add_column(head)
    for name, h in held.items():
        gain = h["scorer"]["spearman"] - h["length"]["spearman"]
        table.add_row(name, f"{h['scorer']['spearman']:.3f}", f"{h['length']['spearman']:.3f}",
                      f"{h['random']['spearman']:.3f}", f"{gain:+.3f}", f"{h['scorer']['n']:,}", "yes" if gain >= 0.25 else "NO")
    console.print(table)

    tp = {name: throughput(name, data[name][0], args.rows, args.repeats) for name in ("complexity", "quality")}
    table = Table(title="throughput on this machine (median of alternating runs; encode = MiniLM on the same texts)")
    for head in ("scorer", "rows", "texts/row", "mean chars/row", "encode rows/s", "scorer rows/s", "scorer/encode",
                 "stats+head ms/row", "encode ms/row"):
        table.add_column(head)
    for name, t in tp.items():
        table.add_row(name, f"{t['rows']}", f"{t['texts_per_row']}", f"{t['mean_chars']:.0f}",
                      f"{t['encode_rows_per_s']:.1f}", f"{t['scorer_rows_per_s']:.1f}", f"{t['ratio']:.2f}",
                      f"{t['extra_ms_per_row']:.2f}", f"{t['encode_ms_per_row']:.1f}")
    console.print(table)

    # Cost per row: API judge (prompt = row text at ~4 chars/token + overhead; one output digit) vs CPU time.
    table = Table(title=f"cost per row (assumptions: GPT-4 ${GPT4_IN_PER_M}/M in, ${GPT4_OUT_PER_M}/M out; "
                        f"gpt-4o ${GPT4O_IN_PER_M}/M in, ${GPT4O_OUT_PER_M}/M out; prompt = row chars/4 + "
                        f"{PROMPT_OVERHEAD_TOKENS} tokens, {OUTPUT_TOKENS} output token; CPU ${CPU_HOUR_USD}/h "
                        "for this 2-core machine)")
    for head in ("scorer", "GPT-4 $/row", "gpt-4o $/row", "scorer $/row", "x cheaper than GPT-4", "x cheaper than gpt-4o"):
        table.add_column(head)
    cheaper = {}
    for name, t in tp.items():
        tokens_in = t["mean_chars"] / 4 + PROMPT_OVERHEAD_TOKENS
        gpt4 = (tokens_in * GPT4_IN_PER_M + OUTPUT_TOKENS * GPT4_OUT_PER_M) / 1e6
        gpt4o = (tokens_in * GPT4O_IN_PER_M + OUTPUT_TOKENS * GPT4O_OUT_PER_M) / 1e6
        ours = CPU_HOUR_USD / 3600 / t["scorer_rows_per_s"]
        cheaper[name] = gpt4 / ours
        table.add_row(name, f"{gpt4:.2e}", f"{gpt4o:.2e}", f"{ours:.2e}", f"{gpt4 / ours:,.0f}", f"{gpt4o / ours:,.0f}")
    console.print(table)

    rows_per_s = min(t["scorer_rows_per_s"] for t in tp.values())
    print(f"RESULT quality_spearman={held['quality']['scorer']['spearman']:.3f} "
          f"complexity_spearman={held['complexity']['scorer']['spearman']:.3f} rows_per_s={rows_per_s:.1f}")


if __name__ == "__main__":
    main()
