"""Evaluate the token-level signals on real data: agreement with GPT-4 quality, IFD >= 1 by source.

    python evals/eval_signals.py [--data ../shared/data] [--autoj 300] [--mtbench 300] [--pool 2000]
                                 [--learnability] [--reference 64] [--lora-steps 60] [--cache DIR]

1. Spearman rho of perplexity, IFD, loss(A|Q) (and, with ``--learnability``, LoBaSS learnability) with
   GPT-4's quality scores on seeded samples of ``autoj_960_gpt4_quality.jsonl`` (1-10) and
   ``mtbench_gpt4_single.jsonl.gz`` (1-10; each record scored as one turn: the record's instruction and
   response, since MT-bench's first-turn answer is not in the file), beside the response-length baseline.
2. On a seeded uniform sample of ``pool_30k.jsonl``: the share of rows with IFD >= 1 per source, and the
   sources of an IFD top-10% selection (Cherry LLM's recipe: drop IFD >= 1, keep the top by IFD); the
   pool's ``alpaca.cherry_5pct`` rows are Cherry LLM's own IFD selection (by a 7B model), so their share in
   the top 10% is a weak-to-strong check.
The learnability reference set is ``--reference`` rows of the pool's ``alpaca.claude_t45`` source (Claude
rated >= 4.5, AlpaGasus), disjoint from the evaluated rows.

The model is SmolLM2-135M-Instruct (or ``--model``); every scored response is cached in ``--cache``, so a
re-run is free. The data stays outside the project: the script says so and stops when it is absent.
Last line: ``RESULT autoj_rho_ifd=... autoj_rho_perplexity=... autoj_rho_length=... mtbench_... pool_ifd_ge1=...``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.rows import Turn  # noqa: E402
from curate.storage.step import RowInput, StepContext  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if not DATA.exists():
    DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sample(records: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """A seeded uniform sample (all records when ``n`` is at least their number)."""
    if n >= len(records):
        return list(records)
    return random.Random(seed).sample(records, n)


def pool_rows(path: Path, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` seeded uniform rows of pool_30k as {id, source, instruction, response}."""
    out = []
    for r in sample(read_jsonl(path), n, seed):
        instruction = r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")
        out.append({"id": r["uid"], "source": r["source"], "instruction": instruction, "response": r["output"]})
    return out


def row_inputs(records: list[dict[str, Any]]) -> list[RowInput]:
    """Single-turn RowInputs of {instruction, response} records."""
    rows = []
    for i, r in enumerate(records):
        conv = [{"role": "user", "content": r["instruction"]}, {"role": "assistant", "content": r["response"]}]
        rows.append(RowInput(str(r.get("id", i)), conv, [Turn(r["instruction"], r["response"])]))
    return rows


class Bar:
    """A tqdm bar as the step context's progress (evals may print)."""

    def __init__(self, total: int, desc: str):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=desc, unit="row", mininterval=2.0)

    def update(self, n: int = 1) -> None:
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


def run_step(step: Any, rows: list[RowInput], cache: Path, desc: str) -> Any:
    bar = Bar(len(rows), desc)
    try:
        return step.run(rows, StepContext(bar, cache, cache))
    finally:
        bar.close()


def first(values: list[Any]) -> list[float]:
    """One value per single-turn row (NaN where missing)."""
    return [math.nan if not v or v[0] is None else float(v[0]) for v in values]


def spearman(x: list[float], y: list[float]) -> tuple[float, int]:
    from scipy.stats import spearmanr

    pairs = [(a, b) for a, b in zip(x, y, strict=True) if not (math.isnan(a) or math.isnan(b))]
    if len(pairs) < 3:
        return math.nan, len(pairs)
    rho = spearmanr([p[0] for p in pairs], [p[1] for p in pairs]).statistic
    return float(rho), len(pairs)


def quality_sets(data: Path, n_autoj: int, n_mtbench: int, seed: int) -> dict[str, list[dict[str, Any]]]:
    autoj = [{"id": f"autoj-{i}", "instruction": r["query"], "response": r["response"], "label": float(r["gpt4_score"])}
             for i, r in enumerate(read_jsonl(data / "autoj_960_gpt4_quality.jsonl"))]
    mtb = [{"id": f"mtbench-{i}", "instruction": r["instruction"], "response": r["response"], "label": float(r["label"])}
           for i, r in enumerate(read_jsonl(data / "mtbench_gpt4_single.jsonl.gz"))
           if r.get("label") not in (None, "", "-1") and float(r["label"]) >= 1]
    return {"autoj": sample(autoj, n_autoj, seed), "mtbench": sample(mtb, n_mtbench, seed)}


