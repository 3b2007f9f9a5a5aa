"""LESS (Xia et al. 2024, "LESS: Selecting Influential Data for Targeted Instruction Tuning").

1. Warm-up: LoRA (attention projections, :data:`curate.defaults.LESS`) on a seeded random ``warmup_fraction``
   of the pool for ``epochs`` epochs with the harness (:func:`curate.train.harness.finetune`); a checkpoint
   and the AdamW moments after each epoch.
2. Features, per checkpoint i: every pool row's Adam-aware LoRA gradient Γ(z, θ_i) and every target
   example's SGD gradient ∇ℓ(z', θ_i), randomly projected to ``projection_dim`` (8192, the paper's) and
   L2-normalised (:mod:`curate.train.gradfeatures`; cached per row on disk).
3. Score: Σ_i η̄_i cos(Γ(z, θ_i), ∇ℓ(z', θ_i)) with η̄_i the mean learning rate of epoch i (weights
   normalised to sum 1), then the max over target examples — or, when target rows carry a ``group`` field
   (e.g. MT-bench ``category``), the paper's rule: mean within each group (subtask), max over groups.
4. The ``less`` selector keeps the top ``fraction`` (default 5%, the paper's) or ``budget`` rows.

Target file: any pool shape :func:`curate.pools.read` reads (alpaca, sharegpt, messages, ...), each record an
example of the task the user cares about, with its answer (the gradient needs response tokens).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.codes import Failure, FailureCode
from curate.defaults import LESS
from curate.errors import CurateError, InputError, OptionError, warn
from curate.hardware import import_torch, resolve_device
from curate.rows import turns
from curate.select.registry import SelectorResult, register
from curate.signals.cache import json_fingerprint
from curate.signals.selectors import answered, keep_all_eligible, rows_to_keep, select_learnability
from curate.signals.template import Prompter, capped_length, check_model_folder
from curate.storage.step import RowInput, StepContext, StepOutput
from curate.train.examples import encode_rows, row_inputs
from curate.train.gradfeatures import (
    FeatureStore,
    PendingRows,
    Projector,
    adam_moments,
    add_gradients,
    group_rows_for,
    lora_linears,
    stored_features,
)
from curate.train.harness import OPTIMIZER_FILE, TrainConfig, TrainRun, finetune, run_folder

__all__ = ["LessConfig", "LessScore", "aggregate", "apply_less", "check_answered", "checkpoint_weights", "less_scores",
           "read_target", "less_selector", "select_less", "similarities", "warmup"]


@dataclass(frozen=True)
class LessConfig:
    """LESS settings (defaults: :data:`curate.defaults.LESS`)."""
    warmup_fraction: float = LESS.warmup_fraction
    epochs: int = LESS.epochs
    learning_rate: float = LESS.learning_rate
    lora_rank: int = LESS.lora_rank
    lora_alpha: float = LESS.lora_alpha
    lora_targets: str = LESS.lora_targets
    max_length: int = LESS.max_length
    projection_dim: int = LESS.projection_dim
    seed: int = LESS.seed
    batch_tokens: int | None = None          # default: LESS.batch_tokens (CPU) / batch_tokens_cuda
    train_batch_size: int | None = None      # warm-up rows per step (default: the harness's)

    def __post_init__(self) -> None:
        if not 0.0 < self.warmup_fraction <= 1.0:
            raise OptionError(f"LESS warmup_fraction must be in (0, 1], got {self.warmup_fraction}")
        if self.projection_dim < 1:
            raise OptionError(f"LESS projection_dim must be >= 1, got {self.projection_dim}")
        if self.batch_tokens is not None and self.batch_tokens < 1:
            raise OptionError(f"LESS batch_tokens must be >= 1, got {self.batch_tokens}")
        self.train_config().check()  # epochs, learning rate, LoRA and length settings, by name

    def train_config(self) -> TrainConfig:
        extra = {"batch_size": self.train_batch_size} if self.train_batch_size else {}
        return TrainConfig(epochs=self.epochs, learning_rate=self.learning_rate, lora_rank=self.lora_rank,
                           lora_alpha=self.lora_alpha, lora_targets=self.lora_targets, max_length=self.max_length,
                           seed=self.seed, record=False, **extra)


def check_answered(rows: Sequence[RowInput], where: str) -> None:
    """Refuse a target none of whose examples has an answered turn (the gradient is the response's), before any
    warm-up; ``where``: the file (or set) named in the error."""
    if not any(t.has_response for r in rows for t in r.turns):
        # bad input data (exit 65), as a target file curate load refuses: every re-run fails until the file changes
        raise InputError(where, f"records 1-{len(rows):,}", f"none of the {len(rows):,} target examples has an "
                         "answered turn (an assistant reply to a user message): LESS takes its gradients on the "
                         "target's responses")


def read_target(path: str | Path, group_field: str | None = None, *, answered: bool = True
                ) -> tuple[list[RowInput], list[str] | None]:
    """The target examples of a file (any shape curate loads) as rows, and each one's group when
    ``group_field`` names a field of the records. ``answered``: refuse a file with no answered turn
    (:func:`check_answered`); False for a caller that counts its unanswered rows itself."""
    from curate.pools import read, row_id

    got = read(path)
    rows = [RowInput(f"target-{k}-{row_id(r['conversation'])}", r["conversation"], turns(r["conversation"]))
            for k, r in enumerate(got.rows)]
    if answered:
        check_answered(rows, str(path))
    if group_field is None:
        return rows, None
    missing = [k for k, r in enumerate(got.rows) if group_field not in r]
    if missing:
        raise InputError(str(path), f"record {missing[0] + 1}", f"no field {group_field!r} (group_field=)")
    return rows, [str(r[group_field]) for r in got.rows]


def warmup(model_dir: Path, pool: Sequence[RowInput], root: Path, config: LessConfig = LessConfig(), *,
           device: str | None = None, progress: Any = None) -> TrainRun:
    """The warm-up LoRA run on a seeded random ``warmup_fraction`` of ``pool`` (resumable, under ``root``)."""
    n = max(1, math.ceil(config.warmup_fraction * len(pool)))
    pick = np.sort(np.random.default_rng(config.seed).choice(len(pool), n, replace=False))
    rows = [pool[i] for i in pick.tolist()]
    tc = config.train_config()
    return finetune(model_dir, rows, run_folder(root, model_dir, rows, tc, device), tc, device=device, progress=progress)


def checkpoint_weights(run: TrainRun) -> list[float]:
    """η̄_i: the mean learning rate of each finished epoch under the harness's linear warm-up and decay
    schedule, normalised to sum 1."""
    c = run.config
    per_epoch = math.ceil(len(run.ids) / c.batch_size)
    total = per_epoch * c.epochs
    warm = int(c.warmup_ratio * total)

    def lr(step: int) -> float:
        if step < warm:
            return step / max(1, warm)
        return max(0.0, (total - step) / max(1, total - warm))

    means = [float(np.mean([lr(s) for s in range((e - 1) * per_epoch, e * per_epoch)]))
             for e in range(1, run.epochs_done + 1)]
    total_w = sum(means)
    if total_w <= 0:
        raise CurateError(f"{run.out_dir}: the learning rate was zero in every epoch")
    return [m / total_w for m in means]


def similarities(train: Sequence[np.ndarray], target: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Σ_i w_i · train_i @ target_iᵀ: [rows, target examples] (normalised features: weighted cosines)."""
    return sum(w * (t @ v.T) for w, t, v in zip(weights, train, target, strict=True))


def aggregate(sims: np.ndarray, groups: Sequence[str] | None = None) -> np.ndarray:
    """One score per row: the max over target examples, or the mean within each group and the max over groups."""
    if groups is None:
        return sims.max(axis=1)
    g = np.asarray(groups)
    return np.stack([sims[:, g == name].mean(axis=1) for name in sorted(set(groups))], axis=1).max(axis=1)


def less_scores(train: Sequence[np.ndarray], target: Sequence[np.ndarray], weights: Sequence[float],
                groups: Sequence[str] | None = None) -> np.ndarray:
    """:func:`aggregate` of :func:`similarities`: the LESS score of each training row."""
    return aggregate(similarities(train, target, weights), groups)


PROJECTION_BLOCK_BEFORE_KEYED = 65536  # LESS.projection_block of every feature key made before it was in the key


def cuda_cache_bytes(device: str) -> int:
    """The projection blocks a CUDA device keeps: ``LESS.projection_cache_bytes_cuda`` (24 GiB, for an H100's 80),
    at most ``LESS.projection_cache_free_share`` of its free memory, so a 24 GB card keeps fewer blocks (generated
    again when needed) instead of running out of memory on the cache alone."""
    free, _total = import_torch().cuda.mem_get_info(device)
    return min(LESS.projection_cache_bytes_cuda, int(free * LESS.projection_cache_free_share))


class _Features:
    """Features of rows at each checkpoint of a warm-up run (model loaded once per checkpoint)."""

    def __init__(self, run: TrainRun, config: LessConfig, device: str, cache: Path):
        self.run, self.config, self.device, self.cache = run, config, device, cache
        cuda = device.startswith("cuda")
        self.batch_tokens = config.batch_tokens or (LESS.batch_tokens_cuda if cuda else LESS.batch_tokens)
        self.cache_bytes = cuda_cache_bytes(device) if cuda else LESS.projection_cache_bytes

    def key(self, epoch: int, kind: str) -> str:
        """Names a checkpoint's features: the run, the rows' kind and all that decides the projection (the block
        draws the random matrix: absent at the block every earlier key was made with, so those keep their names)."""
        key = {"run": self.run.info["fingerprint"], "epoch": epoch, "kind": kind, "dim": self.config.projection_dim,
               "seed": self.config.seed, "device": self.device.split(":")[0], "max_length": self.config.max_length}
        if LESS.projection_block != PROJECTION_BLOCK_BEFORE_KEYED:
            key["projection_block"] = LESS.projection_block
        return json_fingerprint(key)[:24]

    def of(self, parts: Sequence[tuple[Sequence[RowInput], str]], progress: Any = None, pass_bars: bool = False
           ) -> list[tuple[list[np.ndarray], list[str], dict[str, Failure]]]:
        """For each (rows, kind) part ("adam" for pool rows, "sgd" for target rows): per checkpoint the [n, dim]
        features of the rows that encode, their ids, and the other rows' failures. One model load per
        checkpoint; the rows' gradients of every checkpoint and part are projected together (the matrix is the
        same: a pass over it costs ~40 s on 2 CPU cores, and a pass per checkpoint and part made a re-run against a
        new target 4 passes, a 100-row pool 8), up to ``LESS.projection_group_bytes`` of gradients a pass.
        ``progress`` counts the last part's rows in the last checkpoint as they are stored; ``pass_bars``: a bar
        over each part's gradients at each checkpoint, and one over the last projection pass."""
        from curate.storage.progress import progress_bar

        out: list[tuple[list[np.ndarray], list[str], dict[str, Failure]]] = [([], [], {}) for _ in parts]
        stored: list[list[tuple[FeatureStore, list[Any]]]] = [[] for _ in parts]
        projector = pending = None
        for epoch in range(1, self.run.epochs_done + 1):
            model, tok = self.run.load_model(epoch, self.device, trainable=True)
            prompter = Prompter(tok, capped_length(self.config.max_length, model))
            numels = [lin.weight.numel() for lin in lora_linears(model)]
            if projector is None:
                projector = Projector(numels, self.config.projection_dim, self.config.seed, self.device,
                                      LESS.projection_block, self.cache_bytes)
                pending = PendingRows(projector, group_rows_for(numels, LESS.projection_group_bytes))
            elif numels != projector.numels:
                raise CurateError(f"{self.run.out_dir}: checkpoint {epoch}'s LoRA matrices differ from checkpoint 1's")
            pad = tok.pad_token_id if tok.pad_token_id is not None else 0
            for p, (rows, kind) in enumerate(parts):
                examples, skipped = encode_rows(prompter, rows)
                if kind == "sgd" and not examples:
                    raise CurateError("no target example has an answered turn: LESS needs target responses")
                adam = None
                if kind == "adam":
                    adam = adam_moments(self.run.checkpoint(epoch) / OPTIMIZER_FILE, numels, self.device)
                last = epoch == self.run.epochs_done and p == len(parts) - 1
                what = "target" if kind == "sgd" else "pool"
                store = FeatureStore(self.cache / self.key(epoch, kind))
                with progress_bar(len(examples), f"LESS {what} gradients, checkpoint {epoch}/{self.run.epochs_done}",
                                  pass_bars) as bar:
                    add_gradients(model, examples, store, pending, pad_id=pad, device=self.device,
                                  batch_tokens=self.batch_tokens, adam=adam, on_computed=bar.update,
                                  on_stored=progress.update if progress is not None and last else None)
                stored[p].append((store, examples))
                out[p][1][:] = [e.id for e in examples]
                out[p][2].update(skipped)
            del model
        if pending is not None and pending.rows:
            with progress_bar(pending.rows, "LESS projection", pass_bars) as bar:
                bar.update(pending.flush())
        for p, got in enumerate(stored):
            out[p][0].extend(stored_features(store, examples, self.config.projection_dim) for store, examples in got)
        return out


class LessScore:
    """A row step: the LESS score of each row against a target set (column ``less``)."""

    granularity = "row"
    reducer = None
    inputs: tuple[str, ...] = ()

    def __init__(self, run: TrainRun, target: Sequence[RowInput], *, config: LessConfig = LessConfig(),
                 groups: Sequence[str] | None = None, device: str | None = None, column: str = "less",
                 target_name: str | None = None, pass_bars: bool = False):
        self.warm, self.target, self.config, self.groups = run, list(target), config, groups
        self.pass_bars = pass_bars  # a bar over every gradient pass (each checkpoint's), as curate select shows
        self.device = resolve_device(device)
        self.column = column
        self.target_name = target_name
        self.weights = checkpoint_weights(run)

    def fingerprint(self) -> str:
        return json_fingerprint({"method": "less", "run": self.warm.info["fingerprint"],
                                 "epochs": self.warm.epochs_done, "config": asdict(self.config),
                                 "target": [[r.id, r.conversation] for r in self.target], "groups": self.groups,
                                 "device": self.device.split(":")[0]})

    def describe(self) -> dict[str, Any]:
        return {"kind": "less", "paper": "Xia et al. 2024", "target": self.target_name,
                "target_rows": len(self.target), "aggregate": "group mean, max over groups" if self.groups
                else "max over target examples", "checkpoint_weights": self.weights,
                "gradient": "Adam-aware (pool) / SGD (target) LoRA gradients", **asdict(self.config),
                "warmup": self.warm.describe()}

    def similarities(self, rows: Sequence[RowInput], cache_dir: Path, progress: Any = None
                     ) -> tuple[list[str], np.ndarray, list[str], dict[str, Failure]]:
        """(ids of the rows that encode, their [n, target] weighted cosines, the target ids that encode, the
        other rows' failures by id). The target examples that do not encode are kept in ``target_left_out``."""
        feats = _Features(self.warm, self.config, self.device, Path(cache_dir) / "train" / "less" / "features")
        (target, tids, left_out), (train, ids, skipped) = feats.of([(self.target, "sgd"), (rows, "adam")], progress,
                                                                   self.pass_bars)
        self.target_left_out = left_out
        sims = similarities(train, target, self.weights) if ids else np.zeros((0, len(tids)))
        return ids, sims, tids, skipped

    def left_out_stats(self) -> dict[str, Any]:
        """The target examples without a gradient (no answered turn, too long...): counts by failure code and
        the first few ids, so a partly answered target file is said, not scored on its answered part in silence."""
        left = getattr(self, "target_left_out", {})
        records = sorted(k + 1 for k, r in enumerate(self.target) if r.id in left)
        return {"target_rows_used": len(self.target) - len(left),
                "target_left_out": {"rows": len(left), "codes": dict(Counter(f.code for f in left.values())),
                                    "records": records[:LESS.left_out_examples]}}

    def target_groups(self, tids: Sequence[str]) -> list[str] | None:
        """The groups of the target examples ``tids`` (those that encode), or None."""
        if self.groups is None:
            return None
        by_id = {t.id: g for t, g in zip(self.target, self.groups, strict=True)}
        return [by_id[i] for i in tids]

    def scores(self, rows: Sequence[RowInput], cache_dir: Path, progress: Any = None
               ) -> tuple[dict[str, float], dict[str, Failure]]:
        """LESS score by row id, and the rows without one (why)."""
        ids, sims, tids, skipped = self.similarities(rows, cache_dir, progress)
        vals = aggregate(sims, self.target_groups(tids)) if ids else np.zeros(0)
        return dict(zip(ids, vals.tolist(), strict=True)), skipped

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        got, skipped = self.scores(rows, ctx.cache_dir, ctx.progress)
        values = [got.get(r.id) for r in rows]
        failures = [[skipped[r.id]] if r.id in skipped else [] for r in rows]
        return StepOutput(values, failures, stats={"target_rows": len(self.target), **self.left_out_stats()})


def _pool_rows(ws) -> list[RowInput]:
    return ws.row_inputs(ws.ids)


def apply_less(ws, target: str | Path, *, model: str | Path | None = None, config: LessConfig = LessConfig(),
               group_field: str | None = None, device: str | None = None, ids: list[str] | None = None,
               column: str = "less", pass_bars: bool = False, **apply_kwargs: Any):
    """Warm up on the workspace's pool (cached under its cache folder), then ``ws.apply`` the LESS step for
    ``ids`` (default: every row). ``pass_bars``: bars over the warm-up and over each gradient pass. Returns the
    ApplyResult."""
    from curate.signals.engine import default_model_dir

    model_dir = Path(model) if model is not None else default_model_dir()
    rows, groups = read_target(target, group_field)
    run = warmup(model_dir, _pool_rows(ws), ws.cache_dir / "train" / "less", config, device=device,
                 progress=pass_bars or None)
    step = LessScore(run, rows, config=config, groups=groups, device=device, column=column,
                     target_name=str(target), pass_bars=pass_bars)
    applied = ws.apply(step, ids, **apply_kwargs)
    _warn_left_out(target, applied.provenance.get("target_left_out") or {})
    return applied


def _warn_left_out(target: str | Path, left: dict[str, Any]) -> None:
    """Tell a Python caller of the target records matched to nothing (``curate select`` prints its own note)."""
    if not left.get("rows"):
        return
    codes = ", ".join(f"{code} {n:,}" for code, n in left["codes"].items())
    records = ", ".join(str(k) for k in left["records"])
    more = "…" if left["rows"] > len(left["records"]) else ""
    warn(f"{target}: {left['rows']:,} target record(s) have no gradient and were left out ({codes}; record "
         f"{records}{more}): LESS matches the rows to the other target records")


def select_less(model_dir: str | Path, pool: Sequence[RowInput], target: Sequence[RowInput], size: int,
                cache_dir: str | Path, *, config: LessConfig = LessConfig(), groups: Sequence[str] | None = None,
                device: str | None = None, progress: Any = None) -> tuple[list[str], dict[str, float]]:
    """LESS without a workspace (for evals): the ``size`` best pool row ids (best first, ties by id) and every
    scored row's score. Warm-up run and features are cached under ``cache_dir``."""
    cache_dir, pool, target = Path(cache_dir), row_inputs(pool), row_inputs(target)
    check_answered(target, "target")
    run = warmup(Path(model_dir), pool, cache_dir / "train" / "less", config, device=device)
    step = LessScore(run, target, config=config, groups=groups, device=device)
    scores, _ = step.scores(pool, cache_dir, progress)
    ranked = sorted(scores, key=lambda i: (-scores[i], i))
    return ranked[:size], scores


@register("less")
def less_selector(ws, rows: np.ndarray, target: str | Path, budget: int | None = None, fraction: float | None = None,
                  model: str | None = None, group_field: str | None = None, device: str | None = None,
                  column: str = "less", epochs: int = LESS.epochs, projection_dim: int = LESS.projection_dim,
                  warmup_fraction: float = LESS.warmup_fraction, learning_rate: float = LESS.learning_rate,
                  seed: int = LESS.seed) -> SelectorResult:
    """LESS: score the candidates against the examples in ``target`` (a file; see the module doc), then keep
    the ``budget`` best rows or the top ``fraction`` (default: 5%, the paper's)."""
    config = LessConfig(warmup_fraction=warmup_fraction, epochs=epochs, projection_dim=projection_dim,
                        learning_rate=learning_rate, seed=seed)
    from curate.select.progress import progress_shown

    keep = rows_to_keep(len(rows), budget, fraction if budget is not None or fraction is not None else LESS.fraction)
    read_target(target, group_field)  # a bad target file is refused whether or not the model runs
    # a budget that keeps every row LESS can score (an answered turn: the gradient is the response's) needs no model
    if (out := keep_all_eligible(ws, rows, answered(ws, rows), keep, skipped="LESS's warm-up and gradient features",
                                 unscored={"column": column, "failure": FailureCode.NO_RESPONSE.value})) is not None:
        if model is not None:
            check_model_folder(model)  # refused as the warm-up would refuse it, though none runs
        out.info.update(method="less", target=str(target))
        return out
    applied = apply_less(ws, target, model=model, config=config, group_field=group_field, device=device,
                         ids=[ws.ids[p] for p in rows.tolist()], column=column, progress=False,
                         pass_bars=progress_shown())  # minutes of warm-up and gradients: shown where curate select shows
    if budget is None and fraction is None:
        fraction = LESS.fraction
    out = select_learnability(ws, rows, budget=budget, fraction=fraction, column=column)
    out.info.update(method="less", target=str(target), fingerprint=applied.provenance.get("fingerprint"),
                    target_left_out=applied.provenance.get("target_left_out"))
    return out
