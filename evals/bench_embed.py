"""Benchmark: CPU embedding backends (torch, onnx, onnx-int8) of the packaged MiniLM: speed and agreement.

    python evals/bench_embed.py [--texts 1000] [--batch-size 64] [--threads 0] [--rounds 3]
                                [--workspace /work/runs/new30k/workspace (evals/pool30k_workspace.py builds it)] [--agreement-rows 0] [--budget 6000]

Speed: the same ``--texts`` texts (a fixed random sample of the workspace's ``instruction`` texts, the
default embedding text), the same batch size, each backend timed (``torch`` is curate's encode: token-budget
batches on the CPU, :mod:`curate.embed.batching`; ``st-fixed``, the reference, is sentence-transformers' own
encode in fixed batches of ``--batch-size``) in ``--rounds`` interleaved rounds (best
kept: the machine is shared); texts/s, and texts per CPU-second of the process (with ``--threads 1`` the
robust figure on a shared machine: time other processes take from the core is not counted). ``--threads``
sets torch's and ONNX Runtime's threads (0: their defaults).
Agreement: cosine of each backend's vectors to torch's on those texts (mean / min); with
``--agreement-rows`` (0 = every row of the workspace) the whole pool is embedded with each of
``--agreement-backends`` (cached in /tmp) and compared with the workspace's torch embeddings: cosine mean/min, and DEITA admission (curate's
exact loop, the workspace's complexity x quality scores, tau 0.9, ``--budget``) run on both: the number of
admitted ids that differ. The workspace is only read. Prints a ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # both backends tokenise on the calling thread

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.defaults import DEITA, EMBED  # noqa: E402
from curate.embed.encoder import default_model_path, encode, load_model, model_id  # noqa: E402
from curate.embed.onnx import TOKENS_PER_ROW, load_onnx  # noqa: E402
from curate.rows import row_text  # noqa: E402
from curate.select.admission import admit  # noqa: E402
from curate.storage.workspace import Workspace  # noqa: E402
from evals.pool30k_workspace import DEFAULT, missing  # noqa: E402

BACKENDS = ("torch", "onnx", "onnx-int8")
FIXED = "st-fixed"  # the reference: sentence-transformers' own encode in fixed batches of --batch-size rows


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def pool_vectors(backend: str, texts: list[str], rows: int, batch_size: int, threads: int | None) -> np.ndarray:
    """``backend`` vectors of the first ``rows`` texts, cached in /tmp by the model file and the texts."""
    enc = load_onnx(str(default_model_path()), backend, threads)
    key = f"{backend}-{os.path.getsize(enc.path)}-{len(texts)}-{rows}-{batch_size}-{TOKENS_PER_ROW}"
    cache = Path("/tmp") / f"bench_embed_{key}.npy"
    if cache.exists():
        return np.load(cache)
    t, v = timed(lambda: enc.encode(texts[:rows], batch_size))
    print(f"embedded {rows:,} pool texts with {backend} in {t:.0f}s ({rows / t:.0f} texts/s)", flush=True)
    np.save(cache, v)
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", default=DEFAULT)
    ap.add_argument("--texts", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=EMBED.batch_size)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--agreement-rows", type=int, default=-1, help="0: the whole pool; -1: skip")
    ap.add_argument("--budget", type=int, default=6000)
    ap.add_argument("--agreement-backends", default="onnx-int8,onnx")
    args = ap.parse_args()
    import torch

    threads = args.threads or None
    if threads:
        torch.set_num_threads(threads)
    if absent := missing(args.workspace):
        raise SystemExit(absent)
    ws = Workspace.open(args.workspace)
    texts = [row_text(c, EMBED.text) for c in ws.conversations()]
    rng = np.random.default_rng(0)
    sample = [texts[i] for i in rng.choice(len(texts), min(args.texts, len(texts)), replace=False)]
    print(f"machine: {os.cpu_count()} CPUs shared with other work, load {os.getloadavg()}; threads "
          f"{threads or 'library defaults'}; {len(sample):,} texts, batch {args.batch_size}", flush=True)
    run = {"torch": lambda: encode(sample, batch_size=args.batch_size, device="cpu", backend="torch"),
           FIXED: lambda: load_model(model_id(None), "cpu").encode(sample, batch_size=args.batch_size,
                                                                   normalize_embeddings=True)}
    for b in ("onnx", "onnx-int8"):
        t, enc = timed(lambda b=b: load_onnx(str(default_model_path()), b, threads))
        print(f"{b}: {enc.path} ready in {t:.1f}s (an export at first use, else a load)", flush=True)
        run[b] = lambda enc=enc: enc.encode(sample, args.batch_size)
    encode(sample[:64], batch_size=args.batch_size, device="cpu", backend="torch")  # warm-up (loads torch's model)
    timed_runs = (FIXED,) + BACKENDS
    times: dict[str, list[float]] = {b: [] for b in timed_runs}
    cpu: dict[str, list[float]] = {b: [] for b in timed_runs}
    vecs: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for b in timed_runs:
            c0 = time.process_time()
            t, vecs[b] = timed(run[b])
            times[b].append(t)
            cpu[b].append(time.process_time() - c0)
    speed = {b: len(sample) / min(times[b]) for b in timed_runs}
    per_cpu = {b: len(sample) / min(cpu[b]) for b in timed_runs}  # texts per CPU-second of this process
    for b in timed_runs:
        cos = (vecs[b] * vecs["torch"]).sum(1)
        print(f"{b:10s} {speed[b]:7.1f} texts/s ({speed[b] / speed['torch']:.2f}x torch) rounds "
              f"{[round(t, 2) for t in times[b]]}; {per_cpu[b]:.1f} texts per CPU-second "
              f"({per_cpu[b] / per_cpu['torch']:.2f}x); cosine to torch mean {cos.mean():.5f} min {cos.min():.5f}", flush=True)
    line = (f"RESULT texts={len(sample)} st_fixed_batches={speed[FIXED]:.1f}/s torch={speed['torch']:.1f}/s "
            f"torch_token_budget_speedup={speed['torch'] / speed[FIXED]:.2f}x onnx={speed['onnx']:.1f}/s "
            f"onnx_int8={speed['onnx-int8']:.1f}/s speedup_int8={speed['onnx-int8'] / speed['torch']:.2f}x "
            f"speedup_int8_cpu_time={per_cpu['onnx-int8'] / per_cpu['torch']:.2f}x threads={threads or 'default'}")
    if args.agreement_rows >= 0:
        rows = args.agreement_rows or len(texts)
        ref = np.asarray(ws.embeddings(EMBED.name), np.float32)[:rows]
        check = encode(texts[:200], batch_size=args.batch_size, device="cpu", backend="torch")
        print(f"workspace torch vectors vs fresh torch encode (200 rows): min cosine {(check * ref[:200]).sum(1).min():.6f}")
        c, q = (np.array([t[0] if len(t) == 1 and t[0] is not None else np.nan for t in ws.turn_values(col)], float)
                for col in ("complexity", "quality"))
        scores = (c * q)[:rows]
        ids = np.asarray(ws.ids[:rows], dtype=object).astype(str)
        a = admit(ref, scores, ids, DEITA.max_cosine_similarity, args.budget)
        for backend in args.agreement_backends.split(","):
            v = pool_vectors(backend, texts, rows, args.batch_size, threads)
            cos = (v * ref).sum(1)
            b = admit(v, scores, ids, DEITA.max_cosine_similarity, args.budget)
            differ = len(set(a.admitted.tolist()) - set(b.admitted.tolist()))
            print(f"pool ({rows:,} rows), {backend} vs torch: cosine mean {cos.mean():.6f} min {cos.min():.6f} "
                  f"(p1 {np.percentile(cos, 1):.6f}); DEITA budget {args.budget:,}: {differ:,} admitted ids differ "
                  f"({differ / args.budget:.2%}); rejected {int((a.decision == 2).sum()):,} vs {int((b.decision == 2).sum()):,}")
            tag = backend.replace("-", "_")
            line += f" {tag}_pool_cos_mean={cos.mean():.5f} {tag}_pool_cos_min={cos.min():.5f} {tag}_deita_{args.budget}_differ={differ}"
    print(line + f" load={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
