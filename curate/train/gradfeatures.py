"""Per-row LoRA gradient features, randomly projected (LESS's Γ and ∇ℓ), cached on disk per row.

One batched backward per padded batch gives every row's exact LoRA gradient: each LoRA matrix is an
``nn.Linear`` whose per-row gradient is ``Σ_t grad_out[b, t] ⊗ input[b, t]`` (hooks keep both; the loss is
the sum of the rows' mean response-token NLLs, so ``grad_out[b]`` is row b's own). Training rows get LESS's
Adam-aware transform with the warm-up checkpoint's AdamW moments ``m, v``:
``(β1 m + (1-β1) g) / sqrt(β2 v + (1-β2) g² + ε)``; target rows get the plain (SGD) gradient. Features are
projected with a seeded Rademacher matrix (entries ±1/√dim) generated block by block (``block`` gradient
coordinates at a time, each block from its own seed: memory stays bounded and any batch gets the same
matrix). Generating the matrix is the cost (SmolLM2's ~0.9M LoRA coordinates x 8192: ~40 s on a CPU core),
so the rows of several batches, and of several checkpoints and feature stores (:class:`PendingRows`: LESS's
target and pool rows at every checkpoint), are projected together (a group of bounded bytes), each block generated
once per group. Features are L2-normalised, stored as float16 ``part-*.npz`` files of (ids, features) in a cache
folder before use, one part per group and store; a killed run reloads the parts and computes only the rows missing
(at most one group's backward passes are redone).
"""

from __future__ import annotations

import hashlib
import threading
import uuid
import zipfile
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import CurateError, WorkspaceError
from curate.hardware import import_torch
from curate.signals.engine import batches
from curate.storage.files import atomic_write_with
from curate.train.examples import Example, collate


