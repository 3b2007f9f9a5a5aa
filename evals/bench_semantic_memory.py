"""Benchmark: peak memory of the ``semantic`` dedup selector (K-means index) and the ``kmeans`` selector on a large
pool of stored embeddings, against the old semantic path kept here as the reference.

    python evals/bench_semantic_memory.py [--n 300000] [--dir /tmp/bench_semantic_memory] [--kmeans-budget 1000]

A workspace of ``--n`` short rows whose ``default`` embeddings are ``evals/bench_admission.synthetic`` clustered
unit vectors (384 dims, float32; no MiniLM) is built once under ``--dir``. Each run below is its own process, so
its peak resident memory (VmHWM, ``evals/peak_memory.py``) is its own; the figure reported is the peak above the
process's memory after opening the workspace (imports, ids), in MiB and in copies of the vector matrix
(``n x 384 x 4`` bytes):

* ``reference``: the semantic path before this benchmark's change: the rows' vectors in walk order (a fancy-indexed
  copy, then ``unit_rows``'s own copy), a second copy of them in row-id order for K-means, and scikit-learn's
  ``KMeans`` copying its input again (``copy_x``) beside ``np.var``'s temporary of the same size;
* ``semantic``: curate's ``semantic`` selector as it is (``SELECTORS["semantic"]``);
* ``kmeans``: curate's ``kmeans`` selector (``--kmeans-budget``; no reference: its peak is read in matrix copies).

``reference`` and ``semantic`` must decide alike: the same rows, decisions, witnesses, similarities and clusters
(checked). Prints ``RESULT`` lines.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DIM = 384


def build(folder: Path, n: int) -> Path:
    """A workspace of ``n`` rows with synthetic ``default`` embeddings under ``folder`` (reused if built)."""
    from curate.session import Workspace
    from evals.bench_admission import synthetic

    ws_dir, done = folder / f"ws{n}", folder / f"ws{n}.done"
    if done.exists():
        return ws_dir
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / f"rows{n}.jsonl"
    with open(source, "w", encoding="utf-8") as fh:
        for i in range(n):
            fh.write(json.dumps({"instruction": f"question number {i}", "output": f"answer {i}"}) + "\n")
    ws = Workspace(ws_dir)
    ws.load(source)
    ws.add_embeddings("default", synthetic(len(ws.ids), DIM), {"kind": "synthetic", "bench": "semantic_memory"})
    source.unlink()
    done.write_text("ok")
    return ws_dir


def reference_semantic(ws, rows: np.ndarray, duplicate_similarity: float, seed: int):
    """The old ``semantic`` selector's K-means path (walk order = pool order): its arrays, in walk order."""
    import warnings

    from sklearn.cluster import KMeans, kmeans_plusplus
    from sklearn.exceptions import ConvergenceWarning

    from curate.defaults import KMEANS
    from curate.select.admission import REJECTED, admit, unit_rows
    from curate.select.dedup import semantic_decisions
    from curate.select.inputs import id_order
    from curate.select.registry import SelectorResult
    from curate.storage.blobs import check_read_rows

    matrix = ws.embeddings("default")
    x = unit_rows(check_read_rows(ws, "default", matrix[rows], getattr(matrix, "filename", None)))
    n = len(x)
    rank_score = -np.arange(n, dtype=np.float64)
    k_c = min(n, max(1, int(math.sqrt(n / 4))))
    order = id_order(ws, rows)
    xo = x[order]  # the copy made only to reorder
    size = max(KMEANS.init_rows, k_c)
    sample_rows = np.arange(n) if n <= size else np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        centers, _ = kmeans_plusplus(np.asarray(xo[sample_rows], dtype=np.float64), k_c, random_state=seed)
        km = KMeans(n_clusters=k_c, n_init=1, init=centers.astype(np.float32), random_state=seed,
                    max_iter=KMEANS.max_iter).fit(xo)
    labels = np.empty(n, np.int64)
    labels[order] = km.labels_
    del xo
    duplicate, wit, wsim = np.zeros(n, bool), np.full(n, -1, np.int64), np.full(n, np.nan)
    for c in range(k_c):
        members = np.flatnonzero(labels == c)
        res = admit(x[members], rank_score[members], None, duplicate_similarity, None)
        rej = np.flatnonzero(res.decision == REJECTED)
        duplicate[members[rej]] = True
        wit[members[rej]] = members[res.witness[rej]]
        wsim[members[rej]] = res.witness_similarity[rej]
    # the selector's result, as the old code made it (no scores: the walk in pool order)
    return semantic_decisions(SelectorResult(), ws.ids, rows, np.full(n, np.nan), (duplicate, wit, wsim, labels),
                              duplicate_similarity)


