"""Benchmark: a first ``curate run`` and its no-op re-run (same pool, same options, same folder), each a fresh
process, as a user runs them from a shell.

    python evals/bench_rerun.py [--pool FILE] [--rows 300] [--budget 60] [--checkout DIR] [--dir /tmp/bench-rerun]

``--pool``: a jsonl file whose first ``--rows`` rows are taken (default: the bundled sample, all of it).
``--checkout``: the curate checkout to time (default: this one), e.g. a ``git worktree`` of an earlier commit; the
benchmark itself runs from here. Prints each run's own ``time per step`` line and one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def slice_pool(pool: Path | None, rows: int | None, folder: Path) -> Path:
    """The first ``rows`` lines of ``pool`` (default: the bundled sample) written into ``folder``."""
    source = pool or REPO / "curate" / "data" / "sample.jsonl"
    lines = [line for line in source.read_text().splitlines() if line.strip()]
    out = folder / "pool.jsonl"
    out.write_text("\n".join(lines[:rows] if rows else lines) + "\n")
    return out


def timed_run(checkout: Path, pool: Path, out: Path, budget: int) -> tuple[float, str]:
    """Seconds of one ``curate run`` in a fresh process, and its last output lines."""
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    cmd = [sys.executable, "-c", "from curate.cli import main; main()", "run", str(pool), "--out", str(out),
           "--budget", str(budget)]
    start = time.perf_counter()
    # run in the checkout: ``python -c`` puts the working directory before PYTHONPATH on sys.path, so a benchmark
    # started in another checkout timed that checkout's code, whatever --checkout said
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=checkout)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(f"curate run failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    tail = " ".join(done.stdout.split("time per step:")[-1].split()) if "time per step:" in done.stdout else ""
    return seconds, tail


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pool", type=Path, default=None)
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--budget", type=int, default=10)
    parser.add_argument("--checkout", type=Path, default=REPO)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-rerun"))
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    pool = slice_pool(args.pool, args.rows, args.dir)
    rows = sum(1 for _ in pool.open())
    first, first_steps = timed_run(args.checkout.resolve(), pool, args.dir / "run", args.budget)
    print(f"first run: {first:.1f} s; time per step: {first_steps}")
    again, again_steps = timed_run(args.checkout.resolve(), pool, args.dir / "run", args.budget)
    print(f"re-run: {again:.1f} s; time per step: {again_steps}")
    print(f"RESULT rows={rows} checkout={args.checkout} first_s={first:.1f} rerun_s={again:.1f} "
          f"rerun/first={again / first:.3f}")


if __name__ == "__main__":
    main()
