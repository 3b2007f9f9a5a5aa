"""Progress bars for the selectors that walk a large pool row by row (MinHash, k-center): off unless a caller
shows them (``curate select``, ``curate run``), so the Python API and the tests stay quiet."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

_SHOWN: ContextVar[bool] = ContextVar("curate_select_progress", default=False)


@contextmanager
def showing_progress(enabled: bool = True) -> Iterator[None]:
    """Within the block, the selectors' walks show a progress bar (when ``enabled``)."""
    token = _SHOWN.set(enabled)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def walked(items: Iterable[Any], total: int, desc: str, unit: str = "row") -> Iterator[Any]:
    """``items``, with a bar over ``total`` of them when a caller shows progress (a 1M-row MinHash walk took 22
    silent minutes)."""
    if not _SHOWN.get():
        yield from items
        return
    from curate.storage.apply import progress_bar

    with progress_bar(total, desc, True, unit) as bar:
        for item in items:
            yield item
            bar.update(1)
