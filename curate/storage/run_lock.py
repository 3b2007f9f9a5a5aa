"""The lock of a whole `curate run` on one out folder (``OUT/workspace/locks/run.lock``): a second run on that folder
waits, saying for whom, then runs with its own arguments. Column locks alone serialised scoring, so two runs with
different budgets each selected, exported and reported in turn and the folder held whichever wrote last, not the
last finisher's result."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from curate.storage.files import LOCKS_DIR, held
from curate.storage.lock_holders import describe_holder

RUN_LOCK = "run.lock"
log = logging.getLogger("curate")


def run_lock_path(out: Path) -> Path:
    """Where the run lock of ``out`` lives (its folder is made, with ``out/workspace``, if missing)."""
    folder = Path(out) / "workspace" / LOCKS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    return folder / RUN_LOCK


def run_lock(out: Path) -> Any:
    """Context manager holding the run lock of ``out`` for a whole run; a wait is logged at once (logger ``curate``),
    naming the holder."""
    path = run_lock_path(out)

    def notice() -> None:
        log.warning("waiting for another curate run on %s (%s), held by %s", out, path, describe_holder(path))
    return held(path, notice)
