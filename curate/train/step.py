"""One optimizer step of the harness (:mod:`curate.train.harness`), and what a Ctrl-C in its step loop leaves.

A step is its gradients (:func:`step_gradients`: forward and backward passes, nothing of the run's state changed),
then its update (the optimizer, the scheduler, the step's loss and records, the random state), done under
:class:`DeferredStop` so that a Ctrl-C or SIGTERM landing there waits for the update to end. A KeyboardInterrupt
in the gradients discards the step: the model, optimizer, losses and records are those after the last completed
step, and the random state is put back to that step's (:class:`RandomState`), so the mid-epoch checkpoint the
harness writes before re-raising resumes to the run never stopped.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import numpy as np

from curate.hardware import import_torch
from curate.signals.peft_lora import response_logits
from curate.train.records import RECORD_KEYS, batch_records


def step_gradients(model: Any, parts: list[Any], autocast: Any, record: bool, cuda: bool,
                   timing: dict[str, float]) -> tuple[float, list[tuple[Any, dict[str, np.ndarray]]]]:
    """Backward passes of one batch's ``parts`` (their gradients add up to the batch's mean token loss): (the
    batch's loss, each part's (row index, records) when ``record``). Adds the records' time to ``timing``."""
    torch = import_torch()
    targets = sum(len(p.targets) for p in parts)
    loss_value, got = 0.0, []
    for batch in parts:  # the batch's mean token loss = the parts' summed token losses / all its targets
        if autocast is not None:
            with autocast:
                logits, hidden = response_logits(model, batch.input_ids, batch.attention_mask, batch.rows, batch.cols)
        else:
            logits, hidden = response_logits(model, batch.input_ids, batch.attention_mask, batch.rows, batch.cols)
        loss = torch.nn.functional.cross_entropy(logits.float(), batch.targets, reduction="sum") / targets
        loss.backward()
        loss_value += float(loss.detach())
        if record:
            t0 = time.perf_counter()
            got.append((batch.index, batch_records(logits, hidden, batch.targets, batch.bounds)))
            if cuda:
                torch.cuda.synchronize()
            timing["record_seconds"] += time.perf_counter() - t0
        del logits, hidden, loss
    return loss_value, got


def keep_records(rec: dict[str, np.ndarray], got: list[tuple[Any, dict[str, np.ndarray]]]) -> None:
    """Write a completed step's records (:func:`step_gradients`) into the epoch's."""
    for index, values in got:
        for k in RECORD_KEYS:
            rec[k][index] = values[k]


class RandomState:
    """torch's random state (CPU, and CUDA's when ``cuda``) as of the last :meth:`take`; :meth:`restore` puts it back."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.take()

    def take(self) -> None:
        torch = import_torch()
        self.cpu = torch.get_rng_state()
        self.gpu = torch.cuda.get_rng_state_all() if self.cuda else None

    def restore(self) -> None:
        torch = import_torch()
        torch.set_rng_state(self.cpu)
        if self.gpu is not None:
            torch.cuda.set_rng_state_all(self.gpu)


class DeferredStop:
    """A block a Ctrl-C (or a SIGTERM with a Python handler, as the CLI installs) does not cut in half: a signal
    landing in it is held, then given to the handler it would have reached once the block ends (unless the block
    raised). ``second_goes_through``: a second one of the same signal reaches its handler at once (for a long block,
    an epoch's save: the user who presses Ctrl-C again means it). Outside the main thread (no signal lands there) it
    does nothing."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, second_goes_through: bool = False):
        self.second_goes_through = second_goes_through
        self.held: list[int] = []
        self.previous: dict[int, Any] = {}  # the handlers it replaced (none until it holds)

    def __enter__(self) -> DeferredStop:
        """Hold from now; a stop already holding goes on holding (the harness starts one inside its step loop's
        ``try``, so no Ctrl-C falls between the loop and the hold, and enters it again as a block)."""
        if self.previous:
            return self
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                handler = signal.getsignal(signum)
                if callable(handler):  # SIG_DFL / SIG_IGN: not Python's to hold (SIGTERM's default ends the process)
                    self.previous[signum] = handler
                    signal.signal(signum, self._hold)
        return self

    def _hold(self, signum: int, frame: Any) -> None:
        if self.second_goes_through and signum in self.held:
            self.previous[signum](signum, frame)  # raises its KeyboardInterrupt here: the block is given up
        self.held.append(signum)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        previous, held = self.previous, self.held
        self.previous, self.held = {}, []
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if exc_type is None:
            for signum in dict.fromkeys(held):
                previous[signum](signum, None)  # the handler's own KeyboardInterrupt (or Terminated)
