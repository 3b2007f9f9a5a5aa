"""Checkpoints of a training run: each epoch's (:func:`save_epoch`) and mid-epoch ones, so that a killed run resumes
at its last saved optimizer step, not at the start of its unfinished epoch.

Every ``TRAIN.checkpoint_seconds`` of training (or every ``checkpoint_steps`` optimizer steps, when the caller asks)
the harness writes ``step-<epoch>-<step>/`` into the run folder: the checkpoint (the peft adapter, or the full
weights), ``optimizer.pt`` (AdamW moments, the scheduler, torch's random state) and ``position.npz`` (the per-row
records of the epoch so far, NaN for rows not yet trained, and each step's loss). ``run.json``'s ``partial`` entry
names the folder and the step: the epoch's batch order is a function of the seed and the epoch
(:func:`curate.train.examples.epoch_batches`), so the step is the position in the data. A resume loads the folder and
trains the epoch's remaining batches: the same records, checkpoints and losses as a run never stopped.

The folder is written through a temporary ``.step-...`` one and renamed; only once ``run.json`` names it is the
previous one removed. A folder that ``run.json`` does not name (a kill between the rename and the record) is removed
when the run resumes, under the run folder's lock.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from curate.errors import WorkspaceError
from curate.hardware import import_torch
from curate.quiet import quiet_transformers
from curate.storage.files import STALE_LEFTOVER_S, newest_mtime, remove, torch_save, writing
from curate.storage.write_errors import fsync_path
from curate.train.records import RECORD_KEYS, save_records
from curate.train.runfile import write_run_json

OPTIMIZER_FILE = "optimizer.pt"
POSITION_FILE = "position.npz"
PREFIX = "step-"


def save_partial(out_dir: Path, epoch: int, step: int, model: Any, opt: Any, sched: Any,
                 rec: dict[str, np.ndarray], losses: list[float]) -> str:
    """Write ``step-<epoch>-<step>/`` (checkpoint, optimizer and random state, records and losses so far) through a
    temporary folder; returns its name, for ``run.json``'s ``partial`` entry."""
    name = f"{PREFIX}{epoch}-{step}"
    final = out_dir / name
    tmp = out_dir / f".{name}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    with writing(final, tmp), quiet_transformers():
        model.save_pretrained(str(tmp))
        torch_save(training_state(opt, sched), tmp / OPTIMIZER_FILE)
        with open(tmp / POSITION_FILE, "wb") as fh:
            np.savez(fh, losses=np.asarray(losses, np.float64), **{k: rec[k] for k in RECORD_KEYS})
    synced(tmp)
    if final.exists():  # a kill after this rename, before run.json named it: the same step again
        shutil.rmtree(final)
    tmp.rename(final)
    fsync_path(out_dir)  # the rename on the disk before run.json names it and the previous checkpoint is removed
    return name


