"""Token signals (SmolLM2 loss of the response given the instruction, loss alone, IFD) as features of the quality
ridge "when present" (issue 13): do they lift held-out and zero-shot agreement with GPT-4?

    python evals/ablate_quality_signals.py texts --out .devsig/texts.jsonl.gz          # here: every labelled text
    python evals/ablate_quality_signals.py compute --texts T --out S [--device cuda]   # the lent GPU (minutes)
    python evals/ablate_quality_signals.py evaluate --signals S                         # here: the ridge, with/without

``texts`` writes the distinct (instruction, response) pairs of MT-bench, Auto-J and AlpacaEval (both sides of
every pair). ``compute`` runs curate's own IFD step (``curate.signals.IFD``, the default signals model and
max_length) over them and writes per pair its key, ``loss_conditioned``, ``loss_alone`` and ``ifd`` (or the
failure). On 2 CPU cores this is ~0.4 rows/s (hours for these 20K texts), on an H200 a few minutes.
``evaluate`` refits the shipped quality ridge (evals/train_default_scorers.py: same config, split, sources)
with three more columns -- the two losses and log IFD, standardised on the training rows -- and prints the test
figures per source and zero-shot (one source left out of training), with and without the signals, beside
response length. Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

SIGNAL_NAMES = ("loss_conditioned", "loss_alone", "log_ifd")


def key(instruction: str, response: str) -> str:
    return hashlib.sha256(f"{instruction}\x00{response}".encode()).hexdigest()[:20]


def texts_command(args: argparse.Namespace) -> None:
    import scorer_label_data as D

    seen: dict[str, dict[str, str]] = {}
    for s in ("mtbench", "autoj"):
        for r in D.single_scores(s, args.data):
            seen.setdefault(key(r["instruction"], r["response"]), {"instruction": r["instruction"], "response": r["response"]})
    for q in D.alpaca_pairs(args.data):
        for side in ("a", "b"):
            seen.setdefault(key(q["instruction"], q[side]), {"instruction": q["instruction"], "response": q[side]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", encoding="utf-8") as fh:
        for k, r in seen.items():
            fh.write(json.dumps({"key": k, **r}) + "\n")
    print(f"{len(seen):,} distinct (instruction, response) pairs -> {args.out}")


def compute_command(args: argparse.Namespace) -> None:
    import time

    from curate.rows import Turn
    from curate.signals import IFD, Engine
    from curate.storage.step import RowInput, StepContext

    with gzip.open(args.texts, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    rows = [RowInput(r["key"], [{"role": "user", "content": r["instruction"]},
                                {"role": "assistant", "content": r["response"]}], [Turn(r["instruction"], r["response"])])
            for r in records]

    class Quiet:
        def update(self, n: int = 1) -> None:
            pass

    engine = Engine(args.model, device=args.device)
    t0 = time.perf_counter()
    out = IFD(engine=engine).run(rows, StepContext(Quiet(), args.cache, args.cache))
    seconds = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(args.out, "wt", encoding="utf-8") as fh:
        for i, r in enumerate(records):
            v = out.values[i][0] if out.values[i] else None
            rec = {"key": r["key"], "ifd": v, "loss_conditioned": out.extra["loss_conditioned"][i][0],
                   "loss_alone": out.extra["loss_alone"][i][0], "truncated": out.extra["truncated"][i][0]}
            if v is None:
                rec["failure"] = "; ".join(f"{f.code.value}: {f.message}" for f in out.failures[i])
            fh.write(json.dumps(rec) + "\n")
    print(f"{len(rows):,} rows in {seconds:.0f} s ({len(rows) / seconds:.0f} rows/s) on {engine.describe()}; "
          f"failed {sum(1 for v in out.values if not v or v[0] is None)}; stats {engine.stats}")


def evaluate_command(args: argparse.Namespace) -> None:
    import quality_ablation as Q
    import train_default_scorers as T

    with gzip.open(args.signals, "rt", encoding="utf-8") as fh:
        sig = {r["key"]: r for r in map(json.loads, fh)}

    def raw(instruction: str, response: str) -> list[float]:
        r = sig.get(key(instruction, response))
        if r is None or r.get("ifd") is None:
            return [np.nan] * len(SIGNAL_NAMES)
        return [r["loss_conditioned"], r["loss_alone"], float(np.log(max(r["ifd"], 1e-6)))]

    pairs, singles = T.quality_sets(args.data)
    train_raw = np.array([raw(r["instruction"], r["response"]) for s in singles.values() for r in s if r["split"] == "train"]
                         + [raw(q["instruction"], q[side]) for q in pairs if q["split"] == "train" for side in "ab"])
    mean, std = np.nanmean(train_raw, axis=0), np.nanstd(train_raw, axis=0) + 1e-9
    missing = int(np.isnan(train_raw).any(axis=1).sum())

    def signal_columns(instructions, responses):
        S = (np.array([raw(i, r) for i, r in zip(instructions, responses, strict=True)]) - mean) / std
        return np.nan_to_num(S, nan=0.0)  # a text without a signal sits at the training mean

    def measured() -> dict:
        cfg = T.GRID["quality"][0]
        test = T.quality_report(T.fit_quality(cfg, pairs, singles, ("train",)), pairs, singles, "test")
        zero = {}
        for held in ("autoj", "mtbench", "alpaca_eval"):
            z = T.fit_quality(cfg, pairs, singles, ("train", "val"),
                              tuple(s for s in ("alpaca_eval", "mtbench", "autoj") if s != held))
            zero[held] = T.quality_report(z, pairs, singles, "test")[held]
        return {"test": test, "zero": zero}

    def report(use_signals: bool) -> dict:
        if not use_signals:
            return measured()
        with Q.extra_columns(signal_columns, len(SIGNAL_NAMES)):
            return measured()

    print(f"signals for {len(sig):,} texts; {missing} training texts without one (imputed at the mean)")
    res = {name: report(flag) for name, flag in (("ridge (shipped features)", False), ("ridge + token signals", True))}
    print(f"{'kind':28} {'MT-bench':>9} {'Auto-J':>8} {'pairs':>7} {'matched':>8} {'ZS Auto-J':>10} {'ZS MT':>7} "
          f"{'ZS pairs':>9}")
    for name, r in res.items():
        t, z = r["test"], r["zero"]
        print(f"{name:28} {t['mtbench']['scorer']['spearman']:9.3f} {t['autoj']['scorer']['spearman']:8.3f} "
              f"{t['alpaca_eval']['all']['scorer']:7.3f} {t['alpaca_eval']['length_matched']['scorer']:8.3f} "
              f"{z['autoj']['scorer']['spearman']:10.3f} {z['mtbench']['scorer']['spearman']:7.3f} "
              f"{z['alpaca_eval']['all']['scorer']:9.3f}")
    t = res["ridge (shipped features)"]["test"]
    print(f"{'response length':28} {t['mtbench']['response_length']['spearman']:9.3f} "
          f"{t['autoj']['response_length']['spearman']:8.3f} {t['alpaca_eval']['all']['response_length']:7.3f} "
          f"{t['alpaca_eval']['length_matched']['response_length']:8.3f}")
    # the signals alone, test groups: does each column carry the judge's order the same way on every source?
    for s in ("mtbench", "autoj"):
        from scipy.stats import spearmanr

        rows = [r for r in singles[s] if r["split"] == "test"]
        S = np.array([raw(r["instruction"], r["response"]) for r in rows])
        y = [r["label"] for r in rows]
        print(f"{s} test, each signal alone (Spearman): " + ", ".join(
            f"{n} {spearmanr(S[:, j], y, nan_policy='omit').statistic:+.3f}" for j, n in enumerate(SIGNAL_NAMES)))
    a, b = res["ridge (shipped features)"], res["ridge + token signals"]
    print("RESULT " + " ".join(
        f"{tag}={b[part][src]['scorer']['spearman']:.3f} (without {a[part][src]['scorer']['spearman']:.3f})"
        for tag, part, src in (("mtbench", "test", "mtbench"), ("autoj", "test", "autoj"),
                               ("zero_shot_autoj", "zero", "autoj"), ("zero_shot_mtbench", "zero", "mtbench")))
        + f" pairs={b['test']['alpaca_eval']['all']['scorer']:.3f} (without {a['test']['alpaca_eval']['all']['scorer']:.3f})")


def main() -> None:
    import scorer_label_data as D

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("texts")
    t.add_argument("--data", type=Path, default=D.DATA)
    t.add_argument("--out", type=Path, required=True)
    c = sub.add_parser("compute")
    c.add_argument("--texts", type=Path, required=True)
    c.add_argument("--out", type=Path, required=True)
    c.add_argument("--model", default=None, help="signals model folder (default: curate's SmolLM2)")
    c.add_argument("--device", default=None)
    c.add_argument("--cache", type=Path, default=Path("/tmp/curate-signal-cache"))
    e = sub.add_parser("evaluate")
    e.add_argument("--data", type=Path, default=D.DATA)
    e.add_argument("--signals", type=Path, required=True)
    args = ap.parse_args()
    {"texts": texts_command, "compute": compute_command, "evaluate": evaluate_command}[args.command](args)


if __name__ == "__main__":
    main()
