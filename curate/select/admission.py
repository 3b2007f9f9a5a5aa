"""The DEITA admission loop (repr filter), exact and fast.

Semantics (the sequential loop DEITA describes): walk the rows by score, descending (ties: row id,
ascending); admit a row iff its cosine similarity to every row admitted so far is <= ``tau``
(``max_cosine_similarity``); stop once ``budget`` rows are admitted. Similarities are decided in float64
(true cosines: dot products over both norms, within [-1, 1]) on float32 unit vectors: rows that are unit to
float32 precision are used as given, every other row (user embeddings with norms off by 1e-3, say) is first
divided by its norm (:func:`unit_rows`). So ``tau = 1`` admits every row, duplicates too.

How it is fast and still exact:

* **Blocks.** Candidates are taken a block at a time: one matrix product against the admitted set,
  then a sequential pass inside the block against block-mates admitted earlier (only rows that have a
  block-mate above ``tau`` need it). Decisions never depend on the block size.
* **Blocks sized to the budget** (:func:`next_block`). A block is at most ``block_size`` rows, at most the
  admitted set's size (at least ``FIRST_BLOCK``: so the products inside a block never cost much more
  than those against the admitted set), and about what the remaining budget needs at the last block's
  admission rate, so the walk examines about the rows needed, not up to a whole extra block
  (10K real rows, budget 2,000: 2,026 rows needed; a fixed block of 4,096 examined 4,096, these blocks 2,088).
* **bfloat16 screen (default where it pays: from 4,096 admitted rows).** On CPUs with AVX512-BF16/AMX, torch
  multiplies bf16 2-6x faster than float32 (530 vs 87 GFLOP/s with AMX). The products against the admitted set run
  in bf16; a row whose bf16 maximum is more than ``BF16_MARGIN`` (0.02, above the proven 0.012 error
  bound) from ``tau`` is decided by it, and every other row is recomputed in float32 (and float64 near tau).
* **Float safety.** Products run in float32; any decision whose float32 similarity lies within
  ``1e-4`` of ``tau`` is recomputed in float64.

* **Only the walked prefix is sorted** (:func:`order_prefix`): a partition finds the rows scoring at least
  the (2 x budget + 4,096)-th best score, and only those are sorted; the walk sorts the rest only if it
  gets there. ``AdmissionResult.order`` (the whole order) is sorted when first asked for.

Against DEITA's own filter code (``evals/bench_admission.py``, one thread each side, same rows, identical
admitted ids in order; medians on the shared 2-core machine): 72-153x its default batch size 1 and
3.7-30x its batch-64 mode from 10K/500 to 100K/10,000 (10K/2,000: 73x, 3.9x); 1M/50,000: 8.1 s vs 94 s
(batch 64). See ``evals/SCALING.md``. Which admitted row is named as a rejected
row's witness may depend on block boundaries (any admitted earlier row above tau is a valid one).

With ``device="cuda"`` the products run with torch on the GPU; the decisions are the same. How the
products are computed lives in :mod:`curate.select.products`; exact pruning variants that did not pay
(a low-rank bound, angular groups) live in ``evals/admission_prune.py`` and plug in as ``products=``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import DEITA
from curate.select.products import BF16_MARGIN, FLOAT32_MARGIN, bf16_is_faster, default_products

__all__ = ["ADMITTED", "BF16_MARGIN", "FLOAT32_MARGIN", "NOT_REACHED", "REJECTED", "UNSCORED", "AdmissionResult",
           "admit", "bf16_is_faster", "examination_order", "next_block", "order_prefix", "unit_rows"]

NOT_REACHED, ADMITTED, REJECTED, UNSCORED = 0, 1, 2, 3
OUTCOMES = {ADMITTED: (Decision.KEPT, Reason.SELECTED), REJECTED: (Decision.REJECTED, Reason.TOO_SIMILAR),
            NOT_REACHED: (Decision.NOT_REACHED, Reason.BUDGET_FILLED), UNSCORED: (Decision.UNSCORED, Reason.NO_SCORE)}
# rounding a unit row to float32 moves its norm by at most 2^-24 ~ 6e-8 (each component by a relative 2^-24):
# rows closer to norm 1 than this are unit to float32 precision and used bit for bit; others are renormalised
UNIT_NORM_TOLERANCE = 1e-7
# block sizing (see next_block); decisions never depend on it
FIRST_BLOCK = 256  # blocks start here and may grow to the admitted set's size (up to block_size)
MIN_BLOCK = 64  # the smallest block sized to the budget: below it the ~30 numpy calls per block dominate
BUDGET_SLACK = 1.1  # a block sized to the budget takes 10% (+ 8 rows) more than the admission rate predicts
PREFIX_FACTOR, PREFIX_SLACK = 2, 4096  # the walk's first sorted prefix: 2 x budget + 4,096 rows (more if needed)


@dataclass
class AdmissionResult:
    """Per-row outcome of the admission loop, indexed by row position (as given)."""

    decision: np.ndarray  # int8 codes: NOT_REACHED, ADMITTED, REJECTED, UNSCORED
    witness: np.ndarray  # row position of the admitted row that caused a rejection, else -1
    witness_similarity: np.ndarray  # float64 similarity to the witness, NaN otherwise
    walked: np.ndarray  # a prefix of the examination order holding every examined row (see ``order``)
    admitted: np.ndarray  # row positions admitted, in admission order
    stats: dict[str, Any] = field(default_factory=dict)
    scores: np.ndarray | None = field(default=None, repr=False)
    ids: Any = field(default=None, repr=False)

    @property
    def order(self) -> np.ndarray:
        """Row positions in examination order (scored rows only): the whole order, sorted on first use
        (the loop itself sorts only the prefix it walks, :func:`order_prefix`)."""
        if self.scores is not None and len(self.walked) < int(np.count_nonzero(~np.isnan(self.scores))):
            self.walked = examination_order(self.scores, self.ids)
        return self.walked

    def outcome(self, pos: int, ids: Any, tau: float) -> tuple[Decision, Reason, dict[str, Any]]:
        """Row ``pos``'s decision, reason code and details (witness id and similarity for a rejection)."""
        code = int(self.decision[pos])
        decision, reason = OUTCOMES[code]
        if code == REJECTED:
            return decision, reason, {"witness": str(ids[self.witness[pos]]),
                                      "similarity": float(self.witness_similarity[pos]), "max_cosine_similarity": tau}
        return decision, reason, {}


