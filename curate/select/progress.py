"""Progress bars for the selectors that walk a large pool row by row (MinHash, k-center) or iterate over it
(K-means), and for the long steps of a selector (LESS's gradient passes, Instruction Mining's fine-tunes): shown where a
caller shows them (``curate select``; ``curate run`` as its ``progress`` says; ``ws.select`` in a notebook or a terminal
unless ``progress=False``). Outside any caller's choice (a selector function called directly) they are off."""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, redirect_stdout
from contextvars import ContextVar
from typing import Any

_SHOWN: ContextVar[bool | None] = ContextVar("curate_select_progress", default=None)  # None: no caller chose


@contextmanager
def showing_progress(enabled: bool = True) -> Iterator[None]:
    """Within the block, the selectors' walks show a progress bar (when ``enabled``)."""
    token = _SHOWN.set(enabled)
    try:
        yield
    finally:
        _SHOWN.reset(token)


def progress_shown() -> bool:
    """Whether a caller shows the selectors' progress (``curate select``, ``curate run``, ``ws.select``): for a
    selector that passes it on to a long step of its own (LESS's warm-up and gradient passes)."""
    return bool(_SHOWN.get())


def progress_wanted(progress: bool | None) -> bool:
    """What ``ws.select(progress=...)`` shows: ``progress`` when given; None: what an enclosing caller chose
    (``run_pipeline(progress=False)``'s steps stay quiet), else shown where a person watches stderr (a notebook, a
    terminal: an hour-long ``ws.select("mining")`` in a notebook said nothing until it ended), not in a log or a
    test's capture."""
    from curate.storage.progress import watched

    chosen = _SHOWN.get()
    return progress if progress is not None else chosen if chosen is not None else watched()


def walked(items: Iterable[Any], total: int, desc: str, unit: str = "row") -> Iterator[Any]:
    """``items``, with a bar over ``total`` of them when a caller shows progress (a 1M-row MinHash walk took 22
    silent minutes)."""
    if not _SHOWN.get():
        yield from items
        return
    from curate.storage.progress import progress_bar

    with progress_bar(total, desc, True, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


class _IterationLines(io.TextIOBase):
    """A text stream that moves ``bar`` on by one for each line starting with ``prefix`` written to it."""

    def __init__(self, bar: Any, prefix: str):
        self.bar, self.prefix, self.pending = bar, prefix, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        self.bar.update(sum(line.startswith(self.prefix) for line in lines))
        return len(text)


@contextmanager
def printed_iterations(most: int, desc: str, prefix: str) -> Iterator[bool]:
    """A bar over the iterations a library reports only by printing a line each (scikit-learn's ``KMeans(verbose=1)``:
    "Iteration 7, inertia ..."; its fit has no callback, and on 100,000 rows it ran 6 minutes in silence), when a
    caller shows progress. Yields whether it does: the library's verbose switch. Within the block the library's
    standard output goes to the bar alone; ``most``: the iterations it may run (its convergence may end them first):
    said in the bar's name, not as its total (a bar of ``0/300`` ending at ``24/24`` promised 300 iterations)."""
    if not _SHOWN.get():
        yield False
        return
    from curate.storage.progress import progress_bar

    with progress_bar(None, f"{desc} (up to {most:,} iterations)", True, "iteration") as bar:
        with redirect_stdout(_IterationLines(bar, prefix)):
            yield True
        bar.total = bar.n  # converged before ``most``: the bar ends full
        bar.refresh()
