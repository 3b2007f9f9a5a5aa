"""How the admission loop computes similarities: numpy float32, a bfloat16 screen, or torch.

The loop (:mod:`curate.select.admission`) owns the decisions; a *products* object only answers two
questions per block of candidates, and is told which candidates were admitted:

* ``best(xb, n_adm)``: each candidate's largest similarity to the ``n_adm`` rows admitted before the
  block, and the admission rank of that row (exact where it can decide a row; see each class);
* ``conflicts(surv, xs)``: the survivors that have an earlier block-mate above ``tau - FLOAT32_MARGIN``,
  with their rows of the survivors' lower-triangular Gram matrix;
* ``added(ranks, new, xb)``: block rows ``new`` were admitted with admission ``ranks``.

Any implementation gives the same decisions (the loop rechecks near ``tau`` in float64); they differ in
speed only. ``evals/admission_prune.py`` holds two exact pruning variants that did not pay.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

FLOAT32_MARGIN = 1e-4  # float32 dot products of 384-d unit vectors are off by far less than this
# bfloat16 screen: unit inputs rounded to bf16 (unit roundoff u = 2^-8) move a dot product by at most
# 2u + u^2 ~ 0.0078 (Cauchy-Schwarz); float32 accumulation adds < 1e-4 and rounding the output to bf16 at most
# u * |s| ~ 0.0039. So |bf16 - exact| < 0.012; the margin below leaves room on top. Measured: <= 0.0027.
BF16_MARGIN = 0.02
CHUNK = 1024  # candidates per product: bounds its memory (CHUNK x budget floats)


class Float32Products:
    """Plain blocked products in numpy float32 against the loop's admitted buffer ``adm`` (cap x dim)."""

    precision = "float32"

    def __init__(self, adm: np.ndarray, tau: float):
        self.adm = adm
        self.tau = tau

    def start_block(self, xb: np.ndarray) -> None:
        """Called with each block's unit rows before ``best``/``conflicts``."""

    def best(self, xb: np.ndarray, n_adm: int) -> tuple[np.ndarray, np.ndarray, int]:
        b = len(xb)
        best = np.full(b, -np.inf, np.float32)
        best_rank = np.full(b, -1, np.int64)
        computed = 0
        for c0 in range(0, b, CHUNK):
            sims = xb[c0:c0 + CHUNK] @ self.adm[:n_adm].T
            arg = np.argmax(sims, axis=1)
            best_rank[c0:c0 + CHUNK] = arg
            best[c0:c0 + CHUNK] = sims[np.arange(len(arg)), arg]
            computed += sims.size
        return best, best_rank, computed

    def conflicts(self, surv: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        g = np.tril(xs @ xs.T, -1)
        conflict_rows = np.flatnonzero((g > self.tau - FLOAT32_MARGIN).any(axis=1))
        return conflict_rows, g[conflict_rows], len(xs) * (len(xs) - 1) // 2

    def added(self, ranks: np.ndarray, new: np.ndarray, xb: np.ndarray) -> None:
        """The loop already wrote ``adm[ranks] = xb[new]``."""


class Bf16Products(Float32Products):
    """Products against the admitted set in bfloat16 as a screen (about 6x faster than float32 on CPUs
    with AVX512-BF16/AMX); rows the screen cannot decide are recomputed in float32."""

    precision = "bf16 screen + float32/64 recheck"

    def __init__(self, adm: np.ndarray, tau: float):
        import torch

        super().__init__(adm, tau)
        self.torch = torch
        self.adm16 = torch.empty(adm.shape, dtype=torch.bfloat16)

    def best(self, xb: np.ndarray, n_adm: int) -> tuple[np.ndarray, np.ndarray, int]:
        """Rows whose bf16 maximum is below ``tau - BF16_MARGIN`` are clear; rows above ``tau + BF16_MARGIN``
        are rejected with the bf16 argmax as witness (its exact similarity is > tau); the rows in between are
        recomputed in float32 against the whole admitted set (and the loop rechecks near tau in float64).
        The maxima are exact for those rows; for the others they only need to be on the right side."""
        tau = self.tau
        adm16, adm_vecs = self.adm16[:n_adm], self.adm[:n_adm]
        b = len(xb)
        best = np.empty(b, np.float32)
        best_rank = np.empty(b, np.int64)
        computed = 0
        x16 = self.torch.from_numpy(xb).to(self.torch.bfloat16)
        for c0 in range(0, b, CHUNK):
            m, a = (x16[c0:c0 + CHUNK] @ adm16.T).max(dim=1)
            best[c0:c0 + CHUNK] = m.float().numpy()
            best_rank[c0:c0 + CHUNK] = a.numpy()
            computed += min(CHUNK, b - c0) * adm16.shape[0]
        band = np.flatnonzero(np.abs(best - tau) <= BF16_MARGIN)
        if band.size:
            sims = xb[band] @ adm_vecs.T
            arg = np.argmax(sims, axis=1)
            best[band], best_rank[band] = sims[np.arange(band.size), arg], arg
            computed += sims.size
        clear = best < tau - BF16_MARGIN
        best[clear] = np.minimum(best[clear], tau - 2 * FLOAT32_MARGIN)  # below every float32 threshold used later
        return best, best_rank, computed

    def added(self, ranks: np.ndarray, new: np.ndarray, xb: np.ndarray) -> None:
        if new.size:
            self.adm16[ranks] = self.torch.from_numpy(xb[new]).to(self.torch.bfloat16)


class TorchProducts(Float32Products):
    """Full products with torch on ``device`` (e.g. a GPU; ``"torch:cpu"`` runs this path on the CPU)."""

    def __init__(self, adm: np.ndarray, tau: float, device: str):
        import torch

        super().__init__(adm, tau)
        self.torch = torch
        self.dev = torch.device(device.removeprefix("torch:"))
        self.t_adm = torch.empty(adm.shape, dtype=torch.float32, device=self.dev)

    def best(self, xb: np.ndarray, n_adm: int) -> tuple[np.ndarray, np.ndarray, int]:
        sims = self.torch.from_numpy(xb).to(self.dev) @ self.t_adm[:n_adm].T
        m, a = sims.max(dim=1)
        return m.cpu().numpy(), a.cpu().numpy().astype(np.int64), len(xb) * n_adm

    def conflicts(self, surv: np.ndarray, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        torch = self.torch
        ts = torch.from_numpy(xs).to(self.dev)
        g = torch.tril(ts @ ts.T, diagonal=-1)
        crow = torch.nonzero((g > self.tau - FLOAT32_MARGIN).any(dim=1)).flatten()
        return crow.cpu().numpy(), g[crow].cpu().numpy(), len(xs) * (len(xs) - 1) // 2

    def added(self, ranks: np.ndarray, new: np.ndarray, xb: np.ndarray) -> None:
        if new.size:
            self.t_adm[int(ranks[0]):int(ranks[0]) + new.size] = self.torch.from_numpy(xb[new]).to(self.dev)


_BF16_FASTER: bool | None = None


def bf16_is_faster() -> bool:
    """Whether torch multiplies bfloat16 clearly faster than float32 on this CPU (probed once, ~0.1 s)."""
    global _BF16_FASTER
    if _BF16_FASTER is None:
        try:
            import torch
        except ImportError:
            _BF16_FASTER = False
            return False
        a, c = torch.randn(512, 384), torch.randn(8192, 384)
        timings = {}
        for dtype in (torch.float32, torch.bfloat16):
            x, y = a.to(dtype), c.to(dtype)
            x @ y.T  # warm-up
            t = time.perf_counter()
            for _ in range(3):
                x @ y.T
            timings[dtype] = time.perf_counter() - t
        _BF16_FASTER = timings[torch.bfloat16] * 1.5 < timings[torch.float32]
    return _BF16_FASTER


def default_products(adm: np.ndarray, tau: float, cap: int, device: str, precision: str) -> Any:
    """The products for ``device`` (numpy on "cpu", else torch) and ``precision`` ("auto": the bf16 screen
    when this CPU multiplies bf16 measurably faster and the budget is large enough to pay for it)."""
    if precision not in ("auto", "float32", "bf16"):
        raise ValueError(f"precision must be 'auto', 'float32' or 'bf16', not {precision!r}")
    if device != "cpu":
        return TorchProducts(adm, tau, device)
    if cap > 1 and (precision == "bf16" or (precision == "auto" and cap >= 2048 and bf16_is_faster())):
        return Bf16Products(adm, tau)
    return Float32Products(adm, tau)
