"""curate's progress bars: tqdm.auto (a widget in Jupyter, text in a terminal), imported quietly; the counts of LLM
requests (failed=, cached=, paid_by_stopped_run=) a step that sends them shows on ``ws.apply``'s row bar.

Where stderr is no terminal (a log file, a container's log) a bar writes newline-ended lines, one at most every
``PROGRESS.log_interval_s`` and its last one, not tqdm's carriage-return redraws: those made one ever-growing line
that log collectors split or cut. ``CURATE_PROGRESS=0`` (``PROGRESS.env``) turns every bar off."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from curate.defaults import PROGRESS


def _quiet_tqdm_auto():
    """``tqdm.auto``, imported without its TqdmWarning: in a kernel without ipywidgets (no ``notebook`` extra)
    it falls back to text bars, which is what we want, silently. Imported here, when the workspace module
    loads, so datasets/huggingface_hub (which import it too) find it already imported and warn nothing."""
    import warnings

    from tqdm import TqdmWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmWarning)
        from tqdm.auto import tqdm
    return tqdm


_quiet_tqdm_auto()


def bars_enabled() -> bool:
    """False where ``$CURATE_PROGRESS`` is 0 (or false, no, off): no progress bar is shown."""
    return os.environ.get(PROGRESS.env, "").strip().lower() not in ("0", "false", "no", "off")


def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "row", **options: Any):
    """curate's progress bar (tqdm.auto: a widget in Jupyter, text in a terminal, newline-ended lines in a log);
    ``total`` None: set it later. ``options``: tqdm's own (``initial``, ``leave``).

    A bar opened while another of this thread is shown is a stage of it (a scorer's ``embedding`` inside its row
    bar): it is named ``<outer> > <desc>``, and the time it was open is taken out of the outer bar's clock, so the
    outer bar's rate and time left count its own rows, not the wait (an audit's quality bar said
    ``1002/3995 [04:08<12:22, 4.03row/s]`` after 4 minutes of embedding, one second before it ended)."""
    tqdm = _quiet_tqdm_auto()
    stream = sys.stderr
    lines = not _is_terminal(stream) and not _is_kernel(stream)  # a notebook's stderr is a kernel's
    disable = not enabled or total == 0 or not bars_enabled()
    outer = None if disable else _innermost_bar()
    if outer is not None:
        desc = f"{outer.desc} > {desc}"
    if lines:  # a nested bar's own line, not tqdm's cursor moves to a row below (ESC [A, written into the log)
        options.setdefault("position", 0)
    bar = tqdm(total=total, desc=desc, unit=unit, disable=disable,
               file=LogLines(stream) if lines else None, dynamic_ncols=not lines,
               mininterval=0.5, smoothing=0, **options)  # smoothing 0, the average rate: a notebook bar kept its first
    bar.call_counts = CallCounts(bar)  # one per bar: what the steps that send LLM requests show on it
    if not bar.disable:
        _shown_as_stage_of(bar, outer)
    return bar


def show_failed(bar: Any) -> None:
    """End ``bar`` red: rows of it failed (a terminal's bar in red; a notebook's widget in its 'danger' style, which
    its close keeps instead of the green of success)."""
    if bar.disable:
        return
    bar.colour = "red"
    if hasattr(bar, "container"):  # tqdm.notebook's widget
        bar.disp(bar_style="danger", check_delay=False)


_SHOWN = threading.local()  # .bars: this thread's bars being shown, innermost last (weak references)


def _shown_bars() -> list[weakref.ref]:
    if not hasattr(_SHOWN, "bars"):
        _SHOWN.bars = []
    return _SHOWN.bars


def _innermost_bar() -> Any:
    """This thread's innermost bar still shown (None: none)."""
    bars = _shown_bars()
    while bars and ((bar := bars[-1]()) is None or bar.disable):  # gone, or closed (tqdm's close disables it)
        bars.pop()
    return bars[-1]() if bars else None


def _shown_as_stage_of(bar: Any, outer: Any) -> None:
    """Track ``bar`` as shown; when it closes, the time it was open is taken out of ``outer``'s clock."""
    bars, ref = _shown_bars(), weakref.ref(bar)
    bars.append(ref)
    opened, close = bar._time(), bar.close

    def closed() -> None:
        was_shown = not bar.disable
        close()
        if ref in bars:
            bars.remove(ref)
        if was_shown and outer is not None and not outer.disable:
            waited = bar._time() - opened
            outer.start_t += waited  # tqdm's own unpause moves its clock the same way
            outer.last_print_t += waited

    bar.close = closed


