"""The real judge labels the issue-13 scorers learn from, split by instruction/question (never by row).

quality (GPT-4):  alpaca_eval  AlpacaEval pairwise preferences (instruction, baseline a, response b, P(b wins))
                  mtbench      MT-bench single-answer scores 1-10 (question_id groups; 0-100-scale rows dropped)
                  autoj        Auto-J 960 ratings 1-10 (query groups)
complexity:       flask        FLASK 1,740 difficulty levels 1-5 (instruction groups)

Each group lands in ``train`` / ``val`` (early stopping) / ``test`` (reported) by a hash of its key, so the
split is the same on every machine. Standard library + numpy only (the GPU machine runs this file).
Files are read as ``NAME`` or ``NAME.gz`` from the data folder.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLASK_LEVELS = ["simple lifestyle knowledge", "advanced lifestyle knowledge", "formal education knowledge",
                "major level knowledge", "expert level knowledge"]
FILES = {"alpaca_eval": "alpaca_eval_gpt4_pairs.jsonl", "mtbench": "mtbench_gpt4_single.jsonl",
         "autoj": "autoj_960_gpt4_quality.jsonl", "flask": "flask_1740_difficulty_skills.jsonl"}
TEST, VAL = 0.2, 0.1


def read_jsonl(data: Path, name: str) -> list[dict[str, Any]]:
    path = Path(data) / name
    if not path.exists():
        path = Path(data) / (name + ".gz")
    if not path.exists():
        raise SystemExit(f"real judge labels not found: {Path(data) / name}(.gz) is absent; nothing measured")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def split_of(key: str, salt: str = "issue13") -> str:
    """train / val / test by a hash of the group key (instruction or question id)."""
    u = int(hashlib.sha256(f"{salt}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < TEST else "val" if u < TEST + VAL else "train"


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v


def alpaca_pairs(data: Path = DATA) -> list[dict[str, Any]]:
    """instruction, a (baseline), b, p_b = P(b better) in [0, 1], group, split."""
    out = []
    for r in read_jsonl(data, FILES["alpaca_eval"]):
        pref = _num(r.get("preference"))
        if pref is None or not (1.0 <= pref <= 2.0) or not r.get("response_a") or not r.get("response_b"):
            continue
        out.append({"instruction": r["instruction"], "a": r["response_a"], "b": r["response_b"], "p_b": pref - 1.0,
                    "group": r["instruction"], "split": split_of(r["instruction"]), "judge": r.get("judge")})
    return out


def single_scores(name: str, data: Path = DATA) -> list[dict[str, Any]]:
    """instruction, response, label (1-10), group, split for ``mtbench`` or ``autoj``; for ``alpagasus`` (one
    Alpaca answer per instruction, AlpaGasus' flags: Claude quality >= 4.5 plus ChatGPT helpfulness >= 4.5) the
    label is 0-2 (``alpagasus_claude``, ``alpagasus_chatgpt``: one judge's flag, 0-1) and the instruction carries
    its input as curate joins them."""
    out = []
    if name.startswith("alpagasus"):
        flags = {"alpagasus": ("claude_score_ge_4_5", "chatgpt_helpfulness_ge_4_5"),
                 "alpagasus_claude": ("claude_score_ge_4_5",),
                 "alpagasus_chatgpt": ("chatgpt_helpfulness_ge_4_5",)}[name]
        for r in read_jsonl(data, "alpaca_9k_judge_flags.jsonl"):
            ins = r["instruction"] if not (r.get("input") or "").strip() else f"{r['instruction']}\n\n{r['input']}"
            if not (r.get("output") or "").strip():
                continue
            out.append({"instruction": ins, "response": r["output"], "group": ins, "split": split_of(ins),
                        "label": float(sum(bool(r[f]) for f in flags))})
    elif name == "mtbench":
        for r in read_jsonl(data, FILES["mtbench"]):
            label = _num(r.get("label"))
            if label is None or not (1 <= label <= 10) or not (r.get("response") or "").strip() \
                    or str(r.get("judge", "")).lower() != "gpt-4":
                continue
            key = f"mt{r['question_id']}"
            out.append({"instruction": r["instruction"], "response": r["response"], "label": label, "group": key,
                        "split": split_of(key)})
    else:
        for r in read_jsonl(data, FILES["autoj"]):
            if not (r.get("response") or "").strip():  # a scorer refuses a row with no response (one Auto-J row)
                continue
            out.append({"instruction": r["query"], "response": r["response"], "label": float(r["gpt4_score"]),
                        "group": r["query"], "split": split_of(r["query"])})
    return out


def judged_groups(rows: list[dict[str, Any]], labels: int, seed: int = 0) -> set:
    """The distillation split (evals/eval_distil.py and its ablations): whole groups (questions), drawn in a
    seeded random order until they hold ~``labels`` rows. Those rows are "judged"; the others are the rest of
    the pool."""
    import random

    groups = sorted({r["group"] for r in rows})
    random.Random(seed).shuffle(groups)
    judged: set = set()
    n = 0
    for g in groups:
        if n >= labels:
            break
        judged.add(g)
        n += sum(r["group"] == g for r in rows)
    return judged


def flask_levels(data: Path = DATA) -> list[dict[str, Any]]:
    """instruction, label (level 1-5), group, split; the rows marked unknown are dropped."""
    out = []
    for r in read_jsonl(data, FILES["flask"]):
        if r["difficulty"] in FLASK_LEVELS:
            out.append({"instruction": r["instruction"], "label": float(FLASK_LEVELS.index(r["difficulty"]) + 1),
                        "group": r["instruction"], "split": split_of(r["instruction"])})
    return out


def flask_to6(rows: list[dict[str, Any]]) -> Any:
    """FLASK levels 1..5 of ``rows`` on DEITA's 1-6 scale (1 + (level - 1) * 5/4), as a numpy array."""
    import numpy as np

    return 1 + (np.array([r["label"] for r in rows], dtype=float) - 1) * 5 / 4


def chain_seeds(flask: list[dict[str, Any]], split: str, n: int | None = None) -> list[str]:
    """Seed instructions for constraint chains: FLASK instructions of one split (short ones, one paragraph)."""
    seeds = [r["instruction"] for r in flask if r["split"] == split and 20 <= len(r["instruction"]) <= 400]
    return seeds[:n] if n else seeds


def curate_file(name: str, relative: str):
    """A standard-library-only curate file loaded by path (once), so the GPU machine, which lacks curate's
    dependencies, runs exactly the code the CPU scripts run."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / relative)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def constraints_module():
    """``curate/scorers/constraints.py`` (the constraint-chain builders), loaded by path."""
    return curate_file("curate_constraints_by_path", "curate/scorers/constraints.py")


def complexity_chain_sets(flask: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The constraint chains of every scorer script, per split: ``appended`` (each version appends one
    requirement), ``rewritten`` (versions phrased afresh, padded with requirement-free filler; the test split
    uses held-out phrasings) and ``twins`` (filler-padded copies of the rewritten versions: ties). Train and
    val chains draw on the training families, test chains on the held-out families and seed instructions."""
    c = constraints_module()
    seeds = {"train": chain_seeds(flask, "train", 400), "val": chain_seeds(flask, "val", 120),
             "test": chain_seeds(flask, "test", 200)}
    rewritten = {"train": c.rewritten_chains(seeds["train"], c.TRAIN_FAMILIES, seed=1),
                 "val": c.rewritten_chains(seeds["val"], c.TRAIN_FAMILIES, seed=2),
                 "test": c.rewritten_chains(seeds["test"], c.EVAL_FAMILIES, seed=3, held_out=True)}
    appended = {"train": c.constraint_chains(seeds["train"], c.TRAIN_FAMILIES, seed=1),
                "val": c.constraint_chains(seeds["val"], c.TRAIN_FAMILIES, seed=2),
                "test": c.constraint_chains(seeds["test"], c.EVAL_FAMILIES, seed=3)}
    twins = {"train": c.filler_twins(rewritten["train"], seed=4), "val": c.filler_twins(rewritten["val"], seed=5),
             "test": c.filler_twins(rewritten["test"], held_out=True, seed=6)}
    return {"appended": appended, "rewritten": rewritten, "twins": twins}


def pool_complexity_texts(pool: Path, flask: list[dict[str, Any]]) -> list[str]:
    """Unlabelled instructions for pseudo-labels: the texts a complexity scorer reads (``curate``'s
    ``input_texts``: instruction and input), for every row of the pool ``pool`` except FLASK's (its source, or
    an instruction FLASK holds): no FLASK val or test instruction may reach a student through a teacher's score.
    Runs where curate is installed; the GPU machine reads the file :func:`main` writes."""
    from curate.scorers.features import input_texts

    opener = gzip.open if str(pool).endswith(".gz") else open
    with opener(pool, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    held = {r["instruction"].strip() for r in flask}
    rows = [r for r in rows if not str(r.get("source", "")).startswith("flask")
            and str(r.get("instruction", "")).strip() not in held]
    return input_texts(rows, ["instruction"])["instruction"]


def read_pool_texts(path: Path) -> list[str]:
    """The pool texts :func:`main` wrote."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return json.load(f)["texts"]


def main() -> None:
    """``python evals/scorer_label_data.py pool-texts POOL OUT.json.gz [--data DIR]``: :func:`pool_complexity_texts`."""
    import argparse

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("command", choices=["pool-texts"])
    ap.add_argument("pool", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    texts = pool_complexity_texts(args.pool, flask_levels(args.data))
    with gzip.open(args.out, "wt", encoding="utf-8") as f:
        json.dump({"texts": texts}, f)
    print(f"{len(texts)} pool instructions -> {args.out}")


if __name__ == "__main__":
    main()