def curate_semantic(ws, rows: np.ndarray, duplicate_similarity: float, seed: int):
    """curate's ``semantic`` selector as it is."""
    from curate.select.registry import SELECTORS

    return SELECTORS["semantic"](ws, rows, duplicate_similarity=duplicate_similarity, seed=seed)


def as_arrays(ws, res) -> dict[str, np.ndarray]:
    """A semantic selector result's rows, decisions, witnesses (pool positions), similarities and clusters."""
    index = ws.index
    return {"rows": np.asarray(res.rows), "duplicate": np.array([d.value == "duplicate" for d in res.decisions]),
            "witness": np.array([index[d["witness"]] if "witness" in d else -1 for d in res.details]),
            "similarity": np.array([d.get("similarity", np.nan) for d in res.details]),
            "cluster": np.array([d["cluster"] for d in res.details])}


def part(way: str, ws_dir: str, out: str, duplicate_similarity: float, seed: int, budget: int) -> None:
    """One measured run in this process: its peak above the opened workspace, and its arrays to ``out``."""
    import sklearn.cluster  # noqa: F401 (imported before the baseline: the selectors import it)

    from curate.select.registry import SELECTORS
    from curate.session import Workspace
    from evals.peak_memory import own_peak_mb

    ws = Workspace.open(ws_dir)
    rows = np.arange(len(ws.ids))
    ws.index  # noqa: B018 (the id -> position map, read by the outputs: not part of the selector's peak)
    base = own_peak_mb()
    t = time.perf_counter()
    if way == "kmeans":
        res = SELECTORS["kmeans"](ws, rows, budget, seed=seed)
    else:
        res = (reference_semantic if way == "reference" else curate_semantic)(ws, rows, duplicate_similarity, seed)
    seconds, peak = time.perf_counter() - t, own_peak_mb() - base  # read before the arrays below are made
    if way != "kmeans":
        np.savez(out, **as_arrays(ws, res))
    print(json.dumps({"peak_mb": peak, "base_mb": base, "seconds": seconds}))


def main() -> None:
    from curate.defaults import DEITA, SELECT

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--dir", default="/tmp/bench_semantic_memory")
    ap.add_argument("--threshold", type=float, default=DEITA.semantic_duplicate_similarity)
    ap.add_argument("--seed", type=int, default=SELECT.seed)
    ap.add_argument("--kmeans-budget", type=int, default=1000, help="0: skip the kmeans selector")
    ap.add_argument("--ways", default="reference,semantic,kmeans")
    ap.add_argument("--part", help=argparse.SUPPRESS)
    args = ap.parse_args()
    folder = Path(args.dir)
    if args.part:
        part(args.part, str(build(folder, args.n)), str(folder / f"{args.part}.npz"), args.threshold, args.seed,
             args.kmeans_budget)
        return
    t = time.perf_counter()
    ws_dir = build(folder, args.n)
    print(f"workspace {ws_dir}: {args.n:,} rows ({time.perf_counter() - t:.0f}s)", flush=True)
    matrix_mb = args.n * DIM * 4 / 2**20
    got = {}
    for way in args.ways.split(","):
        if way == "kmeans" and not args.kmeans_budget:
            continue
        cmd = [sys.executable, __file__, "--part", way, "--n", str(args.n), "--dir", args.dir, "--threshold",
               str(args.threshold), "--seed", str(args.seed), "--kmeans-budget", str(args.kmeans_budget)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        got[way] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{way}: peak {got[way]['peak_mb']:.0f} MiB above {got[way]['base_mb']:.0f} "
              f"({got[way]['peak_mb'] / matrix_mb:.2f} x the {matrix_mb:.0f} MiB matrix), "
              f"{got[way]['seconds']:.0f}s", flush=True)
    if "reference" in got and "semantic" in got:
        a, b = (np.load(folder / f"{w}.npz") for w in ("reference", "semantic"))
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{key} differs from the reference")
        print(f"RESULT semantic_rows={args.n} duplicates={int(b['duplicate'].sum())} identical=1 "
              f"peak_mb={got['semantic']['peak_mb']:.0f} reference_peak_mb={got['reference']['peak_mb']:.0f} "
              f"peak_ratio={got['reference']['peak_mb'] / got['semantic']['peak_mb']:.2f} "
              f"matrix_copies={got['semantic']['peak_mb'] / matrix_mb:.2f} "
              f"reference_matrix_copies={got['reference']['peak_mb'] / matrix_mb:.2f} reference=old_semantic_path")
    if "kmeans" in got:
        print(f"RESULT kmeans_rows={args.n} budget={args.kmeans_budget} peak_mb={got['kmeans']['peak_mb']:.0f} "
              f"matrix_copies={got['kmeans']['peak_mb'] / matrix_mb:.2f} reference=vector_matrix_bytes")


if __name__ == "__main__":
    main()
