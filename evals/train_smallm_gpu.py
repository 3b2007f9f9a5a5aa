"""Train the small-LM readers (SmolLM2-135M + LoRA + score head, ``curate.scorers.smalllm.SmallLMScorer``) at
real size on a GPU, with the same data, splits, losses and reports as evals/train_scorers_gpu.py (its ``cli``).

    PYTHONPATH=. python3 evals/train_smallm_gpu.py --data DATA --base /tmp/ch/models/smollm2-135m-instruct-hf \
        --out $OUT [--only quality|complexity] [--complexity-chains rewritten] [--loso --loso-sources autoj,mtbench]

``--base``: the SmolLM2-135M-Instruct Hugging Face folder (``curate.llm.local.prepare_model()`` makes it; on the
GPU machine ``source evals/device_smollm2_setup.sh`` does). Writes OUT/quality_lm.safetensors,
OUT/complexity_lm[_rewritten].safetensors (LoRA fp16 + head + calibration) and OUT/issue13_gpu_lm_metrics.json;
to ship one, save it as a ``small-lm`` scorer folder (scorer.json kind "small-lm" + adapter.safetensors).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_scorers_gpu as G  # noqa: E402

if __name__ == "__main__":
    G.cli("lm", __doc__, epochs=1.0, lr=2e-4)
