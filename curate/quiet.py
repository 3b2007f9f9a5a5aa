"""Libraries' process-wide progress-bar switches, turned off only while curate works.

datasets and transformers each keep one global switch for their progress bars. curate's steps show bars of their
own, so it turns theirs off around its calls; a :class:`QuietScope` does that for concurrent callers (threads of
a notebook): the switch stays off while any of them is inside, and the last one out restores the setting the first
one in found, so the user's own bars come back afterwards, as they were.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

Switch = tuple[Callable[[], bool], Callable[[], None], Callable[[], None]]  # (is it on, turn it off, turn it on)


class QuietScope:
    """``with scope():`` keeps a library's switch off while any caller is inside (a count under a lock)."""

    def __init__(self, switch: Callable[[], Switch]):
        self._switch = switch  # imports the library when first used, not when curate is imported
        self._lock = threading.Lock()
        self._inside = 0
        self._was_on = False  # the setting the first caller in found

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        is_on, turn_off, turn_on = self._switch()
        with self._lock:
            if self._inside == 0:
                self._was_on = is_on()
            if is_on():  # also a switch the user turned on again while another caller was inside
                turn_off()
            self._inside += 1
        try:
            yield
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0 and self._was_on:
                    turn_on()


def _datasets_switch() -> Switch:
    import datasets

    return datasets.is_progress_bar_enabled, datasets.disable_progress_bars, datasets.enable_progress_bars


def _transformers_switch() -> Switch:
    from transformers.utils import logging

    return logging.is_progress_bar_enabled, logging.disable_progress_bar, logging.enable_progress_bar


quiet_datasets = QuietScope(_datasets_switch)
"""Hide datasets' own per-call progress bars (curate's steps show their own); the caller's setting comes back."""

quiet_transformers = QuietScope(_transformers_switch)
"""Hide transformers' "Loading weights" bar while a model loads; the caller's setting comes back."""


@contextlib.contextmanager
def silenced(logger: str) -> Iterator[None]:
    """Drop logger ``logger``'s records meanwhile: a library's log line that says the error curate raises as its own
    one line (datasets' ``Failed to read schema from ...`` before curate's error about a damaged Parquet file)."""
    def drop(record: logging.LogRecord) -> bool:
        return False

    logging.getLogger(logger).addFilter(drop)
    try:
        yield
    finally:
        logging.getLogger(logger).removeFilter(drop)
