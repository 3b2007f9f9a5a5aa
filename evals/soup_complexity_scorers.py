"""Average cross-encoder complexity scorers trained from one base into one scorer (a "model soup"), at the cost
of one model at inference.

    python evals/soup_complexity_scorers.py SCORER SCORER [...] --dest DIR [--rank R] [--data ../shared/data]
    # the shipped default: four runs (seeds 0-3) of evals/train_scorers_gpu.py's mixed recipe with
    # --complexity-point-rank-weight 1, each made a scorer folder by evals/ship_gpu_scorer.py, then souped here
    # with --rank 24 into curate/scorers/weights/complexity

Each scorer's LoRA update of the base is B A (times alpha / r = 2 in curate). Stacking the k adapters' A along
the rank and their B / k beside each other gives one adapter of rank k r whose update is the mean of the k
updates: the mean of the fine-tuned encoders' weights, exactly. The linear head and the length covariate are
averaged too. ``--rank R`` keeps the adapter small whatever k is: each layer's mean update is cut to its
best rank-R approximation (truncated SVD), and the share of the update's norm that this drops is printed and
stored. The calibration map onto DEITA's 1-6 scale is fitted afresh on the FLASK train groups, as
evals/train_scorers_gpu.py fits each run's. Compare the result on val with evals/compare_complexity_scorers.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scorer_label_data as D  # noqa: E402

from curate.scorers import Scorer, readermap  # noqa: E402
from curate.scorers.finetuned import CrossEncoderScorer  # noqa: E402


def soup_tensors(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One adapter whose LoRA update, head and covariate weights are the means of ``parts``' (no calibration)."""
    k = len(parts)
    out = {}
    for name in parts[0]:
        if name.startswith("calibration."):
            continue
        arrays = [p[name] for p in parts]
        if "lora_A" in name:  # (r, in) each: stacked along the rank
            out[name] = np.concatenate(arrays, axis=0)
        elif "lora_B" in name:  # (out, r) each: side by side, each weighted 1/k
            out[name] = np.concatenate([a.astype(np.float32) / k for a in arrays], axis=1).astype(arrays[0].dtype)
        else:
            out[name] = np.mean([a.astype(np.float64) for a in arrays], axis=0).astype(arrays[0].dtype)
    return out


def truncate_rank(tensors: dict[str, np.ndarray], rank: int) -> tuple[dict[str, np.ndarray], float]:
    """``tensors`` with each LoRA pair's update B A replaced by its best rank-``rank`` approximation, split as
    B' = U sqrt(S), A' = sqrt(S) V^T; also the largest relative Frobenius error over the layers."""
    out, worst = dict(tensors), 0.0
    for name in tensors:
        if "lora_A" not in name:
            continue
        a, b = tensors[name].astype(np.float64), tensors[name.replace("lora_A", "lora_B")].astype(np.float64)
        if a.shape[0] <= rank:
            continue
        u, s, vt = np.linalg.svd(b @ a, full_matrices=False)
        root = np.sqrt(s[:rank])
        out[name] = (root[:, None] * vt[:rank]).astype(tensors[name].dtype)
        out[name.replace("lora_A", "lora_B")] = (u[:, :rank] * root).astype(tensors[name].dtype)
        if s[0] > 0:  # a layer whose update stayed zero drops nothing
            worst = max(worst, float(np.sqrt((s[rank:] ** 2).sum() / (s ** 2).sum())))
    return out, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scorers", nargs="+", type=Path, help="cross-encoder complexity scorer folders, one base")
    ap.add_argument("--dest", type=Path, required=True)
    ap.add_argument("--rank", type=int, help="cut the souped adapter to this LoRA rank (default: k times the parts' rank)")
    ap.add_argument("--data", type=Path, default=D.DATA)
    args = ap.parse_args()
    parts = [Scorer.load(p) for p in args.scorers]
    first = parts[0]
    for p, path in zip(parts, args.scorers, strict=True):
        if not isinstance(p, CrossEncoderScorer) or (p.base, p.reads, p.max_length, p.lora_r) != \
                (first.base, first.reads, first.max_length, first.lora_r):
            raise SystemExit(f"{path}: not a cross-encoder of the same base, inputs, max_length and rank as "
                             f"{args.scorers[0]}; only such scorers average")
    if args.rank is not None and args.rank < 1:
        raise SystemExit(f"--rank {args.rank}: a LoRA rank is at least 1")
    rank = min(args.rank or first.lora_r * len(parts), first.lora_r * len(parts))
    soup = CrossEncoderScorer(reads=first.reads, name=first.name, imitates=first.imitates, max_length=first.max_length,
                              lora_r=rank, base=first.base, output_range=first.output_range)
    soup.weights, dropped = truncate_rank(soup_tensors([p.weights for p in parts]), rank)
    train = [r for r in D.flask_levels(args.data) if r["split"] == "train"]
    raw = soup.predict_raw([{"instruction": r["instruction"]} for r in train])
    soup.weights["calibration.x"], soup.weights["calibration.y"] = readermap.quantile_map(raw, D.flask_to6(train))
    soup.metadata = {**first.metadata, "soup_of": [p.metrics.get("train", {}) for p in parts]}
    soup.metrics = {"soup_of": [{"trained_by": p.metrics.get("trained_by"), "issue13_test": p.metrics.get("issue13_test")}
                                for p in parts],
                    "calibrated_on": "FLASK train groups (raw soup scores -> levels on DEITA's 1-6 scale)"}
    if rank < first.lora_r * len(parts):
        soup.metrics["rank_cut"] = {"rank": rank, "largest_relative_update_error": round(dropped, 6)}
        print(f"cut to rank {rank}: at most {dropped:.2%} of a layer's update (Frobenius) dropped")
    print(soup.save(args.dest))


if __name__ == "__main__":
    main()
