"""A training run's record (``run.json``): reading and writing it, and the arithmetic the run trained in.

CUDA with bf16 trains under bfloat16 autocast, the CPU (and CUDA without bf16) in float32. The two give other
losses, confidences and EL2N past rounding, so the arithmetic names the run (:func:`training_precision`): a run of
one never answers, or resumes, a request for the other. A record written before runs were named by it holds only
its device (:func:`recorded_precision`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.errors import CurateError
from curate.hardware import import_torch
from curate.storage.files import atomic_write_bytes, read_json

TRAIN_LOCK = ".train.lock"  # in the run folder (one trainer at a time): beside it, a lister would take it for a run
FLOAT32 = "float32"
BF16_AUTOCAST = "bfloat16-autocast"


@contextlib.contextmanager
def train_lock(out_dir: Path) -> Iterator[None]:
    """Hold the trainer's lock of the run folder ``out_dir`` (made if missing): one trainer of a run at a time, any
    process. The lock is kept only if its file is still the one at the path once locked (``storage.files.held``): a
    trainer that opened it before the folder was removed ("remove the folder to free the disk") or the file replaced,
    and locked it after, held the lock of no file and trained beside the trainer holding the one there now. A folder
    removed while this waited is made again and its lock taken there."""
    from curate.storage.files import held
    from curate.storage.lock_holders import LockFolderGone

    while True:
        out_dir.mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(held(out_dir / TRAIN_LOCK, None))
        except LockFolderGone:
            continue
        with stack:
            yield
        return


def training_precision(device: str) -> str:
    """The arithmetic a run trains in on ``device`` (a resolved torch device name)."""
    if not device.startswith("cuda"):
        return FLOAT32
    return BF16_AUTOCAST if import_torch().cuda.is_bf16_supported() else FLOAT32


def recorded_precision(info: dict[str, Any]) -> str:
    """The arithmetic of the run ``info`` records; a record from before curate named it: bfloat16 autocast when it
    trained on CUDA (the harness took it wherever the GPU had bf16, every GPU curate was run on), else float32."""
    if "precision" in info:
        return str(info["precision"])
    return BF16_AUTOCAST if str(info.get("device") or "").startswith("cuda") else FLOAT32


def check_precision(out_dir: Path, info: dict[str, Any], precision: str, device: str) -> None:
    """An error naming ``out_dir`` when its run trained in other arithmetic than ``precision`` (on ``device``): such
    a run is cached from before runs were named by it, and serving or resuming it would mix the two silently."""
    had = recorded_precision(info)
    if had != precision:
        raise CurateError(f"{out_dir} holds this run trained on {info.get('device')} in {had} (cached before curate "
                          f"named runs by their arithmetic); asked for {precision} on {device}, which trains to other "
                          f"values: remove {out_dir} to train here, or train on {info.get('device')} again")


def write_run_json(path: Path, obj: Any) -> None:
    """Write ``obj`` to ``path`` as JSON, replacing it whole (a reader never sees half a record)."""
    atomic_write_bytes(path, json.dumps(obj, indent=1).encode())  # flushed: it names checkpoints to trust


def read_run_file(path: Path) -> dict[str, Any]:
    """``run.json`` as a dict; one that is not JSON, or not an object, is an error naming it (it raised json's
    "Expecting value" or a bare KeyError('config'), naming no file)."""
    info = read_json(path)
    if not isinstance(info, dict) or "config" not in info:
        raise CurateError(f"{path}: not a curate training run's record (no 'config'); use another out_dir")
    return info


@dataclass(frozen=True)
class RunStart:
    """Where a :func:`~curate.train.harness.finetune` call started its run: ``"cache"`` (a finished run read back),
    ``"resumed"`` (at ``epoch``'s step ``step`` of ``steps``, the steps done before it kept) or ``"start"``."""
    kind: str
    epoch: int = 0
    step: int = 0
    steps: int = 0


@dataclass(frozen=True)
class UnfinishedRun:
    """A run beside another in the cache that stopped before its last epoch (or is training now, in another
    process: ``training``): its folder, how far it got, the settings in which it differs from the other one (name:
    its value), and the bytes its folder holds."""
    folder: Path
    epochs_done: int
    epochs: int
    differs: dict[str, Any]
    bytes: int
    training: bool


def _same_model_and_rows(info: dict[str, Any]) -> tuple[Any, Any, Any]:
    """What a user calls "this run": the model (its files' fingerprint) and the rows it was asked to train on."""
    return info.get("model_fingerprint"), info.get("ids"), sorted(info.get("skipped") or {})


def unfinished_beside(out_dir: Path) -> list[UnfinishedRun]:
    """The unfinished runs of the same model and rows as the run in ``out_dir``, in the folders beside it (this run
    with other settings; the cache's runs of other models or rows are not named). A run asked for with other
    settings starts in its own folder and never resumes from these; they stay, so that asking for their settings
    again resumes them, and this names them and their size (one that cannot be read, or a run in ``out_dir`` that
    cannot be, is left out: a listing, not a check)."""
    out_dir = Path(out_dir)
    try:
        mine = read_run_file(out_dir / "run.json")
    except (OSError, CurateError):
        return []
    this_run, my_config = _same_model_and_rows(mine), dict(mine["config"])
    found = []
    for path in sorted(out_dir.parent.glob("*/run.json")):
        if path.parent == out_dir:
            continue
        try:
            info = read_run_file(path)
            done, config = int(info["epochs_done"]), dict(info["config"])
            if done >= int(config["epochs"]) or _same_model_and_rows(info) != this_run:
                continue
            size = sum(p.stat().st_size for p in path.parent.rglob("*") if p.is_file())
        except (OSError, CurateError, KeyError, TypeError, ValueError):
            continue
        differs = {k: v for k, v in config.items() if my_config.get(k, v) != v}
        found.append(UnfinishedRun(path.parent, done, int(config["epochs"]), differs, size, _training(path.parent)))
    return found


def _training(folder: Path) -> bool:
    """Whether a process (this one included) holds the trainer's lock of the run in ``folder`` (a trainer takes it before it trains)."""
    from filelock import Timeout

    from curate.storage.files import file_lock

    path = folder / TRAIN_LOCK
    if not path.exists():
        return False
    lock = file_lock(path)
    if lock.is_locked:  # held by this thread (re-entrant: acquiring it again here would succeed)
        return True
    try:
        lock.acquire(timeout=0)
    except (Timeout, OSError):  # held (or not to be opened here: said as training, so not offered for removal)
        return True
    lock.release()
    return False
