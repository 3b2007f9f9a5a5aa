"""The DEITA admission loop (repr filter), exact and fast.

Semantics (the sequential loop DEITA describes): walk the rows by score, descending (ties: row id,
ascending); admit a row iff its cosine similarity to every row admitted so far is <= ``tau``
(``max_cosine_similarity``); stop once ``budget`` rows are admitted. Similarities are decided in float64
on float32 unit vectors: rows that are unit to float32 precision are used as given, every other row
(user embeddings with norms off by 1e-3, say) is first divided by its norm (:func:`unit_rows`), so the
decisions follow true cosines, not dot products scaled by the norms.

How it is fast and still exact:

* **Blocks.** Candidates are taken ``block_size`` at a time: one matrix product against the admitted set,
  then a sequential pass inside the block against block-mates admitted earlier (only rows that have a
  block-mate above ``tau`` need it). Decisions never depend on the block size.
* **bfloat16 screen (default where it pays).** On CPUs with AVX512-BF16/AMX, torch multiplies bf16 about
  6x faster than float32 (measured here: 530 vs 87 GFLOP/s). The products against the admitted set run
  in bf16; a row whose bf16 maximum is more than ``BF16_MARGIN`` (0.02, above the proven 0.012 error
  bound) from ``tau`` is decided by it, and every other row is recomputed in float32 (and float64 near tau).
* **Float safety.** Products run in float32; any decision whose float32 similarity lies within
  ``1e-4`` of ``tau`` is recomputed in float64.

With ``device="cuda"`` the products run with torch on the GPU; the decisions are the same. How the
products are computed lives in :mod:`curate.select.products`; exact pruning variants that did not pay
(a low-rank bound, angular groups) live in ``evals/admission_prune.py`` and plug in as ``products=``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import DEITA
from curate.select.products import BF16_MARGIN, FLOAT32_MARGIN, bf16_is_faster, default_products

__all__ = ["ADMITTED", "BF16_MARGIN", "FLOAT32_MARGIN", "NOT_REACHED", "REJECTED", "UNSCORED", "AdmissionResult",
           "admit", "bf16_is_faster", "examination_order", "unit_rows"]

NOT_REACHED, ADMITTED, REJECTED, UNSCORED = 0, 1, 2, 3
OUTCOMES = {ADMITTED: (Decision.KEPT, Reason.SELECTED), REJECTED: (Decision.REJECTED, Reason.TOO_SIMILAR),
            NOT_REACHED: (Decision.NOT_REACHED, Reason.BUDGET_FILLED), UNSCORED: (Decision.UNSCORED, Reason.NO_SCORE)}
# rounding a unit row to float32 moves its norm by at most 2^-24 ~ 6e-8 (each component by a relative 2^-24):
# rows closer to norm 1 than this are unit to float32 precision and used bit for bit; others are renormalised
UNIT_NORM_TOLERANCE = 1e-7


@dataclass
class AdmissionResult:
    """Per-row outcome of the admission loop, indexed by row position (as given)."""

    decision: np.ndarray  # int8 codes: NOT_REACHED, ADMITTED, REJECTED, UNSCORED
    witness: np.ndarray  # row position of the admitted row that caused a rejection, else -1
    witness_similarity: np.ndarray  # float64 similarity to the witness, NaN otherwise
    order: np.ndarray  # row positions in examination order (scored rows only)
    admitted: np.ndarray  # row positions admitted, in admission order
    stats: dict[str, Any] = field(default_factory=dict)

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
    keys = np.asarray(ids)
    by_id = np.argsort(keys, kind="stable")
    order = by_id[np.argsort(-scores[by_id], kind="stable")]
    return order[~np.isnan(scores[order])]


def check_unit_rows(x: np.ndarray, chunk: int = 65536) -> None:
    """Raise unless every row has norm 1 (within 1e-3): the similarity rule assumes unit rows."""
    for start in range(0, len(x), chunk):
        part = np.asarray(x[start:start + chunk], dtype=np.float32)
        dev = np.abs(np.einsum("ij,ij->i", part, part) - 1)
        if dev.size and dev.max() > 2e-3:
            bad = start + int(np.argmax(dev))
            raise ValueError(f"embeddings must be unit-normalised rows; row {bad} has norm "
                             f"{float(np.linalg.norm(np.asarray(x[bad], np.float64))):.4f}")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """``x`` as float32 rows of norm 1: rows off unit norm by more than ``UNIT_NORM_TOLERANCE`` are divided
    by their float64 norm, the rest are kept bit for bit (so this is idempotent); all-zero rows stay zero."""
    out = np.array(x, dtype=np.float32)  # a copy: the caller's array (or memory map) is never changed
    norms = np.linalg.norm(out.astype(np.float64), axis=1)
    off = np.flatnonzero((np.abs(norms - 1) > UNIT_NORM_TOLERANCE) & (norms > 0))
    if off.size:
        out[off] = (out[off].astype(np.float64) / norms[off, None]).astype(np.float32)
    return out


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
            sims[near] = xs[js[near]].astype(np.float64) @ xs[i].astype(np.float64)
        if (sims > tau).any():
            admitted[i] = False
            k = int(np.argmax(sims))
            witness[i] = js[k]
            wsim[i] = float(xs[js[k]].astype(np.float64) @ xs[i].astype(np.float64))
    return admitted, witness, wsim


# products(x, order, cap, tau, adm, stats) -> an object with start_block/best/conflicts/added (see products.py)
ProductsFactory = Callable[[np.ndarray, np.ndarray, int, float, np.ndarray, dict[str, Any]], Any]


def admit(embeddings: np.ndarray, scores: np.ndarray, ids: Any = None,
          max_cosine_similarity: float = DEITA.max_cosine_similarity, budget: int | None = None, *,
          block_size: int = 4096, device: str = "cpu", progress: bool = False, precision: str = "auto",
          products: ProductsFactory | None = None) -> AdmissionResult:
    """Run the exact DEITA admission loop.

    ``embeddings``: (n, d) unit-normalised rows (norm 1 within 1e-3; each block is renormalised with
    :func:`unit_rows` before use, so decisions follow true cosines). ``scores``: n floats (NaN = unscored, left out).
    ``ids``: sort keys for ties (default: row positions). ``device``: "cpu" (numpy), or a torch device such as
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
    check_unit_rows(x)
    ids = np.arange(n) if ids is None else ids
    order = examination_order(scores, ids)
    total = len(order)
    budget = total if budget is None else int(budget)
    if budget < 0:
        raise ValueError("budget must be >= 0")
    cap = min(budget, total)

    decision = np.zeros(n, np.int8)
    decision[np.isnan(scores)] = UNSCORED
    witness = np.full(n, -1, np.int64)
    wsim = np.full(n, np.nan)
    adm_vecs = np.empty((cap, dim), np.float32)
    adm_pos = np.empty(cap, np.int64)
    n_adm = 0
    t0 = time.perf_counter()
    stats: dict[str, Any] = {"examined": 0, "similarities_computed": 0, "exact_rechecks": 0,
                             "block_size": block_size, "device": device}
    prod = (default_products(adm_vecs, tau, cap, device, precision) if products is None
            else products(x, order, cap, tau, adm_vecs, stats))
    stats["precision"] = getattr(prod, "precision", type(prod).__name__)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cap, desc="admission", unit="row")
    start = 0
    while start < total and n_adm < cap:
        cb = order[start:start + block_size]
        start += len(cb)
        xb = unit_rows(x[cb])
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
            exact = adm_vecs[:n_adm].astype(np.float64) @ xb[i].astype(np.float64)
            k = int(np.argmax(exact))
            best[i], best_rank[i] = exact[k], k
            rejected[i] = exact[k] > tau
        blk_dec = np.where(rejected, REJECTED, ADMITTED).astype(np.int8)
        blk_wit = np.where(rejected, best_rank, -1)
        blk_sim = np.full(b, np.nan)
        rej_idx = np.flatnonzero(rejected)
        if rej_idx.size:
            blk_sim[rej_idx] = np.einsum("ij,ij->i", xb[rej_idx].astype(np.float64),
                                         adm_vecs[best_rank[rej_idx]].astype(np.float64))
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
    return AdmissionResult(decision, witness, wsim, order, adm_pos[:n_adm].copy(), stats)
