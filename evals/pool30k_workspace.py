"""The workspace of pool_30k that several benchmarks read (real MiniLM vectors and scores), and how to build it.

    curate run ../shared/data/pool_30k.jsonl --budget 6000 --out /work/runs/new30k

writes it to ``/work/runs/new30k/workspace`` (``DEFAULT``), ~10 min on 2 CPU cores.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT = "/work/runs/new30k/workspace"
BUILD = "curate run ../shared/data/pool_30k.jsonl --budget 6000 --out /work/runs/new30k"


def missing(workspace: str | Path) -> str | None:
    """A line saying how to build ``workspace`` when it is absent; None when it is there."""
    if Path(workspace, "manifest.json").exists():
        return None
    return f"{workspace}: no workspace here; build it with `{BUILD}` (or pass --workspace)"
