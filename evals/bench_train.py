"""How much do per-row records add to a training step? (issue 15: at most 20%.)

Fine-tunes the packaged SmolLM2-135M-Instruct (or ``--model``) with the harness's defaults (LoRA) on pool_30k
rows, one epoch per run, alternating runs without records and with them (same rows, same seed, so the same
batches), ``--repeats`` pairs; step time = the epoch's training-loop seconds / steps (model loading and
checkpoint writing excluded). The records' own time inside the loop (``record_seconds``, synchronised on CUDA)
is reported too: it is the overhead measured directly, free of run-to-run noise on a shared machine.

Last line: ``RESULT train_step_s_plain=<s> train_step_s_records=<s> overhead_pct=<p> record_share_pct=<p>
target_pct=20 device=<d>``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.rows import turns  # noqa: E402
from curate.storage.step import RowInput  # noqa: E402
from curate.train.harness import TrainConfig, finetune  # noqa: E402

POOL = Path(__file__).resolve().parents[2] / "shared" / "data" / "pool_30k.jsonl"


def pool_rows(path: Path, n: int, seed: int) -> list[RowInput]:
    if not path.exists():
        sys.exit(f"{path} not found: pass --pool (pool_30k.jsonl of ../shared/data)")
    recs = [json.loads(line) for line in open(path, encoding="utf-8")]
    pick = np.random.default_rng(seed).choice(len(recs), n, replace=False)
    rows = []
    for i in sorted(pick.tolist()):
        r = recs[i]
        conv = [{"role": "user", "content": r["instruction"] + (f"\n\n{r['input']}" if r.get("input") else "")},
                {"role": "assistant", "content": r["output"]}]
        rows.append(RowInput(r["uid"], conv, turns(conv)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=Path, default=POOL)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--lora-rank", type=int, default=TrainConfig().lora_rank)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default=None)
    args = ap.parse_args()
    from curate.signals.engine import default_model_dir

    model = args.model or default_model_dir()
    rows = pool_rows(args.pool, args.rows, 0)
    steps: dict[bool, list[float]] = {False: [], True: []}
    shares: list[float] = []
    device = None
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for record in (False, True):
                cfg = TrainConfig(epochs=1, batch_size=args.batch_size, max_length=args.max_length,
                                  lora_rank=args.lora_rank, record=record)
                run = finetune(model, rows, Path(tmp) / f"{rep}-{record}", cfg, device=args.device)
                s = run.info["epoch_stats"][0]
                device = run.info["device"]
                steps[record].append(s["seconds"] / s["steps"])
                if record:
                    shares.append(s["record_seconds"] / (s["seconds"] - s["record_seconds"]))
                print(f"repeat {rep} records={record}: {s['steps']} steps, {s['seconds']:.2f} s loop, "
                      f"{s['record_seconds']:.2f} s records, loss {s['mean_loss']:.4f}", flush=True)
    plain, rec = float(np.median(steps[False])), float(np.median(steps[True]))
    share = float(np.median(shares))
    print(f"rows {args.rows}, batch {args.batch_size}, max_length {args.max_length}, lora_rank {args.lora_rank}, "
          f"model {model}")
    print(f"RESULT train_step_s_plain={plain:.4f} train_step_s_records={rec:.4f} "
          f"overhead_pct={100 * (rec / plain - 1):.1f} record_share_pct={100 * share:.1f} target_pct=20 device={device}")


if __name__ == "__main__":
    main()