def examination_order(scores: np.ndarray, ids: Any) -> np.ndarray:
    """Row positions by score descending, ties by id ascending; rows with a NaN score are left out."""
    scores = np.asarray(scores, dtype=np.float64)
    # Fast path: an unstable sort, kept when no two scores tie (continuous scores): the order is then unique
    # and ids cannot matter. With ties, the two stable sorts (ids, then scores) decide.
    order = np.argsort(-scores)
    ranked = scores[order]
    if not np.any(ranked[1:] == ranked[:-1]):
        return order[~np.isnan(ranked)]
    keys = np.asarray(ids)
    by_id = np.argsort(keys, kind="stable")
    order = by_id[np.argsort(-scores[by_id], kind="stable")]
    return order[~np.isnan(scores[order])]


def order_prefix(scores: np.ndarray, ids: Any, size: int) -> tuple[np.ndarray, bool]:
    """The first rows of :func:`examination_order`: every row scoring at least the ``size``-th best score
    (so ties at the boundary are all in; an exact prefix of the whole order), found by a partition in O(n)
    instead of a full sort; and whether that is the whole order."""
    scores = np.asarray(scores, dtype=np.float64)
    valid = ~np.isnan(scores)
    scored = int(np.count_nonzero(valid))
    if size >= scored // 2:  # most of the order: sort it all
        return examination_order(scores, ids), True
    neg = np.where(valid, -scores, np.inf)
    kth = np.partition(neg, size - 1)[size - 1]
    if kth == np.inf:  # scores of -inf reach the boundary: sort it all
        return examination_order(scores, ids), True
    cand = np.flatnonzero((neg <= kth) & valid)
    return cand[examination_order(scores[cand], np.asarray(ids)[cand])], len(cand) == scored


def check_unit_rows(x: np.ndarray, chunk: int = 65536, offsets: np.ndarray | None = None) -> None:
    """Raise unless every row has norm 1 (within 1e-3): the similarity rule assumes unit rows. ``offsets``:
    the rows' positions to name in the message (default: their index in ``x``)."""
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start:start + chunk], dtype=np.float32)
        dev = np.abs(np.einsum("ij,ij->i", part, part) - 1)
        if dev.size and dev.max() > 2e-3:
            bad = start + int(np.argmax(dev))
            name = bad if offsets is None else int(offsets[bad])
            raise ValueError(f"embeddings must be unit-normalised rows; row {name} has norm "
                             f"{float(np.linalg.norm(np.asarray(x[bad], np.float64))):.4f}")


