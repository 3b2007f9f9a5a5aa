"""Benchmark: the ``minhash`` selector's time and memory against datasketch used the plain way, in one process.

    python evals/bench_minhash_memory.py [--n 50000] [--near 0.03]

Reference: what a user of datasketch writes (and what curate did before): a fresh ``MinHash(num_perm, seed)`` per
row (datasketch draws the permutations again for each), and every kept row's ``MinHash`` object kept for the
Jaccard check beside the LSH index. curate: its ``minhash`` selector (``ws.select``, reading the texts from a
workspace, as a run does): one set of permutations shared by every signature, and the kept rows in curate's own
band index (``curate/select/lsh.py``: signatures in one matrix, band keys in sorted arrays) instead of ``MinHashLSH``. Both walk the same synthetic rows (``--near`` of them a copy of an earlier row with one
word changed) through the same LSH bands and must find the same duplicates. Memory: tracemalloc's peak (numpy's
arrays are traced), so the figures are the Python heap's, without the interpreter. The machine is shared: times are
indicative. Prints ``RESULT`` lines (ratios: reference / curate).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.defaults import MINHASH  # noqa: E402
from curate.select.dedup import lsh_index, shingles  # noqa: E402

WORDS = [f"w{i}" for i in range(5000)]


def rows(n: int, near: float, seed: int = 0) -> list[str]:
    """``n`` texts of 30..150 words; a share ``near`` copies an earlier text with one word changed."""
    rng = random.Random(seed)
    out: list[str] = []
    for _ in range(n):
        if out and rng.random() < near:
            words = rng.choice(out).split()
            words[rng.randrange(len(words))] = rng.choice(WORDS)
            out.append(" ".join(words))
        else:
            out.append(" ".join(rng.choice(WORDS) for _ in range(rng.randint(30, 150))))
    return out


def plain_datasketch(texts: list[str]) -> list[bool]:
    """The reference: a MinHash per row made the plain way, every kept one held."""
    from datasketch import MinHash

    lsh = lsh_index(MINHASH.threshold, MINHASH.num_perm, MINHASH.false_positive_weight)
    kept: dict[int, MinHash] = {}
    duplicate = []
    for i, text in enumerate(texts):
        grams = shingles(text, MINHASH.shingle)
        mh = MinHash(num_perm=MINHASH.num_perm, seed=1)
        mh.update_batch([g.encode() for g in grams])
        hit = any(mh.jaccard(kept[h]) >= MINHASH.threshold for h in lsh.query(mh))
        duplicate.append(hit)
        if not hit:
            lsh.insert(i, mh)
            kept[i] = mh
    return duplicate


def curate_selector(ws) -> list[bool]:
    """curate's own ``minhash`` selector on a workspace holding the texts (as instructions, no reply)."""
    sel = ws.select(method="minhash", name="bench", text="instruction")
    decision = dict(zip(sel.table["id"].to_pylist(), sel.table["decision"].to_pylist(), strict=True))
    return [decision[rid] == "duplicate" for rid in ws.ids]


def measure(fn, data) -> tuple[list[bool], float, float]:
    tracemalloc.start()
    t = time.perf_counter()
    found = fn(data)
    seconds = time.perf_counter() - t
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return found, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--near", type=float, default=0.03)
    args = ap.parse_args()
    from curate.session import Workspace

    with tempfile.TemporaryDirectory() as tmp:  # the selector reads its texts from a workspace, as in a run
        source = Path(tmp) / "texts.jsonl"
        source.write_text("".join(json.dumps({"instruction": text}) + "\n" for text in rows(args.n, args.near)))
        ws = Workspace(Path(tmp) / "ws")
        ws.load(source)
        texts = [conversation[0]["content"] for conversation in ws.conversations()]  # the pool's rows, in order
        ref, ref_s, ref_mb = measure(plain_datasketch, texts)
        ours, our_s, our_mb = measure(curate_selector, ws)
    assert ref == ours, "the two walks must find the same duplicates"
    print(f"plain datasketch: {ref_s:.1f}s, peak {ref_mb:.0f} MiB; curate: {our_s:.1f}s, peak {our_mb:.0f} MiB; "
          f"{sum(ours):,} duplicates of {args.n:,} rows (both)")
    print(f"RESULT minhash_rows={args.n} duplicates={sum(ours)} seconds_ratio={ref_s / our_s:.2f} "
          f"peak_memory_ratio={ref_mb / our_mb:.2f} reference=plain_datasketch")


if __name__ == "__main__":
    main()
