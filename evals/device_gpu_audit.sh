#!/usr/bin/env bash
# GPU audit of curate's CUDA paths, as a user runs them (CLI), on a small pool; the same commands run on the CPU for
# the comparison. Usage: POOL=pool16.jsonl bash evals/device_gpu_audit.sh DEVICE DATA_DIR OUT_DIR [MINILM_DIR]
#   DATA_DIR: $POOL (pool16.jsonl: pool_30k rows 1-16), target8.jsonl (rows 2001-2008, LESS's target), aj120.jsonl
#   (Auto-J's first 120 rows with gpt4_score); MINILM_DIR: the MiniLM folder for --kind cross-encoder (default: packaged).
# Each step's wall time goes to OUT_DIR/times.tsv, its output to OUT_DIR/log.txt, the columns to OUT_DIR/*.jsonl.
# On the lent GPU machine: evals/device_smollm2_setup.sh first (model and wheels), then this with DEVICE=cuda.
set -u
DEV=$1 DATA=$2 OUT=$3 MINI=${4:-}
mkdir -p "$OUT"
W=$OUT/ws_pool A=$OUT/ws_aj
C="python3 -m curate"
step() {  # step NAME CMD...: time it, keep going on failure (the audit wants every result)
  local name=$1; shift
  local t0; t0=$(date +%s%N)
  echo "### $name: $*" >>"$OUT/log.txt"
  "$@" >>"$OUT/log.txt" 2>&1; local rc=$?
  local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '%s\t%s\t%d.%03d\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) | tee -a "$OUT/times.tsv"
}
BASE=()
[ -n "$MINI" ] && BASE=(--base "$MINI")
step load_pool $C load "$DATA/${POOL:-pool16.jsonl}" -w "$W"
step perplexity $C signal "$W" --kind perplexity --device "$DEV"
step ifd $C signal "$W" --kind ifd --device "$DEV"
step ifd_auto $C signal "$W" --kind ifd --device "$DEV" --dtype auto --column ifd_auto
step ref_select $C select "$W" --method random --budget 16 --name ref
step learnability $C signal "$W" --kind learnability --reference ref --device "$DEV"
step train_run $C train run "$W" --device "$DEV" --epochs 2 --batch-size 8
step less $C select "$W" --method less --target "$DATA/target8.jsonl" --name less --budget 8 --param device="\"$DEV\""
step export_pool $C export "$W" --out "$OUT/pool_cols.jsonl" --column perplexity --column ifd --column ifd_auto \
  --column learnability --column confidence --column variability --column el2n --column grand --column less
step load_aj $C load "$DATA/aj120.jsonl" -w "$A" --mapping '{"instruction": "query", "output": "response"}'
step ce_train $C train-scorer "$A" --target gpt4_score --kind cross-encoder "${BASE[@]}" --device "$DEV" --epochs 1 \
  --out "$OUT/ce" --name ce
step ce_score $C score "$A" --scorer "$OUT/ce" --column ce_scored
step lm_train $C train-scorer "$A" --target gpt4_score --kind small-lm --device "$DEV" --epochs 1 --out "$OUT/lm" --name lm
step lm_score $C score "$A" --scorer "$OUT/lm" --column lm_scored
step export_aj $C export "$A" --out "$OUT/aj_cols.jsonl" --column ce_scored --column lm_scored
