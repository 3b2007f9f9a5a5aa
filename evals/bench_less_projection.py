"""Seconds per row of LESS gradient features: one projection pass per backward batch (the old path) vs rows of
many batches projected together (each Rademacher block generated once per group).

The projection matrix is generated from seeds block by block and is far too large to keep (SmolLM2-135M's LoRA
on q/k/v/o: ~0.9M coordinates x 8192 dims, 30 GB as float32), so each projection pass regenerates it: ~40 s on a
CPU core. Projected once per backward batch (1-3 rows on the CPU) that was ~20-30 s per row.

Warms up a LoRA on ``--rows`` rows of pool_30k for one epoch (the harness, LESS's settings), then computes the
Adam-aware features of the first ``--old-rows`` rows with ``group_rows=1`` (a pass per backward batch: the old
cost, one generating thread) and of all ``--rows`` rows grouped as :mod:`curate.train.less` does (once with one
generating thread, once with the default threads), into fresh stores, in the same run.
Also reports the largest feature difference on the common rows (float16 storage) and whether each common row's
nearest neighbours among them are the same.

Last line: ``RESULT less_row_s_old=<s> less_row_s_grouped_1thread=<s> less_row_s_new=<s> ratio=<old/new> max_abs_diff=<d> same_ranking=<bool>
group_rows=<n> device=<d>``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.defaults import LESS  # noqa: E402
from curate.train.gradfeatures import (  # noqa: E402
    FeatureStore,
    Projector,
    adam_moments,
    gradient_features,
    group_rows_for,
    lora_linears,
)
from curate.train.harness import OPTIMIZER_FILE  # noqa: E402
from curate.train.less import LessConfig, warmup  # noqa: E402
from evals.bench_train import POOL, pool_rows  # noqa: E402


def timed_features(model, tok, examples, folder: Path, numels, adam, dim: int, device: str, group_rows: int,
                   threads: int | None = None) -> tuple[np.ndarray, float]:
    """Features of ``examples`` into a fresh store at ``folder``, and the seconds it took."""
    projector = Projector(numels, dim, LESS.seed, device, LESS.projection_block, LESS.projection_cache_bytes,
                          threads=threads)
    start = time.perf_counter()
    feats = gradient_features(model, examples, FeatureStore(folder), projector, pad_id=tok.pad_token_id,
                              device=device, batch_tokens=LESS.batch_tokens, adam=adam, group_rows=group_rows)
    return feats, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=Path, default=POOL)
    ap.add_argument("--model", type=Path, default=None)
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--old-rows", type=int, default=4, help="rows timed on the old path (each pass is ~40 s)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dim", type=int, default=LESS.projection_dim)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    from curate.signals.engine import default_model_dir
    from curate.signals.template import Prompter
    from curate.train.examples import encode_rows

    model_dir = args.model or default_model_dir()
    rows = pool_rows(args.pool, args.rows, 0)
    with tempfile.TemporaryDirectory() as tmp:
        config = LessConfig(warmup_fraction=1.0, epochs=1, max_length=args.max_length)
        run = warmup(model_dir, rows, Path(tmp) / "run", config, device=args.device)
        model, tok = run.load_model(1, args.device, trainable=True)
        examples, _ = encode_rows(Prompter(tok, args.max_length), rows)
        numels = [lin.weight.numel() for lin in lora_linears(model)]
        adam = adam_moments(run.checkpoint(1) / OPTIMIZER_FILE, numels, args.device)
        group = group_rows_for(numels, LESS.projection_group_bytes)
        common = examples[:args.old_rows]
        old, old_s = timed_features(model, tok, common, Path(tmp) / "old", numels, adam, args.dim, args.device, 1,
                                    threads=1)   # the old path: a pass per backward batch, one generating thread
        _, serial_s = timed_features(model, tok, examples, Path(tmp) / "serial", numels, adam, args.dim,
                                     args.device, group, threads=1)   # grouped, one generating thread
        new, new_s = timed_features(model, tok, examples, Path(tmp) / "new", numels, adam, args.dim, args.device,
                                    group)
    new_common = new[:len(common)]
    diff = float(np.abs(new_common - old).max())
    same = bool((np.argsort(-(old @ old.T), axis=1) == np.argsort(-(new_common @ new_common.T), axis=1)).all())
    old_row, new_row = old_s / len(common), new_s / len(examples)
    print(f"coordinates {sum(numels):,} dim {args.dim}: old {old_s:.1f} s for {len(common)} rows, "
          f"grouped {serial_s:.1f} s (one generating thread) and {new_s:.1f} s (threaded) for {len(examples)} rows "
          f"(groups of <= {group} rows)")
    print(f"RESULT less_row_s_old={old_row:.2f} less_row_s_grouped_1thread={serial_s / len(examples):.2f} "
          f"less_row_s_new={new_row:.2f} ratio={old_row / new_row:.1f} "
          f"max_abs_diff={diff:.2e} same_ranking={same} group_rows={group} device={args.device}")


if __name__ == "__main__":
    main()
