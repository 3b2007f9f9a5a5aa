"""Benchmark: ``curate report`` on a large workspace, this checkout against an earlier commit (the reference),
each in its own process on the same workspace.

    python evals/bench_report.py [--rows 1000000] [--reference bda9192] [--dir /tmp/curate-bench-report]

The workspace: ``bench_scale.write_pool``'s synthetic pool, two per-turn score columns (``complexity``,
``quality``, uniform 1..6, stored through ``ws.apply``), random unit vectors as the embedding set, an exact dedup
and a DEITA selection of 50,000 rows (``input_selection`` dedup). The reference runs from a ``git worktree`` of
``--reference``. Both pages must hold the same text once their timestamps, images and stylesheets are taken out (checked;
the images differ where a plot changed). Prints one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from peak_memory import own_peak_mb  # beside this script

REPO = Path(__file__).resolve().parents[1]


def build(folder: Path, rows: int) -> Path:
    import numpy as np

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(REPO / "evals"))
    from bench_scale import write_pool

    from curate.session import Workspace
    from curate.storage.step import StepOutput

    class Uniform:  # a stand-in scorer: per-turn scores drawn from the row id
        granularity, reducer, inputs, rows_per_call = "turn", "sum", (), 20_000

        def __init__(self, column: str):
            self.column = column

        def fingerprint(self) -> str:
            return f"uniform-{self.column}"

        def describe(self) -> dict:
            return {"kind": "synthetic"}

        def run(self, rows, ctx):
            ctx.progress.update(len(rows))
            values = []
            for row in rows:
                rng = np.random.default_rng(int(row.id[:8], 16) + len(self.column))
                values.append([float(x) for x in rng.uniform(1, 6, len(row.turns))] or None)
            return StepOutput(values, [[] for _ in rows])

    source, _ = write_pool(folder, rows, shards=1)
    ws = Workspace(folder / "ws", create=True)
    ws.load(source, on_error="skip")
    for column in ("complexity", "quality"):
        ws.apply(Uniform(column), progress=False)
    vectors = np.random.default_rng(0).standard_normal((len(ws), 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ws.add_embeddings("default", vectors, {"kind": "embeddings", "model": "all-MiniLM-L6-v2", "text": "instruction",
                                           "dim": 384, "normalized": True})
    ws.select(method="exact", name="dedup")
    ws.select(method="deita", name="deita", input_selection="dedup", budget=50_000)
    return folder / "ws"


def run_part(workspace: Path, out: Path) -> dict:
    import curate
    from curate.session import Workspace

    start = time.perf_counter()
    Workspace.open(workspace).report(out)
    return {"curate": curate.__file__, "seconds": time.perf_counter() - start,
            "peak_mb": own_peak_mb()}


def text_of(page: str) -> str:
    """The page without what may differ between two commits that report the same: images, the time it was made,
    and the stylesheet (a rule added since the reference, such as ``.curate-warn``, changes no text)."""
    page = re.sub(r"src='data:[^']*'", "src=''", page)
    page = re.sub(r"<style>.*?</style>", "<style></style>", page, flags=re.S)
    return re.sub(r"generated \S+", "generated", page)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--reference", default="bda9192", help="the commit to compare with")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/curate-bench-report"))
    ap.add_argument("--part", type=Path, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print(json.dumps(run_part(args.part, args.out)))
        return

    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    workspace = build(args.dir, args.rows)
    tree = args.dir / "reference-tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), args.reference], check=True,
                   capture_output=True)
    results = {}
    try:
        for way, code in (("reference", tree), ("this", REPO)):
            # this script, importing curate from ``code`` (PYTHONPATH comes before the installed checkout)
            done = subprocess.run([sys.executable, __file__, "--part", str(workspace), "--out",
                                   str(args.dir / f"{way}.html")], capture_output=True, text=True, cwd=code,
                                  env={**os.environ, "PYTHONPATH": str(code)})
            if done.returncode != 0:
                raise SystemExit(f"{way} failed:\n{done.stderr[-3000:]}")
            results[way] = json.loads(done.stdout.strip().splitlines()[-1])
            assert results[way]["curate"] == str(code / "curate" / "__init__.py"), results[way]
            print(f"{way}: report in {results[way]['seconds']:.1f} s, peak {results[way]['peak_mb']:,.0f} MB")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], check=False)
    same = text_of((args.dir / "reference.html").read_text()) == text_of((args.dir / "this.html").read_text())
    ref, new = results["reference"], results["this"]
    print(f"RESULT rows={args.rows} reference={args.reference} reference_s={ref['seconds']:.1f} "
          f"this_s={new['seconds']:.1f} speed_ratio={ref['seconds'] / new['seconds']:.2f} "
          f"reference_peak_mb={ref['peak_mb']:.0f} this_peak_mb={new['peak_mb']:.0f} same_text={same}")


if __name__ == "__main__":
    main()