def watched() -> bool:
    """Whether stderr is a terminal or a Jupyter kernel's: a person watches the bars there (not a log, a pipe or a
    test's capture)."""
    return _is_terminal(sys.stderr) or _is_kernel(sys.stderr)


def _is_terminal(stream: Any) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if callable(isatty) else False
    except (ValueError, OSError):  # closed
        return False


def _is_kernel(stream: Any) -> bool:
    """A Jupyter kernel's stderr (a notebook without ipywidgets shows text bars there): kept as tqdm draws them."""
    return type(stream).__module__.startswith("ipykernel")


_CURSOR_CODES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # a terminal's cursor moves and line clears (ESC [A, ESC [K)


class LogLines:
    """A bar's stream where it is no terminal: each status tqdm redraws (``\\r`` + status) becomes a newline-ended
    line, written at once for the first, then at most every ``interval_s``; the bar's end (tqdm's closing newline)
    writes its last status if it was held back. A cleared status (blanks) writes nothing."""

    def __init__(self, stream: TextIO, interval_s: float = PROGRESS.log_interval_s):
        self.stream, self.interval_s = stream, interval_s
        self.pending: str | None = None  # the newest status not written yet
        self.written: str | None = None
        self.written_at: float | None = None

    def write(self, text: str) -> int:
        for part in re.split(r"(\n)|\r", _CURSOR_CODES.sub("", text)):
            if part == "\n":
                if self.pending is not None:
                    self._line(self.pending)
            elif part and part.strip():
                self.pending = part.rstrip()
                if self.written_at is None or time.monotonic() - self.written_at >= self.interval_s:
                    self._line(self.pending)
        return len(text)

    def _line(self, status: str) -> None:
        self.pending = None
        if status != self.written:
            self.stream.write(status + "\n")
            self.stream.flush()
            self.written, self.written_at = status, time.monotonic()

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str) -> Any:  # encoding, isatty ...: the stream's own
        return getattr(self.stream, name)


class CallCounts:
    """The LLM counts on a row bar: ``failed`` rows (a row with any failure, once: as the summary line counts them),
    requests ``cached`` (answered by the on-disk cache) and ``paid_by_stopped_run`` (as the run record counts them).
    They add up over the chunks of rows ``ws.apply`` hands a step (:meth:`chunk_done`), plus the running chunk's live
    counts as ``run_prompt`` hears them (:meth:`listener`). A bar no step that sends requests used shows none."""

    def __init__(self, bar: Any = None):
        self.bar = bar
        self.failed = self.cached = self.paid = 0  # of the chunks done

    def show(self, failed: int = 0, cached: int = 0, paid: int = 0, refresh: bool = False) -> None:
        """The counts of the chunks done plus these (the running chunk's so far) on the bar."""
        if self.bar is None or not hasattr(self.bar, "set_postfix"):
            return
        paid += self.paid
        self.bar.set_postfix({"failed": self.failed + failed, "cached": self.cached + cached,
                              **({"paid_by_stopped_run": paid} if paid else {})}, refresh=refresh)

    def listener(self, owners: Sequence[int], failed_rows: Sequence[int] = ()) -> Callable[[set[int], int, int], None]:
        """``run_prompt``'s ``on_counts`` for a chunk whose request items belong to rows ``owners`` (row indices, one
        per item); ``failed_rows``: the rows that failed before any request (no response to judge)."""
        before = set(failed_rows)
        self.show(len(before))

        def heard(failed_items: set[int], cached: int, paid: int) -> None:
            self.show(len(before.union(owners[i] for i in failed_items)), cached, paid)

        return heard

    def chunk_done(self, failed_rows: int, usage: dict[str, Any]) -> None:
        """A chunk's final counts, from what the step returns (and ``ws.apply`` stores): its failed rows and its
        ``call_usage`` (``cached_requests``, ``requests_paid_by_stopped_run``)."""
        self.failed += failed_rows
        self.cached += usage.get("cached_requests") or 0
        self.paid += usage.get("requests_paid_by_stopped_run") or 0
        self.show(refresh=True)


def call_counts(bar: Any) -> CallCounts:
    """The counts of ``bar`` (a StepContext's progress); a stand-in that only counts rows gets counts shown nowhere."""
    counts = getattr(bar, "call_counts", None)
    return counts if isinstance(counts, CallCounts) else CallCounts()