def training_state(opt: Any, sched: Any) -> dict[str, Any]:
    """What ``optimizer.pt`` holds: the optimizer, the scheduler and torch's random state (CPU, and CUDA's where
    present): a model that draws dropout resumes to the draws of a run never stopped."""
    torch = import_torch()
    state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "cpu_rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def synced(folder: Path) -> None:
    """Flush ``folder``'s files and entries to the disk: ``run.json`` names a checkpoint, and the one before it is
    removed, only once it is whole there (after a power loss, a renamed folder of unflushed files could be empty)."""
    for path in folder.rglob("*"):
        if path.is_file():
            fsync_path(path)
    for sub in [*(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fsync_path(sub)


# errnos of this machine's limits and permissions, not of the checkpoint's files (an OSError naming none, as
# transformers raises for a weights file it cannot read, and EIO, a failing disk, are the files')
_MACHINE_ERRNOS = frozenset({errno.ENOMEM, errno.EMFILE, errno.ENFILE, errno.EACCES, errno.EPERM})
_CPU_ALLOCATOR_OOM = "DefaultCPUAllocator: can't allocate memory"  # torch's CPU out-of-memory RuntimeError


@contextlib.contextmanager
def load_errors_as_damage(folder: Path | None) -> Iterator[None]:
    """Loading a checkpoint ``folder``: the errors a damaged file in it gives (cut short, overwritten: numpy's,
    torch's, safetensors' or peft's, naming no folder) raised as a :class:`WorkspaceError` naming the folder and what
    to remove; those of the machine (:func:`machine_error`) as they are."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile, SafetensorError) as exc:
        if folder is None or machine_error(exc):
            raise
        what = (f"remove it to resume from the start of epoch {folder.name.split('-')[1]}"
                if folder.name.startswith(PREFIX) else f"remove the run folder {folder.parent} to train it again")
        raise WorkspaceError(f"{folder}: a damaged training checkpoint ({type(exc).__name__}: "
                             f"{str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}); {what}") from None


def machine_error(exc: BaseException) -> bool:
    """Whether ``exc``'s type says it is this machine's, not a file's: out of memory (``MemoryError``, torch's
    ``OutOfMemoryError``, the RuntimeError of torch's CPU allocator), or an OSError of its limits or permissions."""
    torch_oom = getattr(import_torch(), "OutOfMemoryError", MemoryError)
    if isinstance(exc, RuntimeError) and _CPU_ALLOCATOR_OOM in str(exc):  # torch gives it no type of its own
        return True
    return isinstance(exc, MemoryError | torch_oom) or (isinstance(exc, OSError) and exc.errno in _MACHINE_ERRNOS)


def load_position(folder: Path) -> tuple[dict[str, np.ndarray], list[float]]:
    """The records and step losses saved in a mid-epoch checkpoint ``folder``."""
    with load_errors_as_damage(folder), np.load(folder / POSITION_FILE, allow_pickle=False) as data:
        return {k: data[k].copy() for k in RECORD_KEYS}, data["losses"].tolist()


def load_state(folder: Path, opt: Any, sched: Any, device: str) -> None:
    """Restore the optimizer, the scheduler and torch's random state from ``folder``'s ``optimizer.pt``."""
    torch = import_torch()
    with load_errors_as_damage(folder):
        state = torch.load(folder / OPTIMIZER_FILE, map_location=device, weights_only=True)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    if "cpu_rng" in state:
        torch.set_rng_state(state["cpu_rng"].cpu())
    if "cuda_rng" in state and torch.cuda.is_available() and len(state["cuda_rng"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda_rng"]])


def resumable(out_dir: Path, info: dict[str, Any]) -> dict[str, Any] | None:
    """``run.json``'s ``partial`` entry when it is a position in the epoch after the last finished one and its folder
    is there; else None."""
    part = info.get("partial")
    if not isinstance(part, dict) or part.get("epoch") != int(info["epochs_done"]) + 1:
        return None
    return part if (out_dir / str(part.get("folder"))).is_dir() else None


def remove_unnamed(out_dir: Path, keep: str | None) -> None:
    """Remove the mid-epoch checkpoint folders ``run.json`` does not name (all but ``keep``), and temporary ones a
    killed writer left (untouched for ``STALE_LEFTOVER_S``). Called under the run folder's lock."""
    for folder in out_dir.glob(f"{PREFIX}*"):
        if folder.name != keep:
            remove(folder)
    for leftover in out_dir.glob(f".{PREFIX}*"):
        if newest_mtime(leftover) < time.time() - STALE_LEFTOVER_S:
            remove(leftover)


class Checkpointing:
    """When to write a mid-epoch checkpoint: after ``steps`` optimizer steps (None: no step count) or ``seconds`` of
    training (None: ``TRAIN.checkpoint_seconds``; 0 or less: no clock), whichever comes first, since the last one or
    the epoch's start."""

    def __init__(self, steps: int | None = None, seconds: float | None = None):
        from curate.defaults import TRAIN
        from curate.errors import OptionError

        if steps is not None and steps < 1:
            raise OptionError(f"checkpoint_steps must be >= 1 (None: by time only), got {steps}")
        self.steps = steps
        self.seconds = TRAIN.checkpoint_seconds if seconds is None else seconds
        self.start()

    def start(self) -> None:
        """Count from now (an epoch's start, or a checkpoint just written)."""
        self.since, self.taken = time.monotonic(), 0

    def due(self) -> bool:
        """Count one optimizer step; whether a checkpoint is due after it (the count restarts when it is)."""
        self.taken += 1
        if (self.steps is not None and self.taken >= self.steps) or (
                self.seconds > 0 and time.monotonic() - self.since >= self.seconds):
            self.start()
            return True
        return False


def record_partial(out_dir: Path, info: dict[str, Any], epoch: int, step: int, model: Any, opt: Any, sched: Any,
                  rec: dict[str, np.ndarray], losses: list[float], timing: dict[str, float], rows_done: int
                  ) -> dict[str, Any]:
    """A mid-epoch checkpoint (:mod:`curate.train.partial`) named in ``run.json``, the one before it removed."""
    before = (info.get("partial") or {}).get("folder")
    folder = save_partial(out_dir, epoch, step, model, opt, sched, rec, losses)
    info["partial"] = {"epoch": epoch, "step": step, "folder": folder, "rows": rows_done,
                       **{k: round(v, 6) for k, v in timing.items()}}
    write_run_json(out_dir / "run.json", info)
    if before and before != folder:
        remove(out_dir / before)
    return info["partial"]


def save_epoch(out_dir: Path, epoch: int, model: Any, opt: Any, sched: Any, ids: list[str],
                rec: dict[str, np.ndarray] | None) -> None:
    """Write ``epoch-<k>/`` (checkpoint, optimizer state, records) through a temporary folder."""
    final = out_dir / f"epoch-{epoch}"
    tmp = out_dir / f".epoch-{epoch}.{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    # Ctrl-C, SIGTERM or a full disk while saving: half a checkpoint (500 MB for SmolLM2) was left for good; an OS
    # error names the epoch folder, then the file of the temporary one it was writing
    with writing(final, tmp), quiet_transformers():  # transformers' "Writing model shards" bar: the run's are curate's
        model.save_pretrained(str(tmp))
        torch_save(training_state(opt, sched), tmp / OPTIMIZER_FILE)  # the random state too: from before, none
        if rec is not None:
            save_records(tmp, ids, rec)
    synced(tmp)
    if final.exists():  # a previous attempt died after the rename but before run.json: replace it
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_path(out_dir)  # before run.json marks the epoch done and its mid-epoch checkpoints go


def finish_epoch(out_dir: Path, info: dict[str, Any], epoch: int, model: Any, opt: Any, sched: Any, ids: list[str],
                 rec: dict[str, np.ndarray] | None, losses: list[float], timing: dict[str, float]) -> None:
    """The epoch's checkpoint (:func:`save_epoch`), then ``run.json`` marking it done, then its mid-epoch checkpoints
    removed. The harness calls it with a Ctrl-C held (:class:`~curate.train.step.DeferredStop`): one landing
    between the epoch's last step and its record waits for the record, so the epoch's steps are kept, not trained
    again; a kill there leaves ``run.json`` as it was, and the resume trains from its last checkpoint, replacing
    an ``epoch-<k>/`` renamed in but not recorded (never counted twice)."""
    t0 = time.perf_counter()
    save_epoch(out_dir, epoch, model, opt, sched, ids, rec)
    info["epochs_done"] = epoch
    info.pop("partial", None)
    info["epoch_stats"].append({"epoch": epoch, "mean_loss": float(np.mean(losses)), "steps": len(losses),
                                **{k: round(v, 3) for k, v in timing.items()},
                                "save_seconds": round(time.perf_counter() - t0, 3)})
    write_run_json(out_dir / "run.json", info)
    remove_unnamed(out_dir, None)  # the epoch's mid-epoch checkpoints: the epoch's own replaces them


def checkpoint_mid_epoch(out_dir: Path, info: dict[str, Any], epoch: int, model: Any, opt: Any, sched: Any,
                         rec: dict[str, np.ndarray], losses: list[float], timing: dict[str, float], batches: list[Any],
                         started: float) -> tuple[dict[str, Any], float]:
    """A mid-epoch checkpoint after ``len(losses)`` steps, its time kept apart from training's: (its entry, when
    training goes on)."""
    t0 = time.perf_counter()
    timing["seconds"] += t0 - started
    part = record_partial(out_dir, info, epoch, len(losses), model, opt, sched, rec, losses, timing,
                          sum(len(b) for b in batches[:len(losses)]))
    resumed = time.perf_counter()
    timing["checkpoint_seconds"] += resumed - t0
    return part, resumed
