"""What the openai-batch backend tells the user while it waits (``OpenAIBatchBackend.on_event``; the CLI prints it).

A batch answers within its completion window (hours), and polling it said nothing: the user saw a command that
seemed to hang. These lines say that it waits, each batch's status as it changes, and, on Ctrl-C, which batches stay
open at the provider and that a re-run collects them. Text only: the backend decides when to say them.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def waiting_notice(open_entries: Iterable[dict[str, Any]], backend: Any) -> str | None:
    """Said once a call starts polling: which batches it waits for, for how long at most (``backend``'s
    ``completion_window``), how often it looks, and that Ctrl-C is safe (None when none is open)."""
    entries = list(open_entries)
    if not entries:
        return None
    ids = [e["batch_id"] for e in entries if e.get("batch_id")]
    which = (f"batch(es) {', '.join(ids)}" if len(ids) == len(entries) else
             f"{len(entries):,} batch(es)" + (f" ({', '.join(ids)} and those being created)" if ids else ""))
    return (f"waiting for {which}: the provider answers within the completion window ({backend.completion_window}), "
            f"often sooner; status checked every {backend.poll_s:g} s, backing off to {backend.poll_max_s:g} s. "
            "Ctrl-C is safe: the "
            "batches stay open at the provider, which bills them when they finish, and a re-run of this command "
            "collects them, sending nothing of them again")


def status_notice(batch: Any) -> str:
    """A batch's new status, with its request counts where the provider gives them."""
    counts = getattr(batch, "request_counts", None)
    done = ""
    if counts is not None and getattr(counts, "total", 0):
        failed = f", {counts.failed:,} failed" if getattr(counts, "failed", 0) else ""
        done = f" ({counts.completed:,} of {counts.total:,} requests done{failed})"
    return f"batch {batch.id}: {batch.status}{done}"


def interrupted_notice(open_entries: Iterable[dict[str, Any]]) -> str | None:
    """Said when a call is stopped (Ctrl-C) with batches still open: which, and that a re-run picks them up (None
    when none is open)."""
    entries = list(open_entries)
    if not entries:
        return None
    ids = [e["batch_id"] for e in entries if e.get("batch_id")]
    unmade = len(entries) - len(ids)
    parts = ([f"batch(es) {', '.join(ids)} still open at the provider (billed there when they finish)"] if ids else []) \
        + ([f"{unmade:,} submission(s) not yet made a batch"] if unmade else [])
    return (f"stopped while waiting: {' and '.join(parts)}; they are recorded in the workspace: a re-run of this "
            "command picks them up and collects their answers, sending nothing of them again")
