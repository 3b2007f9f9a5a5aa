"""The distillation workflow with the fine-tuned kinds: ~1,000 GPT-4 labels of a pool train the reader that
``curate train-scorer WS --target gpt4 --kind cross-encoder|small-lm`` fits, which then scores the rest of the pool.

    PYTHONPATH=. python evals/eval_distil_finetuned.py [--source mtbench|autoj] [--labels 1000] \
        [--kinds cross-encoder,small-lm,small-lm:digits] [--seeds 0] [--epochs 2] [--device cuda] [--lm-base DIR] [--ce-base DIR] \
        [--init-weights OUT/quality_ce_without_mtbench.safetensors]

The pool and its split are evals/eval_distil.py's (whole questions drawn until they hold ~``--labels`` answers;
``--seed`` there is a seed here). Each kind goes through :func:`curate.scorers.training.train_finetuned` exactly
as the CLI calls it (20% of the judged groups held out for its own report, the reader fine-tuned on the rest,
fresh LoRA adapters; ``small-lm:digits`` is ``--kind small-lm --head digits``; no shipped adapter as a start, since those saw MT-bench and Auto-J: ``--init-weights`` starts
from a reader trained with the pool's source left out, as ``train-scorer --init quality_ce`` starts on a new pool). Figures on the rest of the
pool beside response length; the ridge default on the same split is evals/eval_distil.py's (CPU).
``--lm-base``: the small-LM folder (default: SmolLM2 from ``curate.llm.local.prepare_model()``; on the GPU
machine ``source evals/device_smollm2_setup.sh`` makes it). Standard library + numpy + torch/transformers/peft
(the GPU machine runs this file). Last line: ``RESULT ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import scorer_label_data as D  # noqa: E402

from curate.scorers.features import to_turn  # noqa: E402
from curate.scorers.metrics import agreement, spearman_interval  # noqa: E402
from curate.scorers.training import train_finetuned  # noqa: E402
from curate.scorers.training_data import TrainingData  # noqa: E402


def training_data(train: list[dict], source: str) -> TrainingData:
    """The judged answers as `train-scorer --target gpt4 --group-by question` reads them."""
    return TrainingData(turns=[to_turn(r) for r in train], scores=[float(r["label"]) for r in train],
                        groups=[str(r["group"]) for r in train], reads=["instruction", "response"],
                        source=f"column gpt4 ({source})", imitates={"judge": "gpt-4 single", "model": "gpt-4"},
                        rows=len(train), numbers=[{} for _ in train])


def init_folder(weights: Path, ce_base: str | None, lm_base: str | None, kinds: str) -> Path:
    """A GPU training output saved as a scorer folder that ``train_finetuned(init=...)`` loads (its base recorded)."""
    import tempfile

    from safetensors import safe_open
    from safetensors.numpy import load_file

    from curate.scorers.finetuned import CrossEncoderScorer
    from curate.scorers.smalllm import SmallLMScorer

    if "," in kinds:
        raise SystemExit("--init-weights starts one kind: give --kinds cross-encoder or --kinds small-lm")
    with safe_open(str(weights), "np") as fh:
        meta = {k: json.loads(v) for k, v in (fh.metadata() or {}).items()}
    cls, base = (SmallLMScorer, lm_base) if kinds == "small-lm" else (CrossEncoderScorer, ce_base)
    sc = cls(reads=["instruction", "response"], name="init", max_length=int(meta["max_length"]), base=base)
    sc.weights = dict(load_file(str(weights)))
    return sc.save(Path(tempfile.mkdtemp()) / weights.stem)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--source", choices=("mtbench", "autoj"), default="mtbench")
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--kinds", default="cross-encoder,small-lm")
    ap.add_argument("--seeds", default="0", help="comma-separated split seeds (eval_distil.py's --seed)")
    ap.add_argument("--epochs", type=float, default=2.0, help="train-scorer's default")
    ap.add_argument("--device", default=None, help="cpu, cuda, cuda:N or auto (default: the scorer's, the CPU)")
    ap.add_argument("--lm-base", default=None, help="small-lm base folder (default: the packaged SmolLM2)")
    ap.add_argument("--ce-base", default=None, help="cross-encoder base folder (default: the packaged MiniLM)")
    ap.add_argument("--init-weights", type=Path, help="a GPU training output (evals/train_scorers_gpu.py --only loso: "
                    "quality_ce_without_SOURCE.safetensors): each fit starts from it, as train-scorer --init does")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    ap.add_argument("--save-predictions", type=Path, help="also save each fit's scores of the rest of the pool here "
                    "(SOURCE_KIND_seedN.npy; evals/ablate_distil_blend.py --reader-predictions reads them)")
    args = ap.parse_args()
    rows = D.single_scores(args.source, args.data)
    init = None
    if args.init_weights:
        init = str(init_folder(args.init_weights, args.ce_base, args.lm_base, args.kinds))
    out = []
    for seed in (int(s) for s in args.seeds.split(",")):
        judged = D.judged_groups(rows, args.labels, seed)
        train = [r for r in rows if r["group"] in judged]
        rest = [r for r in rows if r["group"] not in judged]
        if not rest:
            raise SystemExit(f"--labels {args.labels} judges all {len(rows)} {args.source} rows: nothing is left to "
                             f"score (eval_distil.py takes --labels 500 for autoj)")
        y = np.array([r["label"] for r in rest], dtype=np.float64)
        groups = [r["group"] for r in rest]
        length = np.log1p([len(r["response"]) for r in rest])
        base_fig = {**agreement(y, length), "ci": spearman_interval(y, length, groups)}
        print(f"seed {seed}: {len(train)} judged answers ({len(judged)} questions) -> {len(rest)} others; "
              f"response length spearman {base_fig['spearman']:.3f}", flush=True)
        for label in args.kinds.split(","):
            kind, _, head = label.partition(":")
            t0 = time.time()
            res = train_finetuned(training_data(train, args.source), "gpt4_scorer", holdout=0.2, seed=seed, kind=kind,
                                  epochs=args.epochs, init=init, head=head or None,
                                  base=None if init else args.lm_base if kind == "small-lm" else args.ce_base,
                                  device=args.device)
            fit_s = time.time() - t0
            t0 = time.time()
            pred = res.scorer.predict([to_turn(r) for r in rest])
            if args.save_predictions:
                args.save_predictions.mkdir(parents=True, exist_ok=True)
                np.save(args.save_predictions / f"{args.source}_{label.replace(':', '_')}_seed{seed}.npy",
                        np.asarray(pred, np.float64))
            rec = {"source": args.source, "seed": seed, "kind": label, "epochs": args.epochs, "labels": len(train),
                   "init": args.init_weights.name if args.init_weights else None,
                   "rest": len(rest), **agreement(y, pred), "ci": spearman_interval(y, pred, groups),
                   "own_holdout_spearman": res.evaluation.holdout.get("scorer", {}).get("spearman"),
                   "fit_s": round(fit_s, 1), "predict_rows_per_s": round(len(rest) / (time.time() - t0), 1),
                   "response_length_spearman": base_fig["spearman"]}
            out.append(rec)
            print(f"  {label:15s} spearman {rec['spearman']:.3f} (95% {rec['ci'][0]:.2f}..{rec['ci'][1]:.2f}) "
                  f"kendall {rec['kendall']:.3f} pairwise {rec['pairwise_accuracy']:.3f}; own held-out "
                  f"{rec['own_holdout_spearman']}; fit {fit_s:.0f} s, {rec['predict_rows_per_s']} rows/s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    for kind in args.kinds.split(","):
        sp = [r["spearman"] for r in out if r["kind"] == kind]
        print(f"RESULT source={args.source} kind={kind} distil_labels~{args.labels} seeds={len(sp)} "
              f"distil_spearman_mean={np.mean(sp):.3f} (min {min(sp):.3f}, max {max(sp):.3f}) "
              f"response_length_spearman_mean={np.mean([r['response_length_spearman'] for r in out if r['kind'] == kind]):.3f} "
              f"target=0.50")


if __name__ == "__main__":
    main()