def unit_rows(x: np.ndarray, check: bool = False, in_place: bool = False) -> np.ndarray:
    """``x`` as float32 rows of norm 1: rows off unit norm by more than ``UNIT_NORM_TOLERANCE`` are divided
    by their float64 norm, the rest are kept bit for bit (so this is idempotent); all-zero rows stay zero.
    ``check``: raise ValueError (row index within ``x``) if a row's norm is off 1 by more than 1e-3.
    ``in_place``: a float32 ``x`` the caller owns (a fresh read) is normalised itself instead of a copy of it."""
    # a copy by default: the caller's array (or memory map) is never changed
    out = np.asarray(x, dtype=np.float32) if in_place else np.array(x, dtype=np.float32)
    # norms in float64 without a float64 copy (5x faster); rows this screen leaves within 1e-12 of the
    # tolerance get the reference norm (linalg.norm of the float64 copy), so the result never depends on it
    norms = np.sqrt(np.einsum("ij,ij->i", out, out, dtype=np.float64))
    if check and norms.size and np.abs(norms * norms - 1).max() > 2e-3:
        bad = int(np.argmax(np.abs(norms * norms - 1)))
        raise ValueError(f"embeddings must be unit-normalised rows; row {bad} has norm {norms[bad]:.4f}")
    edge = np.flatnonzero(np.abs(np.abs(norms - 1) - UNIT_NORM_TOLERANCE) <= 1e-12)
    off = np.flatnonzero((np.abs(norms - 1) > UNIT_NORM_TOLERANCE) & (norms > 0))
    if edge.size or off.size:
        redo = np.union1d(edge, off)
        norms[redo] = np.linalg.norm(out[redo].astype(np.float64), axis=1)
        off = np.flatnonzero((np.abs(norms - 1) > UNIT_NORM_TOLERANCE) & (norms > 0))
    if off.size:
        out[off] = (out[off].astype(np.float64) / norms[off, None]).astype(np.float32)
    return out


def next_block(block_size: int, remaining: int, n_adm: int, last_examined: int, last_admitted: int) -> int:
    """Rows in the next block: at most ``block_size``; at most ``max(FIRST_BLOCK, n_adm)`` (a block's own Gram
    matrix then costs at most about its products against the admitted set); and about what the ``remaining``
    budget needs at the last block's admission rate (``last_admitted`` of ``last_examined``; 1 before the
    first block), plus 10% and 8 rows, but not below ``MIN_BLOCK`` (nor above ``block_size``)."""
    rate = (last_admitted + 1) / (last_examined + 1)
    need = math.ceil(remaining / rate * BUDGET_SLACK) + 8
    return max(1, min(block_size, max(MIN_BLOCK, min(need, max(FIRST_BLOCK, n_adm)))))


def cosines(rows: np.ndarray, row: np.ndarray) -> np.ndarray:
    """Float64 cosines of float32 ``rows`` (m, d) with one ``row`` (d,): the dot products divided by both float64
    norms and clipped to [-1, 1], so identical rows are exactly 1 (a dot product of float32 unit rows can be
    1 + 6e-8, which ``max_cosine_similarity=1.0`` would reject for some duplicates and not others). Zero rows: 0."""
    rows = np.atleast_2d(rows)
    return paired_cosines(rows, np.broadcast_to(row, rows.shape))


