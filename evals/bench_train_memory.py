"""Peak memory and time of one CPU training epoch against ``step_tokens`` (padded tokens per forward pass).

SmolLM2-135M-Instruct, LoRA r16, batch 16, max_length 512, on ``--rows`` real rows of pool_30k (seeded draw);
each setting in its own process (peak RSS of that process), the same rows and settings, so the runs differ
only in how each batch is cut into passes (the weights they reach are the same; tests/test_train.py).
The whole batch at once (16 x 512 tokens) went past this 24 GiB machine's memory on pool_30k rows
(evals/run_mods.py, before step_tokens existed), so it is not among the settings.

    python evals/bench_train_memory.py [--rows 64] [--steps 512,1024,2048,4096]   (log: evals/results/)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from curate.defaults import TRAIN  # noqa: E402

DATA = Path(os.environ.get("CURATE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def child(rows: int, step_tokens: int, out: str) -> None:
    from curate.rows import as_turns
    from curate.signals.engine import default_model_dir
    from curate.storage.step import RowInput
    from curate.train import TrainConfig, finetune

    lines = random.Random(0).sample((DATA / "pool_30k.jsonl").read_text().splitlines(), rows)
    inputs = []
    for i, line in enumerate(lines):
        r = json.loads(line)
        conv = [{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")},
                {"role": "assistant", "content": r["output"]}]
        inputs.append(RowInput(f"r{i}", conv, as_turns({"conversation": conv})))
    started = time.perf_counter()
    run = finetune(default_model_dir(), inputs, Path(out), TrainConfig(epochs=1, batch_size=16, max_length=512),
                   device="cpu", step_tokens=step_tokens)
    print(json.dumps({"seconds": round(time.perf_counter() - started, 1),
                      "mean_loss": run.info["epoch_stats"][0]["mean_loss"],
                      "peak_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--steps", default="512,1024,2048,4096")
    ap.add_argument("--child", nargs=2)
    args = ap.parse_args()
    if args.child:
        return child(args.rows, int(args.child[0]), args.child[1])
    results = {}
    for step in [int(s) for s in args.steps.split(",")]:
        out = f"/tmp/bench_train_memory_{step}"
        subprocess.run(["rm", "-rf", out], check=True)
        got = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--child", str(step), out],
                             capture_output=True, text=True)
        if got.returncode != 0:
            print(f"step_tokens {step}: failed ({got.returncode})\n{got.stderr[-1500:]}")
            continue
        info = json.loads(got.stdout.strip().splitlines()[-1])
        results[step] = info
        print(f"step_tokens {step}: peak {results[step]['peak_gib']} GiB, {info['seconds']} s, "
              f"mean loss {info['mean_loss']:.4f}", flush=True)
    ref = results.get(TRAIN.cpu_step_tokens)
    print(f"RESULT rows={args.rows} batch=16 max_length=512 " + " ".join(
        f"step{k}_peak_gib={v['peak_gib']} step{k}_s={v['seconds']}" for k, v in results.items())
        + (f" time_ratio_vs_default_{TRAIN.cpu_step_tokens}="
           f"{','.join(str(round(v['seconds'] / ref['seconds'], 2)) for v in results.values())}"
           if ref else ""))


if __name__ == "__main__":
    main()
