"""Benchmark: the embedding cache's own cost on a growing pool, shards against one rewritten ``.npz``.

    python evals/bench_embed_cache.py [--calls 20] [--rows 20000] [--dim 384]

Each call does what ``curate embed`` does on a pool that grew by ``--rows`` rows since the last call: hash every row's
text, look the keys up, store the new rows' vectors and return the pool's matrix. Random float32 vectors stand in for
the model's, so the figures are the cache's alone, not encoding. curate: ``encode_cached``'s own path
(``curate.embed.cache.lookup_or_encode`` on a ``VectorStore``). Reference: the cache before shards (curate up to
commit da8cd0e): one ``.npz`` per model, read whole, merged with the new vectors and rewritten whole on every call
that adds any. Each runs in its own process. Memory: tracemalloc's peak (numpy's arrays are traced; the last call
returns the whole pool's matrix in both); the process's peak resident size is printed too, but it counts the pages of
memory-mapped shards the lookups read, which are file cache the kernel can drop, not memory the process holds. The machine is shared: times are indicative. Prints a ``RESULT`` line
(ratios: reference / curate).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.embed.cache import lookup_or_encode, text_key  # noqa: E402
from curate.storage.vector_shards import KEY_DTYPE, VectorStore  # noqa: E402


def _vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)


def curate_call(folder: Path, texts: list[str], new_vectors: np.ndarray) -> int:
    """``encode_cached``'s own path (``lookup_or_encode``) with the new rows' vectors in place of the encoder."""
    def fake_encode(missing: list[str], on_chunk) -> np.ndarray:
        assert len(missing) == len(new_vectors)
        on_chunk(np.arange(len(missing)), new_vectors)
        return new_vectors

    matrix, _ = lookup_or_encode(VectorStore(folder), texts, fake_encode)
    return len(matrix)


def reference_call(file: Path, texts: list[str], new_vectors: np.ndarray) -> int:
    """The read-merge-write of curate's cache before shards (embed/cache.py at da8cd0e), without the encoder."""
    keys = [text_key(t) for t in texts]
    if file.exists():
        with np.load(file) as z:
            cached_keys, cached_vectors = z["keys"], z["vectors"]
    else:
        cached_keys, cached_vectors = np.empty(0, dtype=KEY_DTYPE), None
    known = {k: i for i, k in enumerate(cached_keys.tolist())}
    new_keys = np.array([k for k in keys if k not in known], dtype=KEY_DTYPE)
    cached_vectors = new_vectors if cached_vectors is None else np.concatenate((cached_vectors, new_vectors))
    cached_keys = np.concatenate((cached_keys, new_keys))
    known = {k: i for i, k in enumerate(cached_keys.tolist())}
    tmp = file.with_name(f".{file.name}.tmp.npz")
    np.savez(tmp, keys=cached_keys, vectors=cached_vectors)
    os.replace(tmp, file)
    matrix = cached_vectors[[known[k] for k in keys]]
    return len(matrix)


def one(kind: str, calls: int, rows: int, dim: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-embed-cache-") as tmp:
        where = Path(tmp) / ("store" if kind == "curate" else "cache.npz")
        seconds = []
        tracemalloc.start()
        for call in range(calls):
            texts = [f"row {i} of the pool" for i in range((call + 1) * rows)]
            new_vectors = _vectors(rows, dim, seed=call)
            started = time.perf_counter()
            found = (curate_call if kind == "curate" else reference_call)(where, texts, new_vectors)
            seconds.append(time.perf_counter() - started)
            assert found == len(texts), (kind, call, found)
        heap_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
    return {"kind": kind, "seconds": seconds, "bytes_on_disk": size, "heap_peak_mb": heap_peak / 2**20,
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--one", choices=["curate", "reference"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.calls, args.rows, args.dim)))
        return
    results = {}
    for kind in ("reference", "curate"):
        out = subprocess.run([sys.executable, __file__, "--one", kind, "--calls", str(args.calls), "--rows",
                              str(args.rows), "--dim", str(args.dim)], capture_output=True, text=True, check=True)
        results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    for kind, r in results.items():
        print(f"{kind:9s} total {sum(r['seconds']):7.1f} s  last call {r['seconds'][-1]:6.2f} s  "
              f"heap peak {r['heap_peak_mb']:6.0f} MB  resident peak {r['rss_peak_mb']:6.0f} MB  on disk {r['bytes_on_disk'] / 2**20:7.0f} MB")
    ref, cur = results["reference"], results["curate"]
    print(f"RESULT embed_cache_calls={args.calls} rows_per_call={args.rows} "
          f"total_seconds_ratio={sum(ref['seconds']) / sum(cur['seconds']):.2f} "
          f"last_call_seconds_ratio={ref['seconds'][-1] / cur['seconds'][-1]:.2f} "
          f"heap_peak_ratio={ref['heap_peak_mb'] / cur['heap_peak_mb']:.2f} reference=single_npz_rewrite")


if __name__ == "__main__":
    main()
