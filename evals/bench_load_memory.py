"""Benchmark: peak memory and time of loading a pool, part by part (``Workspace.load``, ``curate.load``) against
the whole pool in memory (the reference: what both did before).

    python evals/bench_load_memory.py [--rows 1000000] [--dir /tmp/curate-bench-load]

The pool is :func:`bench_scale.write_pool`'s synthetic JSONL (alpaca and multi-turn rows of random words, exact
and near repeats, malformed lines). Each way runs in its own process, so each peak (getrusage ``ru_maxrss``) is its
own:

* ``reference``: ``pools.read`` (every row a Python dict) -> ``pools.assign_ids`` -> ``pools.to_table`` ->
  ``datasets.Dataset(table).save_to_disk``, the former body of ``Workspace.load``;
* ``parts``: ``Workspace(...).load(path, on_error="skip")``: the source read into Arrow parts on disk
  (``curate.pools.stage``), then the pool written from the memory-mapped parts;
* ``dataset``: ``curate.load(path, on_error="skip")``, the notebook's in-memory ``datasets.Dataset``: the source
  read into Arrow parts, then read back into memory as Arrow columns (saved with ``save_to_disk`` to compare).

All must write the same table (checked). Prints one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's curate, also in the part processes


def run_part(way: str, source: str, out: Path) -> dict:
    start = time.perf_counter()
    if way == "reference":
        import datasets

        from curate import pools

        result = pools.read(source, on_error="skip")
        pools.assign_ids(result.rows)
        table, _ = pools.to_table(result.rows)
        datasets.Dataset(table).save_to_disk(str(out / "pool"))
        rows = len(result.rows)
    elif way == "dataset":
        import warnings

        import curate

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the malformed lines' warning
            dataset = curate.load(source, on_error="skip")
        dataset.save_to_disk(str(out / "pool"))
        rows = len(dataset)
    else:
        from curate.session import Workspace

        rows = Workspace(out).load(source, on_error="skip")["rows_added"]
    return {"way": way, "rows": rows, "seconds": time.perf_counter() - start,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/curate-bench-load"))
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--source", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part:
        print(json.dumps(run_part(args.part, args.source, args.out)))
        return

    from bench_scale import write_pool

    source, _ = write_pool(args.dir, args.rows, shards=1)
    results = {}
    for way in ("reference", "parts", "dataset"):
        out = args.dir / way
        shutil.rmtree(out, ignore_errors=True)
        done = subprocess.run([sys.executable, __file__, "--part", way, "--source", str(source), "--out", str(out)],
                              check=True, capture_output=True, text=True)
        results[way] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{way}: {results[way]['rows']:,} rows in {results[way]['seconds']:.1f} s, "
              f"peak {results[way]['peak_mb']:,.0f} MB")

    import datasets

    tables = {way: datasets.load_from_disk(str(args.dir / way / "pool")).data.table for way in results}
    same = all(tables["reference"].equals(tables[way]) for way in ("parts", "dataset"))
    ref, parts, dataset = results["reference"], results["parts"], results["dataset"]
    print(f"RESULT rows={parts['rows']} reference_peak_mb={ref['peak_mb']:.0f} parts_peak_mb={parts['peak_mb']:.0f} "
          f"peak_ratio={ref['peak_mb'] / parts['peak_mb']:.2f} reference_s={ref['seconds']:.1f} "
          f"parts_s={parts['seconds']:.1f} speed_ratio={ref['seconds'] / parts['seconds']:.2f} "
          f"dataset_peak_mb={dataset['peak_mb']:.0f} dataset_peak_ratio={ref['peak_mb'] / dataset['peak_mb']:.2f} "
          f"dataset_s={dataset['seconds']:.1f} same_table={same}")


if __name__ == "__main__":
    main()
