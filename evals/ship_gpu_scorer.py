"""Turn a GPU training output (evals/train_scorers_gpu.py / train_smallm_gpu.py) into a shipped scorer folder:
``scorer.json`` (kind, config, the judge it imitates, the held-out figures) + ``adapter.safetensors``.

    python3 evals/ship_gpu_scorer.py OUT/complexity_ce.safetensors OUT/issue13_gpu_metrics.json complexity_ce \\
        --name complexity --judge complexity --dest curate/scorers/weights/complexity

The metrics key (third argument) names the run in the metrics file; its ``train`` and ``test`` parts are stored.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from safetensors.numpy import load_file

from curate.scorers.finetuned import CrossEncoderScorer
from curate.scorers.smalllm import SmallLMScorer

LABEL_SETS = {"quality": "MT-bench + Auto-J GPT-4 ratings 1-10 + AlpacaEval GPT-4 preferences",
              "complexity": "FLASK difficulty 1-5 + synthetic constraint chains"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weights", type=Path)
    ap.add_argument("metrics", type=Path)
    ap.add_argument("key", help="the run's key in the metrics file (quality_ce, complexity_ce, quality_lm, ...)")
    ap.add_argument("--name", required=True, help="the scorer's name: the column it writes")
    ap.add_argument("--judge", choices=sorted(LABEL_SETS), required=True)
    ap.add_argument("--dest", type=Path, required=True)
    ap.add_argument("--kind", choices=("cross-encoder", "small-lm"), default="cross-encoder")
    args = ap.parse_args()
    doc = json.loads(args.metrics.read_text())
    run = doc[args.key]
    tensors = load_file(str(args.weights))
    meta = {k: json.loads(v) for k, v in (load_safetensors_metadata(args.weights) or {}).items()}
    if "max_length" not in meta:  # the reader's input length is part of the model: never guess it
        raise SystemExit(f"{args.weights}: no max_length in its safetensors metadata (evals/train_scorers_gpu.py "
                         "writes it); not a GPU training output")
    cls = SmallLMScorer if args.kind == "small-lm" else CrossEncoderScorer
    sc = cls(reads=["instruction", "response"] if args.judge == "quality" else ["instruction"], name=args.name,
             imitates={"judge": args.judge, "model": "gpt-4", "label_set": LABEL_SETS[args.judge]},
             max_length=int(meta["max_length"]))
    sc.weights = dict(tensors)
    sc.metadata = {"trained_on_splits": ["train"], "early_stopped_on": "val groups", "test_groups_held_out": True,
                   "recipe": meta.get("recipe", "appended") if args.judge == "complexity" else "mixed pointwise + pairwise"}
    rank_weight = float(doc.get("args", {}).get("complexity_point_rank_weight") or 0)
    if args.judge == "complexity" and rank_weight:
        sc.metadata["point_rank_weight"] = rank_weight
    sc.metrics = {"issue13_test": run["test"], "train": {k: v for k, v in run["train"].items() if k != "history"},
                  "trained_by": f"evals/{'train_smallm_gpu' if args.kind == 'small-lm' else 'train_scorers_gpu'}.py "
                                f"(H200, bf16 autocast per step), args {json.dumps(doc.get('args', {}))}"}
    for key, val in doc.items():
        if key.startswith(f"{args.key}_without_"):
            sc.metrics["zero_shot_" + key[len(args.key) + 1:]] = val["zero_shot_all_rows"]
    print(sc.save(args.dest))


def load_safetensors_metadata(path: Path) -> dict[str, str] | None:
    from safetensors import safe_open

    with safe_open(str(path), "np") as fh:
        return fh.metadata()


if __name__ == "__main__":
    main()
