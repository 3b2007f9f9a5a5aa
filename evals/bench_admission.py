"""Benchmark: curate's exact admission loop against DEITA's own filter code, and against a numpy loop.

    python evals/bench_admission.py [--cases real10k:2000,real30k:6000,syn100k:10000,syn1m:50000]
                                    [--threads 1] [--deita-seconds 300] [--repeats 5]
    python evals/bench_admission.py --against numpy --n 1000000 --budget 50000 [--data [POOL.jsonl]] [--device cuda]

``--against deita`` (default): each case runs curate's ``admit`` and DEITA's real ``Combined_Filter``
(``IterativeFilter.filter`` from hkust-nlp/deita, copied unchanged into ``evals/deita_reference/``) on the
same rows: its default batch size 1 and its batch-64 mode, both on the CPU with its default chunk size.
Cases: ``realN:B`` = the first N scored rows of a workspace holding real MiniLM embeddings and DEITA
complexity/quality scores of pool_30k (``--workspace``, read only; default /work/runs/new30k/workspace, which
``evals/pool30k_workspace.py`` says how to build);
``synN:B`` = N clustered synthetic unit vectors (:func:`synthetic`) with continuous scores. Scores are
continuous (no ties), so DEITA's unstable pandas sort and our tie rule give the same order, and the
admitted ids (in order) must be identical to DEITA batch-size-1's. Batch 64 compares candidates with
rejected batch-mates too (inexact): its differing ids are counted. Times are the median of ``--repeats``
(DEITA batch 1: one run); when DEITA's batch-1 run would exceed ``--deita-seconds`` its time is
EXTRAPOLATED from prefixes of the walk (``evals/deita_reference/harness.py``; printed as such). The
suite lives in ``evals/deita_reference/suite.py``. Every case
prints a ``RESULT`` line; a last ``RESULT`` line gives the smallest speed-ups over all cases.

``--against numpy``: the earlier benchmark against a DEITA-faithful brute-force numpy loop (batch size 1,
preallocated buffer), with an exact float64 certificate of curate's result over the full run:

Data: clustered synthetic unit vectors (topics -> clusters -> rows, cluster spreads from near-duplicate
to loose), plus with ``--data`` the real MiniLM embeddings of ../shared/data/pool_30k.jsonl (cached in /tmp).

Reference: one candidate at a time, exactly DEITA's loop (batch size 1): a matrix-vector product against
every admitted row (numpy float32 on the CPU; torch on the GPU with ``--device cuda``), float64 recheck
within 1e-4 of tau (same decision rule as curate).

Agreement is checked three ways:
1. the reference's own decisions, run from an empty admitted set, on the longest prefix of the
   examination order it finishes within ``--ref-seconds`` (the whole run when it fits);
2. windows later in the order, started from the admitted set curate reached there (timing + decisions);
3. a certificate over the FULL run, exact in float64: every admitted row is within tau of no earlier
   admitted row, every rejected row has an earlier admitted witness above tau, and nothing after the
   budget-th admission was examined. By induction over the order this proves curate's result equals the
   sequential loop's, row by row.
When the reference cannot run the whole order, its total time is EXTRAPOLATED (printed as such) from a
linear fit of its per-candidate time against the admitted-set size, measured in the windows and summed
over the admitted-set sizes of the real run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.defaults import DEITA  # noqa: E402
from curate.select.admission import ADMITTED, FLOAT32_MARGIN, NOT_REACHED, REJECTED, admit, bf16_is_faster  # noqa: E402
from evals.admission_prune import prune_products  # noqa: E402
from evals.pool30k_workspace import DEFAULT  # noqa: E402

DEFAULT_POOL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pool_30k.jsonl"
DEFAULT_WORKSPACE = DEFAULT
DEFAULT_CASES = "real10k:2000,real30k:6000,syn100k:10000,syn1m:50000"


def embedding_spectrum(dim: int) -> np.ndarray:
    """Per-direction scales giving a power-law spectrum like all-MiniLM-L6-v2's: measured on the real
    pool_30k embeddings, the top 8/32/64/128 singular directions hold 25/46/61/79% of the energy."""
    return (np.arange(1, dim + 1) ** -0.4).astype(np.float64)


def synthetic(n: int, dim: int, seed: int = 0, spectrum: str = "embedding") -> np.ndarray:
    """Clustered unit vectors: topics, clusters around topics, rows around clusters (spread varies).

    ``spectrum="embedding"`` then stretches the space along random orthogonal directions with
    :func:`embedding_spectrum` (real embeddings are far from isotropic); ``"flat"`` leaves it isotropic.
    """
    rng = np.random.default_rng(seed)
    n_topics, n_clusters = max(4, n // 2000), max(8, n // 40)

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    topics = unit(rng.standard_normal((n_topics, dim)))
    centres = unit(topics[rng.integers(0, n_topics, n_clusters)] + 0.9 * unit(rng.standard_normal((n_clusters, dim))))
    spread = rng.uniform(0.15, 0.9, n_clusters)  # 0.15: near-duplicates (sim ~0.98), 0.9: loose (sim ~0.55)
    sizes = np.minimum(rng.zipf(1.6, n_clusters), 1000).astype(np.float64)  # no cluster above ~0.1% of a 1M pool
    assign = rng.choice(n_clusters, size=n, p=sizes / sizes.sum())
    out = np.empty((n, dim), np.float32)
    stretch = None
    if spectrum == "embedding":
        q, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
        stretch = (q * embedding_spectrum(dim)[None, :]) @ q.T
    for s in range(0, n, 100_000):
        a = assign[s:s + 100_000]
        rows = unit(centres[a] + spread[a, None] * unit(rng.standard_normal((len(a), dim))))
        out[s:s + len(a)] = unit(rows @ stretch) if stretch is not None else rows
    return out


def synthetic_scores(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed + 1)
    return np.round(rng.uniform(1, 6, n) * rng.uniform(1, 6, n), 1)  # many ties, as real c*q scores have


def real_embeddings(path: Path) -> np.ndarray:
    if path.suffix == ".npy":  # embeddings computed elsewhere (e.g. on the GPU machine)
        return np.load(path)
    cache = Path("/tmp") / f"bench_admission_{path.stem}_{os.path.getsize(path)}.npy"
    if cache.exists():
        return np.load(cache)
    from curate.embed import encode

    texts = []
    with open(path) as fh:
        for line in fh:
            r = json.loads(line)
            texts.append((r.get("instruction", "") + "\n" + (r.get("input") or "")).strip())
    t = time.perf_counter()
    x = encode(texts, batch_size=128, progress=True)
    print(f"embedded {len(texts):,} texts in {time.perf_counter() - t:.0f}s (cached at {cache})", flush=True)
    np.save(cache, x)
    return x


class Reference:
    """DEITA's loop, one candidate at a time, against a preallocated admitted buffer."""

    def __init__(self, x: np.ndarray, tau: float, cap: int, device: str):
        self.x, self.tau, self.device = x, tau, device
        self.n_adm = 0
        if device == "cpu":
            self.adm = np.empty((cap, x.shape[1]), np.float32)
        else:
            import torch

            self.torch = torch
            self.adm = torch.empty((cap, x.shape[1]), dtype=torch.float32, device=device)
            self.adm64 = None

    def load_state(self, admitted_rows: np.ndarray) -> None:
        k = len(admitted_rows)
        block = np.asarray(self.x[admitted_rows], np.float32)
        if self.device == "cpu":
            self.adm[:k] = block
        else:
            self.adm[:k] = self.torch.from_numpy(block).to(self.device)
        self.n_adm = k

    def step(self, p: int) -> bool:
        v = self.x[p]
        k = self.n_adm
        if k:
            if self.device == "cpu":
                m = float((self.adm[:k] @ v).max())
            else:
                m = float((self.adm[:k] @ self.torch.from_numpy(np.asarray(v)).to(self.device)).max().item())
            if abs(m - self.tau) <= FLOAT32_MARGIN:
                rows = self.adm[:k] if self.device == "cpu" else self.adm[:k].cpu().numpy()
                m = float((rows.astype(np.float64) @ np.asarray(v, np.float64)).max())
            if m > self.tau:
                return False
        if self.device == "cpu":
            self.adm[k] = v
        else:
            self.adm[k] = self.torch.from_numpy(np.asarray(v)).to(self.device)
        self.n_adm = k + 1
        return True


