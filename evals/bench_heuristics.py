"""Benchmark: the ``heuristics`` selector on real pools, checked against real judge labels it never saw.

    python evals/bench_heuristics.py [--data ../shared/data] [--workspace /tmp/curate-heuristics]

Pools, each loaded into its own workspace under ``--workspace`` once:

* ``pool_30k.jsonl`` (30,770 rows; curated sources, few defects): rows failing each rule with the defaults and
  with ``languages=["en"]``, and a sample of each rule's rows to read. Seconds beside the exact-dedup selector, a
  pass over the same text, in the same run.
* Auto-J's 960 Chatbot-Arena answers with GPT-4 ratings 1–10, and MT-bench's answers of many models with GPT-4
  ratings 1–10 (the 2,398 of 2,432 rated on that scale): the judge's mean rating of the rows the default rules drop,
  of the rows they keep and of all rows (a random drop of the same size expects the last), and the share of dropped
  rows the judge rated below its median. The language rule is left out here: another language is no defect to a
  judge (MT-bench's file holds an Arabic translation, which ``languages=["en"]`` drops whole).
* AlpaGasus's 9,229 Alpaca rows with ChatGPT's helpfulness flag (rating >= 4.5): the flag's rate among dropped and
  kept rows.

The rules were written before these labels were read, with one exception: the loop rule's block limit (100 words)
was chosen among 30, 60 and 100 by reading the Auto-J and MT-bench rows each newly flagged. Prints a ``RESULT`` line. The
machine is shared: times are indicative.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.codes import describe  # noqa: E402
from curate.session import Workspace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def workspace(root: Path, name: str, source: Path | list[dict]) -> Workspace:
    """A workspace of ``source`` (a file, or records written to a file first), loaded once."""
    ws = Workspace(root / name)
    if len(ws) == 0:
        if isinstance(source, list):
            path = Path(tempfile.mkdtemp()) / f"{name}.jsonl"
            path.write_text("".join(json.dumps(r) + "\n" for r in source))
            source = path
        ws.load(str(source))
    return ws


def outcome(ws: Workspace, name: str, **params) -> tuple[dict[str, dict], float]:
    """Row id -> detail of each dropped row (kept rows absent), and the selector's seconds."""
    start = time.perf_counter()
    sel = ws.select(method="heuristics", name=name, **params)
    seconds = time.perf_counter() - start
    return {r["id"]: r["detail"] for r in sel.rows() if r["decision"] != "kept"}, seconds


def labelled(path: Path, read, keep=lambda r: True) -> list[dict]:
    """Records of a label file (those ``keep`` accepts) as {instruction, output, label}; exits naming the file when
    it is absent."""
    if not path.exists():
        raise SystemExit(f"labels not found: {path} is absent; nothing measured")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [read(r) for r in map(json.loads, filter(str.strip, fh)) if keep(r)]