def paired_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """:func:`cosines` of row i of ``a`` with row i of ``b``."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return np.clip(np.einsum("ij,ij->i", a64, b64) / np.where(norms > 0, norms, 1.0), -1.0, 1.0)


def _resolve_block(conflict_rows: np.ndarray, g_rows: np.ndarray, xs: np.ndarray, tau: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequential resolution inside a block of survivors (rows already clear of the admitted set).

    ``conflict_rows`` are the survivors with an earlier block-mate above ``tau - margin``; ``g_rows`` their
    rows of the survivors' Gram matrix. Returns (admitted mask, witness index into survivors, witness sim).
    """
    s = len(xs)
    admitted = np.ones(s, bool)
    witness = np.full(s, -1, np.int64)
    wsim = np.full(s, np.nan)
    lo = tau - FLOAT32_MARGIN
    for r, i in enumerate(conflict_rows.tolist()):
        row = g_rows[r, :i]
        js = np.flatnonzero((row > lo) & admitted[:i])
        if js.size == 0:
            continue
        sims = row[js].astype(np.float64)
        near = np.abs(sims - tau) <= FLOAT32_MARGIN
        if near.any():
            sims[near] = cosines(xs[js[near]], xs[i])
        if (sims > tau).any():
            admitted[i] = False
            k = int(np.argmax(sims))
            witness[i] = js[k]
            wsim[i] = float(cosines(xs[js[k]], xs[i])[0])
    return admitted, witness, wsim


# products(x, order, cap, tau, adm, stats) -> an object with start_block/best/conflicts/added (see products.py)
ProductsFactory = Callable[[np.ndarray, np.ndarray, int, float, np.ndarray, dict[str, Any]], Any]