def certify(x: np.ndarray, res, tau: float, budget: int) -> tuple[bool, str]:
    """Exact (float64) proof that ``res`` equals the sequential loop; see the module docstring."""
    order, dec = res.order, res.decision
    pos_in_order = np.empty(len(x), np.int64)
    pos_in_order[order] = np.arange(len(order))
    adm = res.admitted
    if not (np.diff(pos_in_order[adm]) > 0).all():
        return False, "admitted rows out of order"
    examined = order[dec[order] != NOT_REACHED]
    if len(examined) and (dec[order[: len(examined)]] == NOT_REACHED).any():
        return False, "a not-reached row precedes an examined row"
    if len(adm) < min(budget, len(order)) and len(examined) != len(order):
        return False, "stopped before the budget without examining every row"
    if len(adm) == budget and len(adm) and pos_in_order[adm[-1]] != len(examined) - 1:
        return False, "rows examined after the budget was filled"
    a32 = np.asarray(x[adm], np.float32)
    for s in range(0, len(adm), 4096):  # admitted: no earlier admitted row above tau
        g = a32[s:s + 4096] @ a32[: s + 4096].T
        for i in range(g.shape[0]):
            row = g[i, : s + i]
            cand = np.flatnonzero(row > tau - FLOAT32_MARGIN)
            if cand.size and (a32[cand].astype(np.float64) @ a32[s + i].astype(np.float64)).max() > tau:
                return False, f"admitted row {adm[s + i]} is above tau to an earlier admitted row"
    rej = np.flatnonzero(dec == REJECTED)
    w = res.witness[rej]
    if (w < 0).any() or (dec[w] != ADMITTED).any() or (pos_in_order[w] >= pos_in_order[rej]).any():
        return False, "a rejected row lacks an earlier admitted witness"
    for s in range(0, len(rej), 65536):
        r, ww = rej[s:s + 65536], w[s:s + 65536]
        sims = np.einsum("ij,ij->i", np.asarray(x[r], np.float64), np.asarray(x[ww], np.float64))
        if not (sims > tau).all():
            return False, "a rejection's witness is not above tau"
    return True, f"certified: {len(adm):,} admitted, {len(rej):,} rejected, {len(order) - len(examined):,} not reached"