def against_labels(root: Path, name: str, records: list[dict]) -> dict[str, float]:
    """The judge's labels of the rows the rules drop, keep, and of all rows."""
    ws = workspace(root, name, [{"instruction": r["instruction"], "output": r["output"]} for r in records])
    dropped, _ = outcome(ws, "heuristics")  # the quality rules: another language is no defect to a judge
    by_text = {}  # a label joins its row by text (records with the same text are one row, and one decision)
    for rid, conv in zip(ws.ids, ws.conversations(), strict=True):
        by_text[(conv[0]["content"], conv[-1]["content"] if conv[-1]["role"] == "assistant" else "")] = rid
    row_of = [by_text.get((r["instruction"], r["output"])) for r in records]
    if None in row_of:
        raise SystemExit(f"{name}: {row_of.count(None)} labelled records match no loaded row; nothing measured")
    labels = np.array([float(r["label"]) for r in records])
    first_rule = np.array([dropped[rid]["rule"] if rid in dropped else "" for rid in row_of])  # "": kept
    is_dropped = first_rule != ""
    rules = Counter(d["rule"] for d in dropped.values())
    out = {"rows": len(records), "dropped": int(is_dropped.sum()), "mean_all": labels.mean(),
           "mean_dropped": labels[is_dropped].mean() if is_dropped.any() else float("nan"),
           "mean_kept": labels[~is_dropped].mean(),
           "below_median_dropped": float((labels[is_dropped] < np.median(labels)).mean()) if is_dropped.any() else 0,
           "below_median_all": float((labels < np.median(labels)).mean())}
    other, _ = outcome(ws, "heuristics_en", languages=["en"])
    languages = Counter(f"{d.get('instruction_language') or '-'}/{d.get('response_language', '-')}" for d in other.values()
                        if d["rule"] == "language")
    out["language_dropped"] = sum(languages.values())
    print(f"\n{name}: {out['dropped']} of {out['rows']} dropped ({dict(rules)}); the language rule (languages=['en']) "
          f"drops {out['language_dropped']} more (prompt/reply language: {dict(languages)})")
    below = ("" if set(np.unique(labels)) <= {0.0, 1.0}  # a flag: its mean is the rate, a median says nothing
             else f"; below the median: {out['below_median_dropped']:.0%} of dropped vs {out['below_median_all']:.0%} of all")
    print(f"  judge's mean: dropped {out['mean_dropped']:.2f}, kept {out['mean_kept']:.2f}, all {out['mean_all']:.2f}"
          f"{below}")
    for rule in rules:
        values = labels[first_rule == rule]
        print(f"    {rule}: {len(values)} rows, judge's mean {values.mean():.2f}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--workspace", type=Path, default=Path(tempfile.gettempdir()) / "curate-heuristics")
    args = ap.parse_args()
    pool = args.data / "pool_30k.jsonl"
    if not pool.exists():
        raise SystemExit(f"pool not found: {pool} is absent; nothing measured")

    ws = workspace(args.workspace, "pool30k", pool)
    start = time.perf_counter()
    ws.select(method="exact", name="dedup")
    exact_s = time.perf_counter() - start
    dropped, heuristics_s = outcome(ws, "heuristics")
    dropped_en, language_s = outcome(ws, "heuristics_en", languages=["en"])
    by_rule = Counter(d["rule"] for d in dropped.values())
    print(f"pool_30k: {len(dropped)} of {len(ws):,} rows fail a rule: {dict(by_rule)}; with languages=['en']: "
          f"{len(dropped_en)} ({dict(Counter(d['rule'] for d in dropped_en.values()))})")
    print(f"  heuristics {heuristics_s:.2f} s, with the language rule {language_s:.2f} s; exact dedup {exact_s:.2f} s")
    conversations = dict(zip(ws.ids, ws.conversations(), strict=True))
    for rule in by_rule:
        print(f"  {rule}:")
        for rid in [r for r, d in dropped.items() if d["rule"] == rule][:4]:
            reply = conversations[rid][-1]["content"]
            print(f"    {describe('fails_heuristic', dropped[rid])[:110]}  | reply: {reply[:70]!r}")

    autoj = against_labels(args.workspace, "autoj", labelled(
        args.data / "autoj_960_gpt4_quality.jsonl",
        lambda r: {"instruction": r["query"], "output": r["response"], "label": r["gpt4_score"]}))
    mtbench = against_labels(args.workspace, "mtbench", labelled(
        args.data / "mtbench_gpt4_single.jsonl.gz",
        lambda r: {"instruction": r["instruction"], "output": r["response"], "label": r["label"]},
        keep=lambda r: 1 <= float(r["label"]) <= 10))  # a few forks' rows hold ratings out of 100
    alpagasus = against_labels(args.workspace, "alpagasus", labelled(
        args.data / "alpaca_9k_judge_flags.jsonl",
        lambda r: {"instruction": r["instruction"] + (f"\n\n{r['input']}" if r["input"] else ""),
                   "output": r["output"], "label": float(r["chatgpt_helpfulness_ge_4_5"])}))
    print(f"\nRESULT pool_rows={len(ws)} pool_dropped={len(dropped)} pool_dropped_en={len(dropped_en)} "
          f"heuristics_s={heuristics_s:.2f} exact_dedup_s={exact_s:.2f} ratio={heuristics_s / exact_s:.2f} "
          f"autoj_dropped={autoj['dropped']} autoj_mean_dropped={autoj['mean_dropped']:.2f} "
          f"autoj_mean_all={autoj['mean_all']:.2f} mtbench_dropped={mtbench['dropped']} "
          f"mtbench_mean_dropped={mtbench['mean_dropped']:.2f} mtbench_mean_all={mtbench['mean_all']:.2f} "
          f"autoj_language_dropped={autoj['language_dropped']} mtbench_language_dropped={mtbench['language_dropped']} "
          f"alpagasus_dropped={alpagasus['dropped']} alpagasus_helpful_rate_dropped={alpagasus['mean_dropped']:.3f} "
          f"alpagasus_helpful_rate_all={alpagasus['mean_all']:.3f}")


if __name__ == "__main__":
    main()
