"""A thread's record of the derived columns and embedding sets it reads from a workspace: ``ws.select`` keeps one
per selection (:mod:`curate.storage.selection_inputs`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

Workspace = Any  # curate.storage.workspace.Workspace (not imported: it imports the modules that import this one)
KINDS = ("columns", "embeddings")


def note_read(ws: Workspace, kind: str, name: str) -> None:
    """Note that this thread read ``kind`` (``columns`` or ``embeddings``) ``name``, when it records its reads."""
    noted = getattr(ws._reads, "inputs", None)
    if noted is not None:
        noted[kind].add(name)


@contextlib.contextmanager
def recording_reads(ws: Workspace) -> Iterator[dict[str, set[str]]]:
    """Note, until the block ends, the columns and embedding sets this thread reads from ``ws`` (nested: the outer
    block's record gets them too)."""
    outer = getattr(ws._reads, "inputs", None)
    noted: dict[str, set[str]] = {kind: set() for kind in KINDS}
    ws._reads.inputs = noted
    try:
        yield noted
    finally:
        ws._reads.inputs = outer
        if outer is not None:
            for kind in KINDS:
                outer[kind] |= noted[kind]