def run_reference(x, res, tau, cap, device, seconds):
    """Prefix from scratch + windows from curate's state; returns (seconds, exact?, agree, checked, notes)."""
    order, dec = res.order, res.decision
    examined = int((dec[order] != NOT_REACHED).sum())
    adm_before = np.cumsum(np.concatenate(([0], dec[order[:examined]] == ADMITTED)))[:-1]  # |A| seen by each
    ref = Reference(x, tau, cap, device)
    agree = checked = 0
    samples = []  # (mean |A|, seconds per candidate)
    t0 = time.perf_counter()
    i = 0
    prefix_cap = seconds * (1.0 if device != "cpu" else 0.5)
    while i < examined and (i % 256 or time.perf_counter() - t0 < prefix_cap):
        ok = ref.step(order[i])
        agree += ok == (dec[order[i]] == ADMITTED)
        checked += 1
        i += 1
    t_prefix = time.perf_counter() - t0
    if i == examined:
        return t_prefix, True, agree, checked, f"reference ran the whole order ({examined:,} candidates)"
    samples.append((adm_before[:i].mean(), t_prefix / i))
    notes = [f"reference from scratch on the first {i:,} of {examined:,} examined candidates: {t_prefix:.1f}s"]
    per_window = (seconds - t_prefix) / 4
    for q in (0.25, 0.5, 0.75, 0.97):
        j0 = max(i, int(q * examined))
        ref.load_state(res.admitted[: adm_before[j0]])
        t1 = time.perf_counter()
        j = j0
        while j < examined and ((j - j0) % 64 or time.perf_counter() - t1 < per_window):
            ok = ref.step(order[j])
            agree += ok == (dec[order[j]] == ADMITTED)
            checked += 1
            j += 1
        dt = time.perf_counter() - t1
        if j > j0:
            samples.append((adm_before[j0:j].mean(), dt / (j - j0)))
            notes.append(f"window at {q:.0%}: {j - j0:,} candidates, |A|~{adm_before[j0]:,}, {dt / (j - j0) * 1e3:.2f} ms each")
    a_mean = np.array([s[0] for s in samples])
    t_per = np.array([s[1] for s in samples])
    beta, alpha = np.polyfit(a_mean, t_per, 1)
    total = alpha * examined + beta * adm_before.sum()
    notes.append(f"EXTRAPOLATED reference total: t/candidate = {alpha * 1e3:.3f} ms + {beta * 1e6:.4f} us x |A|, "
                 f"summed over the {examined:,} examined candidates = {total:.0f}s")
    return total, False, agree, checked, "\n  ".join(notes)


