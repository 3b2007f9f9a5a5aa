"""curate's progress bars: tqdm.auto (a widget in Jupyter, text in a terminal), imported quietly; the counts of LLM
requests (failed=, cached=, paid_by_stopped_run=) a step that sends them shows on ``ws.apply``'s row bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


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


def progress_bar(total: int | None, desc: str, enabled: bool, unit: str = "row"):
    """curate's progress bar (tqdm.auto: a widget in Jupyter, text in a terminal); ``total`` None: set it later."""
    tqdm = _quiet_tqdm_auto()
    bar = tqdm(total=total, desc=desc, unit=unit, disable=not enabled or total == 0, dynamic_ncols=True,
               mininterval=0.5, smoothing=0)  # the average rate: a notebook bar kept its first refresh's at the end
    bar.call_counts = CallCounts(bar)  # one per bar: what the steps that send LLM requests show on it
    return bar


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
