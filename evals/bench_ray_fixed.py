"""The fixed cost of `curate run --engine ray` on a small pool (40 rows by default): seconds per step and for the
whole run, with the Ray engine's own parts (``RayEngine.timings``: Ray's start, each pass), each run in a fresh
process (a user's `curate run`: Ray starts and stops in it).

    python evals/bench_ray_fixed.py [--rows 40] [--repeat 3] [--minhash] [--tree OTHER_CHECKOUT ...]

``--tree``: also time another checkout of curate (e.g. a worktree of the commit before a change), alternating with
this one, repeat by repeat, so both see the same load of a shared machine. Prints one RESULT line per tree with the
medians (seconds) over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
from curate.pipeline import run_pipeline
import curate.scale.ray_engine as re_
engines = []
init = re_.RayEngine.__init__
def keep(self, *a, **k):
    init(self, *a, **k)
    engines.append(self)
re_.RayEngine.__init__ = keep
t1 = time.perf_counter()
result = run_pipeline(sys.argv[1], out=sys.argv[2], budget=10, report=False, engine="ray", progress=False,
                      minhash=sys.argv[3] == "1")
t2 = time.perf_counter()
print("BENCH " + json.dumps({"import": t1 - t0, "run": t2 - t1, "steps": result.timings,
                             "parts": engines[0].timings if engines else {}}))
"""


def pool(path: Path, rows: int) -> Path:
    words = "data model train graph sort cache tree vector query index shard merge split token score rank".split()
    with path.open("w") as f:
        for i in range(rows):
            w = words[i % len(words)]
            f.write(json.dumps({"instruction": f"Task {i}: explain how {w} {words[(i * 7) % len(words)]} works.",
                                "output": f"The {w} works like this, {i} times over, with care."}) + "\n")
    return path


def one(tree: Path, source: Path, out: Path, minhash: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "RAY_DEDUP_LOGS": "0", "CURATE_PROGRESS": "0"}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(source), str(out), "1" if minhash else "0"],
                          capture_output=True, text=True, env=env, cwd=tree)
    line = [x for x in proc.stdout.splitlines() if x.startswith("BENCH ")]
    if proc.returncode or not line:
        raise SystemExit(f"{tree}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    return json.loads(line[0][6:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--minhash", action="store_true")
    parser.add_argument("--tree", action="append", default=[], help="another checkout to time beside this one")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.tree] + [HERE]
    with tempfile.TemporaryDirectory() as tmp:
        source = pool(Path(tmp) / "pool.jsonl", args.rows)
        runs: dict[Path, list[dict]] = {t: [] for t in trees}
        for r in range(args.repeat):
            for t in trees:
                got = one(t, source, Path(tmp) / f"out-{len(runs[t])}-{trees.index(t)}", args.minhash)
                runs[t].append(got)
                print(f"# {t.name} repeat {r}: run {got['run']:.2f}s steps "
                      + json.dumps({k: round(v, 2) for k, v in got["steps"].items()}) + " parts "
                      + json.dumps(got["parts"]), flush=True)
    for t in trees:
        median = {"run": round(statistics.median(g["run"] for g in runs[t]), 2)}
        for step in runs[t][0]["steps"]:
            median[step] = round(statistics.median(g["steps"][step] for g in runs[t]), 2)
        parts = {f"{s}.{p}": round(statistics.median(g["parts"].get(s, {}).get(p, 0.0) for g in runs[t]), 2)
                 for s, ps in runs[t][0]["parts"].items() for p in ps}
        print(f"RESULT tree={t.name} rows={args.rows} repeats={args.repeat} minhash={args.minhash} "
              + json.dumps({**median, **parts}))


if __name__ == "__main__":
    main()
