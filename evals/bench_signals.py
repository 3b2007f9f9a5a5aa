"""Benchmark: IFD rows/s of the signal engine on real pool rows, on this machine.

    python evals/bench_signals.py [--data ../shared/data] [--rows 64] [--dtype both|auto|float32|bfloat16]
                                  [--device cpu|cuda] [--batch-tokens N] [--model DIR]

Takes a seeded uniform sample of ``pool_30k.jsonl`` (Alpaca-style rows: instruction + input -> output), runs
the ``IFD`` step (two requests per row: the response given the chat-templated instruction, and alone)
with SmolLM2-135M-Instruct (or ``--model``) from an empty cache, then again from the filled cache (the
re-run figure). With ``--dtype both`` the float32 and bfloat16 engines are timed alternately (``--repeats``
rounds) on the same rows. The model load is not timed. ``--vllm`` also times the alternative engine: the same
requests (exact token ids) as ``prompt_logprobs`` completions to a local vLLM server (SmolLM2, bf16,
16 in flight), and compares its log-probabilities with the transformers engine's. The CPU is shared with other jobs: the load
average is printed beside the figures.
Last line: ``RESULT ifd_rows_per_s=<n> dtype=<d> device=<d> tokens_per_s=<n> rerun_rows_per_s=<n>`` (the best dtype),
then each dtype's rows/s and, with ``--dtype both``, the bfloat16 / float32 speed ratio.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from eval_signals import DATA, pool_rows, row_inputs  # noqa: E402

from curate.signals import IFD  # noqa: E402
from curate.storage.step import StepContext  # noqa: E402


class _Quiet:
    def update(self, n: int = 1) -> None:
        return None


def time_ifd(step: IFD, rows, cache_dir: Path) -> tuple[float, int, list[float]]:
    """Seconds for one IFD run of ``rows``, the tokens it fed the model, and the row IFDs."""
    before = step.engine.stats["tokens"]
    started = time.perf_counter()
    out = step.run(rows, StepContext(_Quiet(), cache_dir, cache_dir))
    seconds = time.perf_counter() - started
    assert len(out.values) == len(rows)
    ifd = [v[0] if v and v[0] is not None else float("nan") for v in out.values]
    return seconds, step.engine.stats["tokens"] - before, ifd


def vllm_figures(rows, step: IFD) -> None:
    """rows/s of IFD's requests through vLLM's prompt_logprobs, and agreement with ``step``'s engine."""
    import asyncio

    from openai import AsyncOpenAI

    from curate.llm.local import LocalServer

    engine = step.engine
    reqs = [getattr(p, w) for r in rows for p in engine.prompter.plan(list(r.turns)) if p.failure is None
            for w in ("conditioned", "alone")]
    with tempfile.TemporaryDirectory() as tmp:
        ours = engine.logprobs(reqs, Path(tmp))

    async def score(client, sem, req):
        async with sem:
            ids = list(req.context) + list(req.target)
            resp = await client.completions.create(model=srv.model, prompt=ids, max_tokens=1, temperature=0.0,
                                                   extra_body={"prompt_logprobs": 0})
            plp = resp.choices[0].model_extra["prompt_logprobs"]
            start = len(req.context)
            return np.array([plp[start + k][str(t)]["logprob"] for k, t in enumerate(req.target)], np.float32)

    async def run_all(todo):
        client = AsyncOpenAI(base_url=srv.base_url, api_key="local", timeout=600)
        sem = asyncio.Semaphore(16)
        return await asyncio.gather(*(score(client, sem, r) for r in todo))

    with LocalServer() as srv:
        asyncio.run(run_all(reqs[-2:]))  # warm-up: two requests
        started = time.perf_counter()
        theirs = asyncio.run(run_all(reqs))
        seconds = time.perf_counter() - started
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))
    ifd_ours = [-(ours[i].mean()) / -(ours[i + 1].mean()) for i in range(0, len(reqs), 2)]
    ifd_theirs = [-(theirs[i].mean()) / -(theirs[i + 1].mean()) for i in range(0, len(reqs), 2)]
    print(f"vLLM prompt_logprobs ({len(reqs)} requests, 16 in flight): {len(rows) / seconds:.2f} rows/s "
          f"({seconds:.1f} s); max |logprob diff| vs transformers {engine.dtype}: {diff:.3f}; "
          f"max |IFD diff| {max(abs(a - b) for a, b in zip(ifd_ours, ifd_theirs, strict=True)):.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--dtype", default="both", choices=["both", "auto", "float32", "bfloat16"])
    ap.add_argument("--device", default=None)
    ap.add_argument("--model", default=None)
    ap.add_argument("--batch-tokens", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vllm", action="store_true", help="also time vLLM prompt_logprobs on a local server")
    args = ap.parse_args()
    pool = args.data / "pool_30k.jsonl"
    if not pool.exists():
        sys.exit(f"{pool} not found: this benchmark reads the shared data folder (pass --data DIR)")
    import torch

    records = pool_rows(pool, args.rows, args.seed)
    rows = row_inputs(records)
    dtypes = ["float32", "bfloat16"] if args.dtype == "both" else [args.dtype]
    opts = {"device": args.device} | ({"batch_tokens": args.batch_tokens} if args.batch_tokens else {})
    steps = {d: IFD(args.model, dtype=d, **opts) for d in dtypes}
    for step in steps.values():
        _ = step.engine.model  # load outside the timing
    print(f"{len(rows)} rows of {pool.name} (seed {args.seed}); torch threads {torch.get_num_threads()}; "
          f"load average before {os.getloadavg()[0]:.1f}")
    timings: dict[str, list[float]] = {d: [] for d in dtypes}
    tokens: dict[str, int] = {}
    rerun: dict[str, float] = {}
    values: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for d, step in steps.items():
            with tempfile.TemporaryDirectory() as tmp:
                seconds, fed, values[d] = time_ifd(step, rows, Path(tmp))
                timings[d].append(seconds)
                tokens[d] = fed
                rerun[d], _, _ = time_ifd(step, rows, Path(tmp))
    for d, step in steps.items():
        s = statistics.median(timings[d])
        print(f"{d:9} {step.engine.device}: {len(rows) / s:7.2f} rows/s, {tokens[d] / s:8.0f} tokens/s "
              f"(median of {len(timings[d])}: {s:.1f} s); cached re-run {len(rows) / rerun[d]:.0f} rows/s; "
              f"load average now {os.getloadavg()[0]:.1f}")
    if len(values) == 2:
        from scipy.stats import spearmanr

        a, b = np.array(values["float32"]), np.array(values["bfloat16"])
        print(f"IFD bfloat16 vs float32: max |diff| {np.nanmax(np.abs(a - b)):.4f}, "
              f"Spearman {spearmanr(a, b, nan_policy='omit').statistic:.4f}")
    if args.vllm:
        vllm_figures(rows, steps[dtypes[-1]])
    best = max(dtypes, key=lambda d: len(rows) / statistics.median(timings[d]))
    s = statistics.median(timings[best])
    each = " ".join(f"{d}_rows_per_s={len(rows) / statistics.median(timings[d]):.2f}" for d in dtypes)
    ratio = (f" bfloat16_vs_float32={statistics.median(timings['float32']) / statistics.median(timings['bfloat16']):.2f}"
             if len(dtypes) == 2 else "")
    print(f"RESULT ifd_rows_per_s={len(rows) / s:.2f} dtype={best} device={steps[best].engine.device} "
          f"tokens_per_s={tokens[best] / s:.0f} rerun_rows_per_s={len(rows) / rerun[best]:.0f} {each}{ratio}")


if __name__ == "__main__":
    main()
