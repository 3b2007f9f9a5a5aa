"""Benchmark: the embedded local judge (SmolLM2 on vLLM) served in bfloat16 against float32 on this CPU.

``LocalServer(dtype="auto")`` serves bfloat16 where the hardware multiplies it natively and float32 elsewhere
(:func:`curate.hardware.resolve_dtype`). This measures why: the same judge calls through a server started in
each dtype, one after the other, on the answered turns of the bundled sample (prompt-heavy: the ``quality`` and
``complexity`` digit judges send a few hundred tokens and read one), plus one short generation (decode-heavy). It
also says how far the two dtypes' scores are apart.

    python evals/bench_local_dtype.py [--rows 100]

Last line: RESULT auto=<dtype> judge_speedup_fp32=<x> decode_speedup_fp32=<x> max_score_diff=<d>
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from curate import pools  # noqa: E402
from curate.cli import sample_path  # noqa: E402
from curate.hardware import cpu_has_bf16, resolve_dtype  # noqa: E402
from curate.llm.judges import run_prompt  # noqa: E402
from curate.llm.local import LocalServer  # noqa: E402
from curate.rows import turns  # noqa: E402

DECODE_TOKENS = 96


def measure(dtype: str, rows: list[dict], tmp: Path, label: str | None = None) -> dict:
    """Judge ``rows`` with both digit judges and time one generation, on a fresh server in ``dtype`` (started with
    this process's environment; ``label`` names its log and caches, default the dtype)."""
    out: dict = {"dtype": dtype}
    label = label or dtype
    started = time.perf_counter()
    with LocalServer(dtype=dtype, log_path=tmp / f"vllm-{label}.log") as srv:
        out["start_s"] = time.perf_counter() - started
        backend = srv.backend()
        run_prompt("complexity", rows[:2], backend, tmp / f"warm-{label}.sqlite", progress=False)  # first-call costs
        started = time.perf_counter()
        results = {p: run_prompt(p, rows, backend, tmp / f"{label}.sqlite", progress=False)
                   for p in ("quality", "complexity")}
        out["judge_s"] = time.perf_counter() - started
        out["scores"] = {p: [r.parsed if r.ok else None for r in rs] for p, rs in results.items()}
        out["prompt_tokens"] = sum(r.usage["prompt_tokens"] for rs in results.values() for r in rs)
        import openai

        client = openai.OpenAI(base_url=srv.base_url, api_key="local")
        started = time.perf_counter()
        reply = client.chat.completions.create(model=srv.model, max_tokens=DECODE_TOKENS, temperature=0.0,
                                               messages=[{"role": "user", "content": "Tell a long story about a lighthouse."}],
                                               extra_body={"ignore_eos": True})
        out["decode_s"] = time.perf_counter() - started
        out["decode_tokens"] = reply.usage.completion_tokens
    return out


def sample_turns(limit: int) -> list[dict]:
    """Every turn with a reply, as curate reads the bundled sample (all its formats, instruction + input as one
    text), at most ``limit``."""
    return [{"instruction": t.instruction, "response": t.response}
            for row in pools.read(sample_path()).rows for t in turns(row["conversation"]) if t.response][:limit]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100, help="at most this many of the bundled sample's answered turns")
    args = ap.parse_args()
    rows = sample_turns(args.rows)
    print(f"CPU: native bf16 {cpu_has_bf16()}, {os.cpu_count()} cores; dtype auto -> {resolve_dtype('auto', 'cpu')}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = {d: measure(d, rows, Path(tmp)) for d in ("bfloat16", "float32")}
    for d, m in runs.items():
        calls = 2 * len(rows)
        print(f"{d:9}: start {m['start_s']:5.1f} s | {calls} judge calls ({m['prompt_tokens']:,} prompt tokens) in "
              f"{m['judge_s']:6.1f} s = {calls / m['judge_s']:5.2f} calls/s | {m['decode_tokens']} tokens decoded in "
              f"{m['decode_s']:5.1f} s = {m['decode_tokens'] / m['decode_s']:5.1f} tokens/s")
    diffs = []
    for p in ("quality", "complexity"):
        a, b = runs["bfloat16"]["scores"][p], runs["float32"]["scores"][p]
        both = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
        d = np.abs(np.subtract(*zip(*both, strict=True))) if both else np.array([np.nan])
        diffs.append(float(d.max()))
        print(f"{p}: scored in both {len(both)}/{len(a)} (bf16 failed {a.count(None)}, fp32 failed {b.count(None)}); "
              f"|bf16 - fp32| mean {d.mean():.3f}, max {d.max():.3f} on the 1-6 scale")
    bf, fp = runs["bfloat16"], runs["float32"]
    print(f"machine load average (1 min) {os.getloadavg()[0]:.1f}: wall figures shrink when other work shares the cores")
    print(f"RESULT auto={resolve_dtype('auto', 'cpu')} judge_speedup_fp32={bf['judge_s'] / fp['judge_s']:.2f} "
          f"decode_speedup_fp32={(fp['decode_tokens'] / fp['decode_s']) / (bf['decode_tokens'] / bf['decode_s']):.2f} "
          f"max_score_diff={max(diffs):.3f}")


if __name__ == "__main__":
    main()
