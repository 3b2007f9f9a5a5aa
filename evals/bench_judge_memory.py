"""Benchmark: peak memory of an LLM judge over a large pool, the pool handed over in parts (``ws.apply`` gives a
judge ``JUDGE.rows_per_call`` rows at a time) against every row in one call (the reference: what it did before).

    python evals/bench_judge_memory.py [--rows 100000] [--dir /tmp/curate-bench-judge]

The judge is ``complexity`` (a digit score with top-20 logprobs, as DEITA's) on an OpenAI-compatible server on
loopback (``tests/fault_server.py`` in its own process: no latency, 64 slots). The pool (synthetic rows of random
words, ~1.5 KB each) is loaded once; each way scores its own copy of the workspace in its own process, so each
peak (``VmHWM``) is its own; ``growth`` is the peak above the process's peak once the workspace is
open and its ids read (imports, the pool's ids and index), before the judge runs. Both must store the same column
(checked). Prints one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from peak_memory import own_peak_mb  # beside this script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's curate, also in the part processes


def run_part(way: str, workspace: Path, base_url: str) -> dict:
    from curate.llm.backends import OpenAIBackend
    from curate.llm.judges import Judge
    from curate.session import Workspace

    class WholeJudge(Judge):
        rows_per_call = None  # the reference: every row in one call

    ws = Workspace.open(workspace)
    _ = ws.ids, ws.index  # read before the baseline: both ways hold them
    before = own_peak_mb()
    judge = (WholeJudge if way == "whole" else Judge)("complexity", OpenAIBackend(base_url, "bench", api_key="k",
                                                                                  concurrency=64))
    start = time.perf_counter()
    result = ws.apply(judge, progress=False)
    return {"way": way, "rows": result.computed, "failed": result.failed, "seconds": time.perf_counter() - start,
            "open_mb": before, "peak_mb": own_peak_mb()}


def write_pool(path: Path, rows: int) -> Path:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(5000)]
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(rows):
            fh.write(json.dumps({"instruction": f"Task {i}: " + " ".join(rng.choices(words, k=40)),
                                 "output": " ".join(rng.choices(words, k=200))}) + "\n")
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/curate-bench-judge"))
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--workspace", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--base-url", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print(json.dumps(run_part(args.part, args.workspace, args.base_url)))
        return

    from curate.session import Workspace

    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    Workspace(args.dir / "base", create=True).load(write_pool(args.dir / "pool.jsonl", args.rows))
    server = subprocess.Popen([sys.executable, str(REPO / "tests" / "fault_server.py"), "0", "64"],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    results = {}
    try:
        base_url = server.stdout.readline().strip()
        for way in ("whole", "parts"):
            shutil.copytree(args.dir / "base", args.dir / way)
            done = subprocess.run([sys.executable, __file__, "--part", way, "--workspace", str(args.dir / way),
                                   "--base-url", base_url], check=True, capture_output=True, text=True)
            results[way] = json.loads(done.stdout.strip().splitlines()[-1])
            r = results[way]
            print(f"{way}: {r['rows']:,} rows ({r['failed']} failed) in {r['seconds']:.1f} s, workspace open "
                  f"{r['open_mb']:,.0f} MB, peak {r['peak_mb']:,.0f} MB")
    finally:
        server.terminate()
        server.wait(10)
    same = all(Workspace.open(args.dir / "whole").column(name) == Workspace.open(args.dir / "parts").column(name)
               for name in ("complexity", "complexity_digit_mass", "complexity_failure"))
    whole, parts = results["whole"], results["parts"]
    grew = {way: r["peak_mb"] - r["open_mb"] for way, r in results.items()}
    print(f"RESULT rows={parts['rows']} whole_peak_mb={whole['peak_mb']:.0f} parts_peak_mb={parts['peak_mb']:.0f} "
          f"whole_growth_mb={grew['whole']:.0f} parts_growth_mb={grew['parts']:.0f} "
          f"peak_ratio={whole['peak_mb'] / parts['peak_mb']:.2f} whole_s={whole['seconds']:.1f} "
          f"parts_s={parts['seconds']:.1f} speed_ratio={whole['seconds'] / parts['seconds']:.2f} same_column={same}")


if __name__ == "__main__":
    main()
