"""The lock of a whole `curate run` on one out folder (``OUT/workspace/locks/run.lock``): a second run on that folder
waits, saying for whom, then runs with its own arguments. Column locks alone serialised scoring, so two runs with
different budgets each selected, exported and reported in turn and the folder held whichever wrote last, not the
last finisher's result.

A run whose load fails removes the folders it made (``OUT``, ``OUT/workspace``), its lock file with them, while it
holds the lock: a run waiting on it makes them again and takes the lock there (it failed with "run.lock: No such file
or directory"). Once held, the lock is kept only if its file is still the one at the path (one removed, or moved
aside with the workspace by a take-back, after this run opened it excludes no one). Which folders a run made is decided by ``os.mkdir`` (one process makes each) and checked again once
it holds the lock: a folder another run has filled meanwhile is not this run's to remove."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from filelock import Timeout

from curate.storage.files import LOCKS_DIR, file_lock
from curate.storage.lock_holders import describe_holder, forget_holder, locks_file_at, record_holder

RUN_LOCK = "run.lock"
log = logging.getLogger("curate")


def _made(out: Path) -> tuple[Path, ...]:
    """Make ``out``, ``out/workspace`` and its locks folder; the first two of them this process made."""
    if not os.path.lexists(out.parent):  # a file there: os.mkdir below says "Not a directory", naming the path
        out.parent.mkdir(parents=True, exist_ok=True)
    made = []
    for folder in (out, out / "workspace", out / "workspace" / LOCKS_DIR):
        try:
            os.mkdir(folder)
            made.append(folder)
        except FileExistsError:
            pass
    return tuple(p for p in made if p.name != LOCKS_DIR)


def _still_empty(made: tuple[Path, ...]) -> tuple[Path, ...]:
    """``made``, unless another run has put its work in them since (it took the lock first): then none is ours."""
    for folder in made:
        with contextlib.suppress(FileNotFoundError):
            if set(os.listdir(folder)) - {"workspace", LOCKS_DIR}:
                return ()
    return made


@contextlib.contextmanager
def run_lock(out: Path) -> Iterator[tuple[Path, ...]]:
    """Context manager holding the run lock of ``out`` for a whole run, yielding the folders (``out``,
    ``out/workspace``) this run made, which a failed load removes; a wait is logged at once (logger ``curate``),
    naming the holder."""
    out, told = Path(out), False
    while True:
        made = _made(out)
        path = out / "workspace" / LOCKS_DIR / RUN_LOCK
        lock = file_lock(path)
        try:
            try:
                lock.acquire(timeout=0)
            except Timeout:
                if not told:
                    log.warning("waiting for another curate run on %s (%s), held by %s", out, path,
                                describe_holder(path))
                    told = True
                lock.acquire()
        except FileNotFoundError:  # the holder's load failed and removed the folders it made, the lock's too
            continue
        if locks_file_at(lock, path):  # else removed, or moved aside with the workspace (a take-back), after it was
            break                      # opened: another run may hold the file at the path now
        lock.release()
    made = _still_empty(made)
    try:
        record_holder(path)
        yield made
    finally:
        forget_holder(path)
        lock.release()
