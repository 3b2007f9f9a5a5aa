"""Agreement of CPU and CUDA columns from evals/device_gpu_rerun.sh's exports: python3 evals/device_gpu_compare.py DIR"""
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr


def read(path):
    rows = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        rows[r.get("id") or r.get("uid") or len(rows)] = r
    return rows


def flat(v):
    if isinstance(v, list):
        return [x for e in v for x in flat(e)]
    if isinstance(v, dict):
        return flat(v.get("value", v.get("score")))
    return [np.nan if v is None else float(v)]


def pair(name, a_rows, a_col, b_rows, b_col, top=None):
    a, b = [], []
    for k in a_rows:
        if k in b_rows:
            x, y = flat(a_rows[k].get(a_col)), flat(b_rows[k].get(b_col))
            if len(x) == len(y):
                a += x
                b += y
    a, b = np.array(a), np.array(b)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if not len(a):
        print(f"{name}: no values")
        return
    d = np.abs(a - b)
    rel = d / np.maximum(np.abs(a), 1e-12)
    rho = spearmanr(a, b).statistic if len(a) > 2 else float("nan")
    extra = ""
    if top:
        ta, tb = set(np.argsort(-a)[:top]), set(np.argsort(-b)[:top])
        extra = f", top-{top} overlap {len(ta & tb)}/{top}"
    print(f"{name}: n={len(a)} max abs {d.max():.3g}, mean abs {d.mean():.3g}, max rel {rel.max():.3g}, "
          f"mean rel {rel.mean():.3g}, Spearman {rho:.4f}{extra}")


if __name__ == "__main__":
    d = Path(sys.argv[1])
    P = read(d / "pool_cols.jsonl") if (d / "pool_cols.jsonl").exists() else {}
    print("pool columns:", sorted({k for r in P.values() for k in r}) if P else None)
    if (d / "pool_cols_cpu.jsonl").exists():
        Q = read(d / "pool_cols_cpu.jsonl")
        pair("IFD float32: CUDA vs a CPU request (the shared cache: 0)", Q, "ifd", Q, "ifd_cpu")
        for c in ("confidence", "variability", "el2n", "grand"):
            pair(f"train run {c}: CUDA vs CPU", P, c, Q, c)
    if (d / "pool_bf16_cpu.jsonl").exists():
        B = read(d / "pool_bf16_cpu.jsonl")
        pair("IFD bfloat16: CUDA vs CPU (computed anew)", B, "ifd_auto", B, "ifd_bf16_cpu")
    if (d / "learn_cuda.jsonl").exists() and (d / "learn_cpu.jsonl").exists():
        a, b = read(d / "learn_cuda.jsonl"), read(d / "learn_cpu.jsonl")
        col = next(k for r in a.values() for k in r if k.startswith("learn") and k.endswith("_cuda"))
        pair(f"{col[:-5]}: CUDA vs CPU", a, col, b, col.replace("_cuda", "_cpu"))
    if (d / "less_cols_cpu.jsonl").exists():
        pair("LESS score CUDA vs CPU", P, "less", read(d / "less_cols_cpu.jsonl"), "less", top=8)
    if (d / "aj_cols.jsonl").exists() and (d / "aj_cols_cuda.jsonl").exists():
        A, B = read(d / "aj_cols.jsonl"), read(d / "aj_cols_cuda.jsonl")
        pair("cross-encoder predictions CPU vs CUDA", A, "ce_scored", B, "ce_scored")
        pair("small-lm predictions CPU vs CUDA", A, "lm_scored", B, "lm_scored")
    if (d / "aj_cols_lmcpu.jsonl").exists():
        M = read(d / "aj_cols_lmcpu.jsonl")
        pair("small-lm trained on CUDA vs trained on CPU (predicted on CUDA)", M, "lm_scored", M, "lm_cpu_scored")
