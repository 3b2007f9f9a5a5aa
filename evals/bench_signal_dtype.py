"""Benchmark: how far a signal moves when the engine runs in bfloat16 instead of float32 (why float32 is
the default, ``SIGNAL.dtype``), and what float32 costs in time.

    python evals/bench_signal_dtype.py [--rows 50] [--model DIR]

The bundled sample's rows (``curate/data/sample.jsonl``) are scored by the signal engine as IFD and
perplexity per turn: in float32 and in bfloat16 (length-bucketed batches, as a run scores them), and as the
reference, float64 weights with each request in its own forward pass. Reported per dtype: the median and
largest relative error of IFD and perplexity against the reference, and batch dependence (the largest
relative change of a turn's IFD between its pool batch and its own pass). Timed: the batched pass per
dtype (model load excluded). Runs offline on the packaged SmolLM2-135M-Instruct.
Last line: ``RESULT ifd_max_rel_err_bf16=... ifd_max_rel_err_fp32=... err_ratio=... fp32_over_bf16_time=...``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from curate.pools import read  # noqa: E402
from curate.rows import as_turns  # noqa: E402
from curate.signals.engine import Engine  # noqa: E402


def requests_of(engine: Engine, rows: list[dict]) -> tuple[list, list]:
    """The (conditioned, alone) request of every answered turn."""
    cond, alone = [], []
    for row in rows:
        for plan in engine.prompter.plan(as_turns(row)):
            if plan.failure is None:
                cond.append(plan.conditioned)
                alone.append(plan.alone)
    return cond, alone


def signals(engine: Engine, cond: list, alone: list, cache: Path, one_by_one: bool = False
            ) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-turn IFD and perplexity, and the seconds the forward passes took."""
    started = time.perf_counter()
    if one_by_one:
        lp = [engine._forward([r])[0] for r in cond + alone]
    else:
        lp = engine.logprobs(cond + alone, cache)
    seconds = time.perf_counter() - started
    n = len(cond)
    nll_c = np.array([-np.mean(v, dtype=np.float64) for v in lp[:n]])
    nll_a = np.array([-np.mean(v, dtype=np.float64) for v in lp[n:]])
    return nll_c / nll_a, np.exp(nll_c), seconds


def rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b) / np.abs(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=50)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    import torch

    rows = read("sample").rows[: args.rows]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        ref_engine = Engine(args.model, dtype="float32")
        ref_engine._model = ref_engine.model.to(torch.float64)
        cond, alone = requests_of(ref_engine, rows)
        ref_ifd, ref_ppl, _ = signals(ref_engine, cond, alone, Path(tmp) / "ref", one_by_one=True)
        for dtype in ("float32", "bfloat16"):
            engine = Engine(args.model, dtype=dtype)
            _ = engine.model  # load outside the timing
            ifd, ppl, seconds = signals(engine, cond, alone, Path(tmp) / dtype)
            alone_ifd, _, _ = signals(engine, cond, alone, Path(tmp) / dtype, one_by_one=True)
            results[dtype] = {"ifd": rel(ifd, ref_ifd), "ppl": rel(ppl, ref_ppl),
                              "batch": rel(ifd, alone_ifd), "seconds": seconds}
    print(f"{len(cond)} turns of {len(rows)} rows; reference: float64, one request per pass")
    print(f"{'dtype':<10}{'IFD med':>10}{'IFD max':>10}{'PPL med':>10}{'PPL max':>10}{'batch max':>11}{'s':>8}")
    for dtype, r in results.items():
        print(f"{dtype:<10}{np.median(r['ifd']):>10.2e}{r['ifd'].max():>10.2e}{np.median(r['ppl']):>10.2e}"
              f"{r['ppl'].max():>10.2e}{r['batch'].max():>11.2e}{r['seconds']:>8.2f}")
    bf, fp = results["bfloat16"], results["float32"]
    print(f"RESULT ifd_max_rel_err_bf16={bf['ifd'].max():.2e} ifd_max_rel_err_fp32={fp['ifd'].max():.2e} "
          f"err_ratio={bf['ifd'].max() / max(fp['ifd'].max(), 1e-12):.0f} "
          f"ppl_max_rel_err_bf16={bf['ppl'].max():.2e} ppl_max_rel_err_fp32={fp['ppl'].max():.2e} "
          f"batch_dependence_bf16={bf['batch'].max():.2e} batch_dependence_fp32={fp['batch'].max():.2e} "
          f"fp32_over_bf16_time={fp['seconds'] / bf['seconds']:.2f}")


if __name__ == "__main__":
    main()
