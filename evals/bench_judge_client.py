"""Benchmark: the judge client against a loopback server with fixed latency L and C concurrent slots.

Prints throughput as a fraction of the ideal C/L, the ratio against a sequential one-row-at-a-time
client over the same server (the way DEITA / data-juicer call an API), and the rows/s of a re-run
served entirely from the response cache. The server (tests/fault_server.py) runs in its own process.

    python evals/bench_judge_client.py [--rows 2000] [--latency 0.5] [--slots 32]

Last line: RESULT efficiency=<0..1> vs_sequential=<x> cache_rows_per_s=<n>
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curate.llm.backends import OpenAIBackend  # noqa: E402
from curate.llm.judges import run_prompt  # noqa: E402
from curate.llm.prompts import load_prompt  # noqa: E402


def sequential_rows_per_s(base_url: str, rows: list[dict], n: int) -> float:
    """The reference: one blocking request at a time with the plain sync openai client."""
    import openai

    prompt = load_prompt("complexity")
    client = openai.OpenAI(base_url=base_url, api_key="bench", max_retries=0)
    start = time.perf_counter()
    for item in rows[:n]:
        client.chat.completions.create(model="bench", messages=prompt.render(**item), max_tokens=1,
                                       temperature=0.0, logprobs=True, top_logprobs=20)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--latency", type=float, default=0.5, help="server latency L in seconds (LLM APIs: 0.5-5 s)")
    ap.add_argument("--slots", type=int, default=32, help="server concurrent slots C (client concurrency too)")
    ap.add_argument("--sequential-rows", type=int, default=20, help="rows for the sequential reference")
    args = ap.parse_args()

    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_server.py"), str(args.latency),
                               str(args.slots)], stdout=subprocess.PIPE, text=True, env={**os.environ,
                                                                                        "PYTHONPATH": str(REPO)})
    try:
        base_url = server.stdout.readline().strip()
        rows = [{"instruction": f"Benchmark instruction number {i}: explain topic {i % 97} with an example."}
                for i in range(args.rows)]
        ideal = args.slots / args.latency
        with tempfile.TemporaryDirectory() as tmp:
            cache = Path(tmp) / "bench.sqlite"
            backend = OpenAIBackend(base_url, "bench", api_key="bench", concurrency=args.slots, timeout=30)
            # warm-up (imports, first connections) outside the timed run, on a separate cache
            run_prompt("complexity", [{"instruction": f"warm-up {i}"} for i in range(args.slots)], backend,
                       Path(tmp) / "warmup.sqlite", progress=False)
            start, cpu = time.perf_counter(), time.process_time()
            results = run_prompt("complexity", rows, backend, cache, progress=False)
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu
            failed = sum(not r.ok for r in results)
            rate = args.rows / wall
            print(f"server: latency {args.latency}s, {args.slots} slots -> ideal {ideal:.1f} rows/s")
            print(f"curate client: {args.rows} rows in {wall:.2f}s = {rate:.1f} rows/s ({failed} failed); "
                  f"client CPU {1000 * cpu / args.rows:.2f} ms per request")

            seq = sequential_rows_per_s(base_url, rows, args.sequential_rows)
            print(f"sequential one-row-at-a-time client: {seq:.2f} rows/s (over {args.sequential_rows} rows)")

            best = best_cpu = 0.0
            for _ in range(3):
                start, cpu = time.perf_counter(), time.process_time()
                again = run_prompt("complexity", rows, backend, cache, progress=False)
                best = max(best, args.rows / (time.perf_counter() - start))
                best_cpu = max(best_cpu, args.rows / (time.process_time() - cpu))
            assert all(r.cached for r in again)
            print(f"cache-hit re-run: {best:,.0f} rows/s wall, {best_cpu:,.0f} rows per CPU-second (best of 3)")
    finally:
        server.terminate()
        server.wait(10)
    load = os.getloadavg()[0]
    print(f"machine load average (1 min) {load:.1f} on {os.cpu_count()} cores: wall figures shrink when other "
          "work shares the cores")
    print(f"RESULT efficiency={rate / ideal:.3f} vs_sequential={rate / seq:.1f} cache_rows_per_s={best:.0f}")


if __name__ == "__main__":
    main()
