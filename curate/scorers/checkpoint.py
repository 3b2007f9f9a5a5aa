"""A fine-tune's progress on disk, so a killed ``train-scorer --kind cross-encoder|small-lm`` continues where it was.

A reader fine-tuned on a CPU runs for many minutes (``small-lm``: ~30 min for 1,000 labels on 2 cores); the
workspace cache keeps its progress: the trainable tensors (LoRA, head, length covariate), the optimiser and
learning-rate schedule, and the random states that draw the batches and the dropout. The file is named by
everything that decides the run (the scorer's config and start weights, the labels, the pairs, the settings), so a
changed run never resumes a different one's progress. Written atomically (a temporary file, then a rename). The last
step's file stays, as every finished computation stays in the cache: the same fit run again reads it back instead of
training again. Only the trainable tensors and their optimiser state are saved (a few MB), never the base model.

The loss curve of a resumed run on a GPU differs from an unbroken one's only in its dropout draws after the break
(the CPU random state is restored, the GPU's is not).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curate.errors import ScorerError
from curate.hardware import import_torch
from curate.storage.files import torch_save

SAVE_EVERY_S = 60.0  # seconds between saves: a CPU step takes seconds, a save well under one


def checkpoint_key(parts: dict[str, Any]) -> str:
    """A file name for a run decided by ``parts`` (JSON-able values, e.g. fingerprints and settings)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


class TrainingCheckpoint:
    """Progress of one fine-tune at ``path``: :meth:`restore` before training, :meth:`step_done` after each step
    (saves every ``every_s`` seconds and at the last step). ``on_restore(step, steps)``: called when :meth:`restore`
    read saved progress back (``step`` of the run's ``steps`` done), so a caller can say the run resumed."""

    def __init__(self, path: str | os.PathLike, every_s: float | None = None,
                 on_restore: Callable[[int, int], Any] | None = None):
        self.path = Path(path)
        self.on_restore = on_restore
        self.every_s = SAVE_EVERY_S if every_s is None else float(every_s)
        self._saved_at = time.monotonic()

    def restore(self, parts: dict[str, Any]) -> int:
        """Put a saved run's state into ``parts`` (``net``, ``opt``, ``sched``, ``rng``, ``best``, ``history``);
        the last step it finished, or 0 when there is nothing saved."""
        torch = import_torch()
        if not self.path.exists():
            return 0
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a file cut short or not ours: say which, never train on half a state
            raise ScorerError(f"{self.path}: unreadable training progress ({type(exc).__name__}: {exc}); delete it to "
                              f"train afresh") from exc
        expected = set(parts["trainable"]())
        if set(state["trainable"]) != expected:
            raise ScorerError(f"{self.path}: saved progress holds other tensors than this reader trains "
                              f"({len(state['trainable'])} saved, {len(expected)} trained); delete it to train afresh")
        parts["net"].load_state_dict(state["trainable"], strict=False)
        parts["opt"].load_state_dict(state["opt"])
        parts["sched"].load_state_dict(state["sched"])
        parts["rng"].setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        parts["best"].update(state["best"])
        parts["history"][:] = state["history"]
        self._saved_at = time.monotonic()
        if self.on_restore is not None:
            self.on_restore(int(state["step"]), int(parts["last"]))
        return int(state["step"])

    def step_done(self, step: int, last: int, parts: dict[str, Any]) -> None:
        if step == last or time.monotonic() - self._saved_at >= self.every_s:
            self.save(step, parts)

    def save(self, step: int, parts: dict[str, Any]) -> None:
        torch = import_torch()
        state = {"step": step, "trainable": parts["trainable"](), "opt": parts["opt"].state_dict(),
                 "sched": parts["sched"].state_dict(), "rng": parts["rng"].getstate(),
                 "torch_rng": torch.get_rng_state(), "best": dict(parts["best"]), "history": list(parts["history"])}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch_save(state, self.path)  # a failed write names the file, leaving no part of it
        self._saved_at = time.monotonic()
