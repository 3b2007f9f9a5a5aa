"""Train the small-LM quality reader (SmolLM2-135M + LoRA + score head, ``curate.scorers.finetuned.SmallLMScorer``)
at real size on a GPU, with the same data, split, losses and reports as evals/train_scorers_gpu.py.

    PYTHONPATH=. python3 evals/train_smallm_gpu.py --data .dev13/data --model /tmp/ch --out $OUT

``--model``: the SmolLM2-135M-Instruct Hugging Face folder (``curate.llm.local.prepare_model()`` makes it).
Writes OUT/quality_lm.safetensors (LoRA fp16 + head + calibration) and OUT/issue13_smallm_metrics.json; to ship,
save it as a ``small-lm`` scorer folder (scorer.json kind "small-lm" + adapter.safetensors), as done for quality_ce.
Not run in issue 13 (GPU allowance spent on the MiniLM cross-encoder).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_scorers_gpu as G  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=G.D.DATA)
    ap.add_argument("--model", default="/tmp/ch")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--epochs", type=float, default=1.5)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--tiny", action="store_true")
    args = ap.parse_args()
    args.base, args.tok = args.model, args.model
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pairs, singles = G.quality_data(args.data, args.tiny)
    net, tok, info = G.train_quality(args, pairs, singles, {"alpaca_eval", "mtbench", "autoj"}, args.device, print)
    rep, cal = G.quality_reports(net, tok, pairs, singles, args.device, {"alpaca_eval", "mtbench", "autoj"})
    G.save_net(net, cal, args.out / "quality_lm.safetensors", {"max_length": G.QUALITY_MAX_LEN, "base": "SmolLM2-135M"})
    (args.out / "issue13_smallm_metrics.json").write_text(json.dumps({"train": info, "test": rep,
                                                                      "seconds": time.time() - t0}, default=float, indent=1))
    print(json.dumps(rep, default=float)[:1500])


if __name__ == "__main__":
    main()