def bench(name, x, scores, budget, tau, block_size, device, ref_seconds, prune="false"):
    n = len(x)
    print(f"\n== {name}: n={n:,} dim={x.shape[1]} budget={budget:,} tau={tau} device={device} prune={prune}", flush=True)
    if device != "cpu":  # start CUDA and cuBLAS before timing either side
        admit(x[:4096], scores[:4096], None, tau, 1000, block_size=block_size, device=device)
        Reference(x, tau, 16, device).step(0)
    else:  # probe bf16 speed and load torch's kernels before timing (once per process)
        bf16_is_faster()
        admit(x[:8192], scores[:8192], None, tau, 4096, block_size=block_size, products=prune_products(prune))
    t = time.perf_counter()
    res = admit(x, scores, None, tau, budget, block_size=block_size, device=device, products=prune_products(prune))
    t_curate = time.perf_counter() - t
    # the memory in a second, untimed pass: tracemalloc slows the loop (1.5-2x at 5,000 rows) and the reference
    # runs untraced
    tracemalloc.start()
    admit(x, scores, None, tau, budget, block_size=block_size, device=device, products=prune_products(prune))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    st = res.stats
    full = st["examined"] * (len(res.admitted) / 2)
    print(f"curate: {t_curate:.1f}s, admitted {len(res.admitted):,}, examined {st['examined']:,}, "
          f"{st.get('precision', 'float32')}, similarities {st['similarities_computed']:.3g} (~{st['similarities_computed'] / max(full, 1):.1%} of brute force), "
          f"float64 rechecks {st['exact_rechecks']}, clusters {st.get('n_clusters', '-')}, "
          f"peak extra memory {peak / 2**20:.0f} MiB", flush=True)
    t = time.perf_counter()
    ok, msg = certify(x, res, tau, budget)
    print(f"certificate ({time.perf_counter() - t:.1f}s): {msg if ok else 'FAILED: ' + msg}", flush=True)
    t_ref, whole, agree, checked, notes = run_reference(x, res, tau, budget, device, ref_seconds)
    print(f"reference ({'measured' if whole else 'extrapolated'}): {t_ref:.1f}s\n  {notes}")
    print(f"reference decisions checked: {checked:,}, agreeing: {agree:,}")
    agreement = (agree / checked if checked else 1.0) if ok else 0.0
    speedup = t_ref / t_curate
    print(f"{name}: speedup {speedup:.1f}x ({'measured' if whole else 'extrapolated reference'}), "
          f"agreement {agreement:.6f}", flush=True)
    return speedup, agreement


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", choices=["deita", "numpy"], default="deita")
    ap.add_argument("--cases", default=DEFAULT_CASES, help="with --against deita: realN:BUDGET or synN:BUDGET, comma-separated")
    ap.add_argument("--workspace", default=DEFAULT_WORKSPACE, help="workspace with real embeddings and scores (read only)")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads, both sides (0: library defaults; "
                    "on a shared 2-core machine their spinning threads made DEITA's loop 4-60x slower)")
    ap.add_argument("--deita-seconds", type=float, default=300, help="longest full DEITA batch-1 run; beyond: extrapolated")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--budget", type=int, default=50_000)
    ap.add_argument("--tau", type=float, default=DEITA.max_cosine_similarity)
    ap.add_argument("--block-size", type=int, default=4096)
    ap.add_argument("--device", default="cpu", help="cpu (numpy reference) or cuda (torch reference, curate on GPU)")
    ap.add_argument("--ref-seconds", type=float, default=120, help="time allowed to the reference per data set")
    ap.add_argument("--data", nargs="?", const=str(DEFAULT_POOL), default=None,
                    help="also run on real MiniLM embeddings of this pool (default ../shared/data/pool_30k.jsonl; "
                         "a .npy file: embeddings already computed)")
    ap.add_argument("--prune", default="false", choices=["false", "auto", "screen", "groups"],
                    help="exact pruning from evals/admission_prune.py (none paid where measured): false (default), "
                         "auto, screen, groups")
    ap.add_argument("--spectrum", choices=["embedding", "flat"], default="embedding",
                    help="synthetic spectrum: like real MiniLM embeddings (default) or isotropic")
    ap.add_argument("--real-budget", type=int, default=6000, help="budget for the real pool (DEITA-6K)")
    args = ap.parse_args()
    if args.against == "deita":
        from evals.deita_reference.suite import against_deita

        return against_deita(args, synthetic, certify)
    prune = args.prune
    print(f"machine: {os.cpu_count()} CPUs visible, affinity {len(os.sched_getaffinity(0))}; device {args.device}")
    if args.data:
        path = Path(args.data)
        if not path.exists():
            print(f"real data {path} is absent: skipping the real-embedding run")
        else:
            xr = real_embeddings(path)
            sr = synthetic_scores(len(xr), seed=7)
            bench(f"real MiniLM ({path.name})", xr, sr, args.real_budget, args.tau, args.block_size, args.device,
                  min(args.ref_seconds, 60), prune)
    t = time.perf_counter()
    x = synthetic(args.n, args.dim, spectrum=args.spectrum)
    print(f"generated {args.n:,} clustered unit vectors ({args.spectrum} spectrum) in {time.perf_counter() - t:.1f}s")
    speedup, agreement = bench("synthetic clustered", x, synthetic_scores(args.n), args.budget, args.tau,
                               args.block_size, args.device, args.ref_seconds, prune)
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print(f"RESULT speedup={speedup:.1f} agreement={agreement:.6f} n={args.n}")


if __name__ == "__main__":
    main()