def lora_linears(model: Any) -> list[Any]:
    """Every LoRA matrix (``lora_A`` / ``lora_B`` linear of each adapted module), in the order of the model's
    trainable parameters; an error if any trainable parameter is not one of them."""
    torch = import_torch()
    found = []
    for _, mod in model.named_modules():
        la, lb = getattr(mod, "lora_A", None), getattr(mod, "lora_B", None)
        if isinstance(la, torch.nn.ModuleDict) and isinstance(lb, torch.nn.ModuleDict):
            for key in la:
                if la[key].weight.requires_grad:
                    found += [la[key], lb[key]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    by_param = {id(m.weight): m for m in found}
    if len(trainable) != len(found) or any(id(p) not in by_param for p in trainable):
        raise CurateError("LESS needs a peft LoRA model whose only trainable parameters are the LoRA matrices")
    return [by_param[id(p)] for p in trainable]


class Projector:
    """``x @ R`` for a seeded Rademacher ``R`` (±1/√dim) over the concatenated coordinates of ``numels``."""

    def __init__(self, numels: Sequence[int], dim: int, seed: int, device: str, block: int, cache_bytes: int,
                 threads: int | None = None):
        torch = import_torch()
        # blocks generated at once: torch's CPU threads (a generator runs on one core); 1 on CUDA
        self.threads = threads or (1 if device.startswith("cuda") else max(1, torch.get_num_threads()))
        self.dim, self.seed, self.device, self.block = dim, seed, device, block
        self.dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.numels = list(numels)
        per = dim * (2 if self.dtype == torch.bfloat16 else 4)
        self.cache_rows = cache_bytes // per
        self._cache: dict[tuple[int, int], Any] = {}
        self._cached_rows = 0
        self._lock = threading.Lock()

    def _block(self, j: int, start: int, rows: int) -> Any:
        """Block ``start`` of parameter ``j``'s rows of the matrix, from its own seed (safe to call from threads)."""
        torch = import_torch()
        key = (j, start)
        if key in self._cache:
            return self._cache[key]
        digest = hashlib.sha256(f"{self.seed}:{j}:{start}".encode()).hexdigest()
        gen = torch.Generator(device=self.device).manual_seed(int(digest[:15], 16))
        mat = torch.randint(0, 2, (rows, self.dim), generator=gen, device=self.device, dtype=self.dtype)
        mat = mat.mul_(2).sub_(1)
        with self._lock:
            if self._cached_rows + rows <= self.cache_rows:
                self._cache[key] = mat
                self._cached_rows += rows
        return mat

    def project(self, grads: Sequence[Any]) -> Any:
        """[B, dim] float32 from per-parameter gradients ``grads[j]`` of shape [B, numels[j]]."""
        return self.project_parts([grads])

    def project_parts(self, parts: Sequence[Sequence[Any]]) -> Any:
        """:meth:`project` of the rows of several batches at once (``parts[k][j]``: batch k's gradients of
        parameter j), each projection block generated once for all of them: [Σ B_k, dim] float32. On the CPU
        the next blocks are generated on other threads (one generator is one core) while this one multiplies;
        the sum runs in the same order either way."""
        torch = import_torch()
        out = torch.zeros((sum(p[0].shape[0] for p in parts), self.dim), device=self.device, dtype=torch.float32)
        blocks = [(j, start, min(self.block, n - start)) for j, n in enumerate(self.numels)
                  for start in range(0, n, self.block)]
        workers = self.threads
        with ThreadPoolExecutor(workers) as pool:
            ahead = deque(pool.submit(self._block, *b) for b in blocks[:workers])  # bounded: workers blocks ahead
            g, g_of = None, -1
            for k, (j, start, rows) in enumerate(blocks):
                mat = ahead.popleft().result()
                if k + workers < len(blocks):
                    ahead.append(pool.submit(self._block, *blocks[k + workers]))
                if j != g_of:
                    g, g_of = torch.cat([p[j].to(self.dtype) for p in parts]), j
                out += (g[:, start:start + rows] @ mat).float()
        return out / float(np.sqrt(self.dim))


class _Capture:
    """Forward hooks keeping each LoRA linear's input and (through a tensor hook) its output's gradient."""

    def __init__(self, linears: Sequence[Any]):
        self.inputs: list[Any] = [None] * len(linears)
        self.grads: list[Any] = [None] * len(linears)
        self.handles = [lin.register_forward_hook(self._hook(i)) for i, lin in enumerate(linears)]

    def _hook(self, i: int) -> Callable[..., None]:
        def fn(module: Any, args: tuple, output: Any) -> None:
            self.inputs[i] = args[0].detach()

            def keep(grad: Any) -> None:
                self.grads[i] = grad.detach()

            output.register_hook(keep)
        return fn

    def per_row(self) -> list[Any]:
        """[B, out*in] float32 per linear: Σ_t grad_out ⊗ input, row by row."""
        torch = import_torch()
        out = []
        for x, g in zip(self.inputs, self.grads, strict=True):
            if g is None:
                raise CurateError("a LoRA matrix got no gradient (is the adapter active?)")
            out.append(torch.einsum("bto,bti->boi", g.float(), x.float()).reshape(x.shape[0], -1))
        return out

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def adam_moments(optimizer_file: Path, numels: Sequence[int], device: str) -> tuple[list[Any], list[Any], dict]:
    """Per-parameter (exp_avg, exp_avg_sq) flattened, and the AdamW hyper-parameters, from the harness's
    ``optimizer.pt`` (parameters in the order of the model's trainable parameters)."""
    torch = import_torch()
    state = torch.load(optimizer_file, map_location=device, weights_only=True)["optimizer"]
    group = state["param_groups"][0]
    order = [i for g in state["param_groups"] for i in g["params"]]
    if len(order) != len(numels):
        raise CurateError(f"{optimizer_file}: {len(order)} optimizer parameters for {len(numels)} LoRA matrices")
    m, v = [], []
    for k, n in zip(order, numels, strict=True):
        s = state["state"].get(k)
        if s is None or s["exp_avg"].numel() != n:
            raise CurateError(f"{optimizer_file}: no Adam moments matching LoRA matrix {k}")
        m.append(s["exp_avg"].reshape(-1).float())
        v.append(s["exp_avg_sq"].reshape(-1).float())
    return m, v, {"betas": tuple(group["betas"]), "eps": float(group["eps"])}


def head_nll(model: Any, batch: Any) -> Any:
    """Per-target NLL at the batch's response positions (backbone once, output head on those positions)."""
    torch = import_torch()
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = inner.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    logits = inner.get_output_embeddings()(hidden[batch.rows, batch.cols])
    return torch.nn.functional.cross_entropy(logits.float(), batch.targets, reduction="none")


class FeatureStore:
    """Normalised float16 features by row id in ``folder`` (``part-*.npz``, written atomically)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rows: dict[str, np.ndarray] = {}
        for part in sorted(self.folder.glob("part-*.npz")):
            try:
                with np.load(part, allow_pickle=False) as z:
                    self.rows.update(zip(z["ids"].tolist(), z["features"], strict=True))
            except (ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:  # not OSError: unreadable is not damaged
                raise WorkspaceError(f"{part}: a damaged file of the LESS feature cache ({exc}); remove it: its "
                                     "rows' features are computed again when next asked for") from None

    def add(self, ids: Sequence[str], features: np.ndarray) -> None:
        path = self.folder / f"part-{uuid.uuid4().hex}.npz"  # a failed write names it, leaving no part of it
        arrays = {"ids": np.asarray(ids, dtype=str), "features": features.astype(np.float16)}
        atomic_write_with(path, lambda fh: np.savez(fh, **arrays))
        self.rows.update(zip(ids, features.astype(np.float16), strict=True))


class PendingRows:
    """Per-row gradients waiting for a pass over the projection: rows of any batches, checkpoints and feature stores
    (the matrix is the same for all of them), projected together so each block is generated once for them all, at
    most ``limit`` rows at a time; each store gets its rows' features before any use (one part per pass)."""

    def __init__(self, projector: Projector, limit: int):
        self.projector, self.limit = projector, max(1, limit)
        self.items: list[tuple[FeatureStore, list[str], list[Any], Callable[[int], Any] | None]] = []

    @property
    def rows(self) -> int:
        return sum(len(ids) for _, ids, _, _ in self.items)

    def add(self, store: FeatureStore, ids: Sequence[str], grads: list[Any],
            on_stored: Callable[[int], Any] | None = None) -> None:
        """Queue one batch's gradients (a pass first when they would not fit)."""
        if self.items and self.rows + len(ids) > self.limit:
            self.flush()
        self.items.append((store, list(ids), grads, on_stored))

    def flush(self) -> int:
        """Project the queued rows in one pass and store them; returns how many."""
        if not self.items:
            return 0
        torch = import_torch()
        items, self.items = self.items, []
        feats = torch.nn.functional.normalize(self.projector.project_parts([g for _, _, g, _ in items]), dim=1)
        feats = feats.cpu().numpy()
        by_store: dict[int, tuple[FeatureStore, list[str], list[np.ndarray]]] = {}
        at = 0
        for store, ids, _, _ in items:
            _, got_ids, got = by_store.setdefault(id(store), (store, [], []))
            got_ids.extend(ids)
            got.append(feats[at:at + len(ids)])
            at += len(ids)
        for store, ids, got in by_store.values():
            store.add(ids, np.concatenate(got))
        for _, ids, _, on_stored in items:
            if on_stored is not None:
                on_stored(len(ids))
        return at


def add_gradients(model: Any, examples: Sequence[Example], store: FeatureStore, pending: PendingRows, *,
                  pad_id: int, device: str, batch_tokens: int, adam: tuple | None = None,
                  on_computed: Callable[[int], Any] | None = None,
                  on_stored: Callable[[int], Any] | None = None) -> None:
    """Queue on ``pending`` the per-row gradients of the ``examples`` that ``store`` lacks, in length-bucketed
    batches (``adam``: (m, v, hyper) for training rows). ``on_computed(n)`` after each batch's backward;
    ``on_stored(n)`` once its rows are stored. Rows already stored count for both at once."""
    torch = import_torch()
    linears = lora_linears(model)
    missing = [i for i, e in enumerate(examples) if e.id not in store.rows]
    for done in (on_computed, on_stored):
        if done is not None and len(examples) > len(missing):
            done(len(examples) - len(missing))
    if not missing:
        return
    order = sorted(missing, key=lambda i: -examples[i].length)
    cuda = device.startswith("cuda")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if cuda and torch.cuda.is_bf16_supported() else None
    model.eval()
    for index in batches(examples, order, batch_tokens, max_batch=len(order)):
        grads = _row_gradients(model, linears, collate(examples, index, pad_id, device), autocast, adam)
        pending.add(store, [examples[i].id for i in index], grads, on_stored)
        if on_computed is not None:
            on_computed(len(index))


def stored_features(store: FeatureStore, examples: Sequence[Example], dim: int) -> np.ndarray:
    """[n, dim] float32 features of ``examples`` from ``store`` (every one stored)."""
    if not examples:
        return np.zeros((0, dim), np.float32)
    return np.stack([store.rows[e.id] for e in examples]).astype(np.float32)


def gradient_features(model: Any, examples: Sequence[Example], store: FeatureStore, projector: Projector, *,
                      pad_id: int, device: str, batch_tokens: int, adam: tuple | None = None,
                      group_rows: int | None = None, on_done: Callable[[int], Any] | None = None) -> np.ndarray:
    """Features of ``examples`` ([n, dim] float32, L2-normalised), from ``store`` where present, else computed
    in length-bucketed batches. ``adam``: (m, v, hyper) for training rows. The per-row gradients of consecutive
    batches are gathered up to ``group_rows`` rows (default: all of them) and projected together, so each
    projection block is generated once per group, not once per batch; each group is stored before use."""
    pending = PendingRows(projector, group_rows if group_rows is not None else len(examples))
    add_gradients(model, examples, store, pending, pad_id=pad_id, device=device, batch_tokens=batch_tokens,
                  adam=adam, on_stored=on_done)
    pending.flush()
    return stored_features(store, examples, projector.dim)


def _row_gradients(model: Any, linears: Sequence[Any], batch: Any, autocast: Any, adam: tuple | None) -> list[Any]:
    """Each row's LoRA gradient of one padded batch, per LoRA matrix ([B, numel]); Adam-aware with ``adam``."""
    torch = import_torch()
    capture = _Capture(linears)
    try:
        if autocast is not None:
            with autocast:
                nll = head_nll(model, batch)
        else:
            nll = head_nll(model, batch)
        loss = sum(nll[s:e].mean() for s, e in batch.bounds)
        loss.backward()
        grads = capture.per_row()
    finally:
        capture.close()
        model.zero_grad(set_to_none=True)
    if adam is not None:
        m, v, hyper = adam
        (b1, b2), eps = hyper["betas"], hyper["eps"]
        grads = [(b1 * mj + (1 - b1) * g) / torch.sqrt(b2 * vj + (1 - b2) * g * g + eps)
                 for g, mj, vj in zip(grads, m, v, strict=True)]
    return grads


def group_rows_for(numels: Sequence[int], group_bytes: int) -> int:
    """Rows of float32 per-row gradients over ``numels`` coordinates that fit ``group_bytes`` (at least 1)."""
    return max(1, group_bytes // (4 * sum(numels)))
