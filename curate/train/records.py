"""Per-row training records, computed from the training forward pass of each batch (no extra forward).

For one row with response tokens i = 1..n (gold token y_i, softmax p_i over the vocabulary, final hidden
state h_i that the output head reads), recorded in the epoch the row is trained in, before that step's update:

- ``loss``: mean NLL, −(1/n) Σ log p_i[y_i];
- ``gold_prob``: mean gold-token probability (1/n) Σ p_i[y_i] (Cartography's confidence per epoch);
- ``token_accuracy``: share of tokens where argmax p_i = y_i;
- ``el2n``: mean per-token error norm (1/n) Σ ‖p_i − e_{y_i}‖₂ (Data Diet's EL2N, per token then averaged);
- ``grad_norm``: the exact norm of the gradient of the row's mean loss with respect to the output-head
  weight matrix W (logits = W h), in closed form: ‖(1/n) Σ (p_i − e_{y_i}) h_iᵀ‖_F =
  (1/n) √(Σ_ij ⟨g_i, g_j⟩⟨h_i, h_j⟩) with g_i = p_i − e_{y_i}. This is Data Diet's GraNd restricted to the
  last layer (the layer whose gradient the error vector drives directly; for a tied head, the output use of
  the embedding only). It costs one n×V by V×n product per row and needs no per-example backward pass.

Records are stored per epoch as ``records.npz`` (``id`` plus the five float64 arrays, aligned to the run's ids).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import WorkspaceError
from curate.hardware import import_torch
from curate.storage.files import atomic_write_with

RECORD_KEYS = ("loss", "gold_prob", "token_accuracy", "el2n", "grad_norm")
RECORDS_FILE = "records.npz"


def batch_records(logits: Any, hidden: Any, targets: Any, bounds: list[tuple[int, int]],
                  grad_norm: bool = True) -> dict[str, np.ndarray]:
    """The five records of each example in a batch (see the module doc). ``logits`` [T, V] and ``hidden``
    [T, d] are the flattened response positions, ``targets`` [T], ``bounds`` each example's [start, end)."""
    torch = import_torch()
    out = {k: np.empty(len(bounds), dtype=np.float64) for k in RECORD_KEYS}
    with torch.no_grad():
        for b, (s, e) in enumerate(bounds):
            lg = logits[s:e].detach().float()
            y = targets[s:e]
            logp = torch.log_softmax(lg, dim=-1)
            p = logp.exp()
            lp_gold = logp.gather(1, y[:, None])[:, 0]
            p_gold = lp_gold.exp()
            err = p
            err[torch.arange(len(y), device=err.device), y] -= 1.0  # g_i = p_i - e_{y_i} (p is not reused)
            el2n = err.norm(dim=-1)
            out["loss"][b] = float(-lp_gold.mean())
            out["gold_prob"][b] = float(p_gold.mean())
            out["token_accuracy"][b] = float((lg.argmax(-1) == y).float().mean())
            out["el2n"][b] = float(el2n.mean())
            if grad_norm:
                h = hidden[s:e].detach().float()
                sq = ((err @ err.T) * (h @ h.T)).sum().clamp_min(0.0)
                out["grad_norm"][b] = float(sq.sqrt()) / (e - s)
            else:
                out["grad_norm"][b] = np.nan
    return out


def save_records(folder: Path, ids: list[str], records: dict[str, np.ndarray]) -> Path:
    """Write ``records.npz`` into ``folder`` atomically (a failed write names it, leaving no part of it)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RECORDS_FILE
    arrays = {"id": np.asarray(ids, dtype=str), **{k: np.asarray(records[k], dtype=np.float64) for k in RECORD_KEYS}}
    atomic_write_with(path, lambda fh: np.savez(fh, **arrays))
    return path


def load_records(folder: Path) -> dict[str, np.ndarray]:
    """``{"id": str array, "loss": ..., "gold_prob": ..., "token_accuracy": ..., "el2n": ..., "grad_norm": ...}``."""
    path = folder / RECORDS_FILE
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in ("id", *RECORD_KEYS)}
    except (ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:  # a missing file stays FileNotFoundError
        raise WorkspaceError(f"{path}: a damaged training record file ({exc}); remove the run's folder "
                             f"{folder.parent} and train it again") from None