def admit(embeddings: np.ndarray, scores: np.ndarray, ids: Any = None,
          max_cosine_similarity: float = DEITA.max_cosine_similarity, budget: int | None = None, *,
          block_size: int = DEITA.block_size, device: str = "cpu", progress: bool = False, precision: str = "auto",
          products: ProductsFactory | None = None) -> AdmissionResult:
    """Run the exact DEITA admission loop.

    ``embeddings``: (n, d) unit-normalised rows (norm 1 within 1e-3, checked on every row the walk examines:
    ValueError otherwise; each block is renormalised with :func:`unit_rows` before use, so decisions follow
    true cosines). ``scores``: n floats (NaN = unscored, left out).
    ``ids``: sort keys for ties (default: row positions). ``block_size``: the largest block (blocks are sized
    to the remaining budget and the admitted set, :func:`next_block`). ``device``: "cpu" (numpy), or a torch device such as
    "cuda". ``precision`` (CPU): "float32", or "bf16": products against the admitted set in bfloat16 as a
    screen, with every row the screen cannot decide (within ``BF16_MARGIN`` of tau) recomputed in
    float32/float64; "auto" picks bf16 when this CPU multiplies bf16 measurably faster (AVX512-BF16/AMX).
    ``products``: another way to compute the products (see ``evals/admission_prune.py``). Returns an
    :class:`AdmissionResult` equal to the one-row-at-a-time loop for any ``block_size``, ``device``,
    ``precision`` or ``products``.
    """
    x = embeddings
    n, dim = x.shape
    scores = np.asarray(scores, dtype=np.float64)
    if len(scores) != n:
        raise ValueError(f"{len(scores)} scores for {n} embeddings")
    tau = float(max_cosine_similarity)
    if not -1.0 <= tau <= 1.0:  # a cosine is in [-1, 1]: past 1 every row is admitted, past -1 none
        raise ValueError(f"max_cosine_similarity must be a cosine in [-1, 1], not {max_cosine_similarity!r}")
    if device != "cpu":
        from curate.hardware import resolve_device

        torch_device = device.removeprefix("torch:")  # "torch:cpu": the torch path on the CPU
        if torch_device != "cpu" and not torch_device.startswith("cuda"):
            raise ValueError(f"device must be 'cpu' or a CUDA device such as 'cuda:0', not {device!r}")
        resolve_device(torch_device)  # a CurateError when torch sees no CUDA device
    ids = np.arange(n) if ids is None else ids
    total = int(np.count_nonzero(~np.isnan(scores)))
    budget = total if budget is None else int(budget)
    if budget < 0:
        raise ValueError("budget must be >= 0")
    cap = min(budget, total)
    # the walk usually ends within about the budget: sort that prefix only, the rest if the walk gets there
    order, complete = order_prefix(scores, ids, max(1, min(total, PREFIX_FACTOR * cap + PREFIX_SLACK)))

    decision = np.zeros(n, np.int8)
    decision[np.isnan(scores)] = UNSCORED
    witness = np.full(n, -1, np.int64)
    wsim = np.full(n, np.nan)
    adm_vecs = np.empty((cap, dim), np.float32)
    adm_pos = np.empty(cap, np.int64)
    n_adm = 0
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"examined": 0, "similarities_computed": 0, "exact_rechecks": 0,
                             "block_size": block_size, "blocks": 0, "device": device}
    prod = (default_products(adm_vecs, tau, cap, device, precision) if products is None
            else products(x, order, cap, tau, adm_vecs, stats))
    stats["precision"] = getattr(prod, "precision", type(prod).__name__)

    bar = None
    if progress:
        from curate.storage.progress import progress_bar

        bar = progress_bar(cap, "admission", True)
    start = last_examined = last_admitted = 0
    while start < total and n_adm < cap:
        if start >= len(order) and not complete:
            order, complete = examination_order(scores, ids), True
        cb = order[start:start + next_block(block_size, cap - n_adm, n_adm, last_examined, last_admitted)]
        start += len(cb)
        stats["blocks"] += 1
        try:  # every examined row must be unit (within 1e-3); rows the walk never reaches are not read
            xb = unit_rows(x[cb], check=True)
        except ValueError:
            check_unit_rows(x[cb], offsets=cb)
            raise
        b = len(cb)
        stats["examined"] += b
        prod.start_block(xb)
        # 1. against rows admitted before this block
        best = np.full(b, -np.inf, np.float32)
        best_rank = np.full(b, -1, np.int64)
        if n_adm:
            best, best_rank, computed = prod.best(xb, n_adm)
            stats["similarities_computed"] += computed
        rejected = best > tau + FLOAT32_MARGIN
        near = np.flatnonzero(~rejected & (best > tau - FLOAT32_MARGIN))
        for i in near.tolist():  # rare: decide in float64 against every admitted row
            stats["exact_rechecks"] += 1
            exact = cosines(adm_vecs[:n_adm], xb[i])
            k = int(np.argmax(exact))
            best[i], best_rank[i] = exact[k], k
            rejected[i] = exact[k] > tau
        blk_dec = np.where(rejected, REJECTED, ADMITTED).astype(np.int8)
        blk_wit = np.where(rejected, best_rank, -1)
        blk_sim = np.full(b, np.nan)
        rej_idx = np.flatnonzero(rejected)
        if rej_idx.size:
            blk_sim[rej_idx] = paired_cosines(adm_vecs[best_rank[rej_idx]], xb[rej_idx])
        # 2. inside the block, against block-mates admitted earlier
        surv = np.flatnonzero(~rejected)
        if surv.size > 1:
            xs = xb[surv]
            conflict_rows, g_rows, computed = prod.conflicts(surv, xs)
            stats["similarities_computed"] += computed
            adm_s, wit_s, wsim_s = _resolve_block(conflict_rows, g_rows, xs, tau)
            lost = np.flatnonzero(~adm_s)
            blk_dec[surv[lost]] = REJECTED
            blk_sim[surv[lost]] = wsim_s[lost]
            blk_wit[surv[lost]] = -2 - surv[wit_s[lost]]  # block-local witness, resolved below
        # 3. budget: everything after the cap-th admission is not reached
        new_adm = np.flatnonzero(blk_dec == ADMITTED)
        if new_adm.size and n_adm + new_adm.size >= cap:
            cut = new_adm[cap - n_adm - 1] + 1
            blk_dec[cut:] = NOT_REACHED
            blk_wit[cut:] = -1
            blk_sim[cut:] = np.nan
            new_adm = new_adm[: cap - n_adm]
        ranks = n_adm + np.arange(new_adm.size)
        adm_vecs[ranks] = xb[new_adm]
        adm_pos[ranks] = cb[new_adm]
        prod.added(ranks, new_adm, xb)
        n_adm += new_adm.size
        last_examined, last_admitted = b, new_adm.size
        # witnesses as row positions
        from_before = blk_wit >= 0
        blk_wit_pos = np.full(b, -1, np.int64)
        blk_wit_pos[from_before] = adm_pos[blk_wit[from_before]]
        from_block = blk_wit <= -2
        blk_wit_pos[from_block] = cb[-2 - blk_wit[from_block]]
        decision[cb] = blk_dec
        witness[cb] = blk_wit_pos
        wsim[cb] = blk_sim
        if bar is not None:
            bar.update(new_adm.size)
    if bar is not None:
        bar.close()
    stats["admitted"] = n_adm
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    return AdmissionResult(decision, witness, wsim, order, adm_pos[:n_adm].copy(), stats, scores, ids)