def signal_columns(records: list[dict[str, Any]], steps: dict[str, Any], cache: Path, name: str) -> dict[str, list[float]]:
    """Per-record values of every signal (and IFD's loss(A|Q)) for single-turn records."""
    rows = row_inputs(records)
    cols: dict[str, list[float]] = {"length": [float(len(r["response"])) for r in records]}
    ifd = run_step(steps["ifd"], rows, cache, f"{name} ifd")
    cols["ifd"] = first(ifd.values)
    cols["loss(A|Q)"] = first(ifd.extra["loss_conditioned"])
    cols["perplexity"] = first(run_step(steps["perplexity"], rows, cache, f"{name} perplexity").values)
    if "learnability" in steps:
        cols["learnability"] = first(run_step(steps["learnability"], rows, cache, f"{name} learnability").values)
    return cols


def pool_section(args: argparse.Namespace, ifd_step: Any) -> dict[str, float]:
    """IFD >= 1 per source and the sources of an IFD top 10% on a seeded uniform sample of the pool."""
    records = pool_rows(args.data / "pool_30k.jsonl", args.pool, args.seed)
    ifd = first(run_step(ifd_step, row_inputs(records), args.cache, "pool ifd").values)
    by_source: dict[str, list[float]] = {}
    for r, v in zip(records, ifd, strict=True):
        by_source.setdefault(r["source"], []).append(v)
    print(f"\npool_30k: {len(records)} rows, seeded uniform sample (seed {args.seed}); IFD >= 1 per source")
    for source, vals in sorted(by_source.items(), key=lambda kv: -len(kv[1])):
        ok = sorted(v for v in vals if not math.isnan(v))
        print(f"  {source:24} {len(vals):5} rows  IFD >= 1: {sum(v >= 1 for v in ok) / max(1, len(ok)):6.1%}  "
              f"median IFD {ok[len(ok) // 2] if ok else math.nan:.3f}")
    valid = sorted(((v, r["source"]) for r, v in zip(records, ifd, strict=True) if not math.isnan(v) and v < 1),
                   reverse=True)
    top = valid[: max(1, round(0.1 * len(records)))]
    base = Counter(r["source"] for r in records)
    print(f"\nIFD top 10% ({len(top)} rows: IFD >= 1 dropped, highest IFD first) by source, vs the sample's share")
    for source, n in Counter(s for _, s in top).most_common():
        print(f"  {source:24} {n / len(top):6.1%}  (sample {base[source] / len(records):6.1%})")
    scored = [v for v in ifd if not math.isnan(v)]
    return {"pool_ifd_ge1": sum(v >= 1 for v in scored) / max(1, len(scored))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--autoj", type=int, default=300)
    ap.add_argument("--mtbench", type=int, default=300)
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--learnability", action="store_true")
    ap.add_argument("--reference", type=int, default=64)
    ap.add_argument("--lora-steps", type=int, default=60)
    ap.add_argument("--model", default=None)
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--device", default=None)
    ap.add_argument("--max-length", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "curate" / "evals" / "signals")
    args = ap.parse_args()
    need = ["autoj_960_gpt4_quality.jsonl", "mtbench_gpt4_single.jsonl.gz", "pool_30k.jsonl"]
    missing = [n for n in need if not (args.data / n).exists()]
    if missing:
        sys.exit(f"shared data absent: {', '.join(missing)} not in {args.data} (this eval reads it by path; pass --data)")
    from curate.signals import IFD, Engine, Learnability, LoraConfig, Perplexity

    engine = Engine(args.model, dtype=args.dtype, device=args.device, max_length=args.max_length)
    steps: dict[str, Any] = {"ifd": IFD(engine=engine), "perplexity": Perplexity(engine=engine)}
    pool_all = read_jsonl(args.data / "pool_30k.jsonl")
    if args.learnability:
        good = [r for r in pool_all if r["source"] == "alpaca.claude_t45"]
        ref = sample(good, args.reference, args.seed + 1)
        ref_rows = [{"instruction": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else ""),
                     "response": r["output"]} for r in ref]
        lora = LoraConfig(steps=args.lora_steps)
        steps["learnability"] = Learnability(ref_rows, engine=engine, lora=lora)
    print(f"model {engine.model_dir} ({engine.dtype}, {engine.device}), max_length {args.max_length}, "
          f"cache {args.cache}")
    result: dict[str, float] = {}
    for name, records in quality_sets(args.data, args.autoj, args.mtbench, args.seed).items():
        if not records:
            continue
        cols = signal_columns(records, steps, args.cache, name)
        labels = [r["label"] for r in records]
        print(f"\n{name}: {len(records)} rows (seed {args.seed}); Spearman rho with GPT-4 quality")
        for col, values in cols.items():
            rho, n = spearman(values, labels)
            print(f"  {col:14} rho = {rho:+.3f}  (n = {n})")
            result[f"{name}_rho_{col.replace('(A|Q)', '_conditioned')}"] = rho
        share = sum(1 for v in cols["ifd"] if v >= 1) / max(1, sum(1 for v in cols["ifd"] if not math.isnan(v)))
        print(f"  IFD >= 1: {share:.1%} of rows")
    if args.pool > 0:
        result.update(pool_section(args, steps["ifd"]))
    print("RESULT " + " ".join(f"{k}={v:.3f}" for k, v in result.items()))


if __name__ == "__main__":
    main()
