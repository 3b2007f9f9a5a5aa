"""What ``Workspace.apply`` did: rows asked for, computed, reused and failed, with the failures' reason codes."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from curate.codes import FailureCode
from curate.storage.roles import wrote_text
from curate.storage.run_records import requests_text, stopped_run_text

SENDING_KINDS = ("judge", "instag_tags")  # the provenance kinds of steps whose rows are requests sent to an LLM


@dataclass
class ApplyResult:
    """What ``ws.apply`` did."""
    column: str
    rows: int                  # rows asked for
    computed: int              # rows the step ran on now (``valued_now`` of them got a value)
    skipped: int               # rows already computed under the same fingerprint
    failed: int                # rows (of all asked) without a complete value
    seconds: float
    provenance: dict[str, Any] = field(default_factory=dict)
    failed_now: int = 0        # of ``failed``, rows this run computed (the rest kept their failure from a run before)
    stale_dropped: int = 0     # rows outside those asked whose values of other settings were removed (apply_to_rows)
    failure_reasons: dict[str, tuple[int, str]] = field(default_factory=dict)  # code -> (failed rows, first detail)
    left_pool: int = 0         # rows asked for that a load removed from the pool while the step ran (not written)
    redone: int = 0            # of ``computed``, rows stored before under other settings (another fingerprint)
    took_over: dict[str, Any] = field(default_factory=dict)  # the provenance the column had when this run replaced
    # another kind of step's values (a judge over the shipped scorer's ``quality``); {} otherwise
    failure_reasons_now: dict[str, tuple[int, str]] = field(default_factory=dict)  # as failure_reasons, of the rows
    # this run computed (``failed_now``)

    @property
    def valued_now(self) -> int:
        """Rows the step ran on now that got a complete value (``computed`` less those that failed)."""
        return self.computed - self.failed_now

    def failed_text(self) -> str:
        """``failed N``, saying how many failed before when a re-run reused them: an LLM step's were not sent again,
        any other step's (a signal, a scorer) not computed again."""
        earlier = self.failed - self.failed_now
        again = "sent" if self.provenance.get("kind") in SENDING_KINDS else "computed"
        return f"failed {self.failed:,}" + (f" ({earlier:,} from an earlier run, not {again} again)" if earlier else "")

    def counts_text(self) -> str:
        """``N rows — computed C, reused R, failed F``: computed counts the rows that got a value now (and the rows
        a load removed while the step ran, when it did); rows computed again because their stored values were of
        other settings (a judge's digit rule changed since: its answers come from the cache) are said to be."""
        left = f", {self.left_pool:,} left the pool during the run (not written)" if self.left_pool else ""
        again = f" ({self.redone_text()})" if self.redone else ""
        return (f"{self.rows:,} rows — computed {self.valued_now:,}, reused {self.skipped:,}{again}, "
                f"{self.failed_text()}{left}")

    def redone_text(self) -> str:
        """``200 of the rows computed again: ...`` when rows stored under other settings were computed now."""
        return (f"{self.redone:,} of the rows computed again: stored under other settings or by an earlier curate"
                if self.redone else "")

    def takeover_text(self) -> str:
        """``quality: the scorer's column (scorer imitating quality) is replaced by the judge's labels`` when this run
        took over a column another kind of step wrote ('' otherwise): labels are never overwritten, but a judge may
        take over a scorer's predictions, and it did so without a word."""
        if not self.took_over:
            return ""
        kind = self.provenance.get("kind") or "step"
        values = "labels" if kind == "judge" else "values"
        earlier, wrote = self.took_over.get("kind"), wrote_text(self.took_over)
        replaced = (f"the {earlier}'s column" + (f" ({wrote})" if wrote != earlier else "")) if earlier \
            else f"the column {wrote}"  # no kind: added with ws.add_column (human labels), or a step naming none
        return f"{self.column}: {replaced} is replaced by the {kind}'s {values}"

    def reasons_text(self) -> str:
        """Why rows failed: each reason code with its rows and one example detail ('' when none failed)."""
        parts = [f"{n:,} x {code} (e.g. {detail})" for code, (n, detail) in
                 sorted(self.failure_reasons.items(), key=lambda item: -item[1][0])]
        text = "; ".join(parts)
        if FailureCode.TRANSIENT in self.failure_reasons:  # as run_pipeline and the CLI say it
            text += "; transient: the judge did not answer, a re-run sends those rows again"
        return text

    def failed_now_warning(self) -> str:
        """The one line ``ws.apply`` warns with when rows failed in this call ('' when none did): how many, why (each
        reason code with its rows) and where each row's failure is kept."""
        if not self.failed_now:
            return ""
        codes = ", ".join(f"{n:,} x {code}" for code, (n, _) in
                          sorted(self.failure_reasons_now.items(), key=lambda item: -item[1][0]))
        example = max(self.failure_reasons_now.values(), key=lambda v: v[0])[1] if self.failure_reasons_now else ""
        return (f"{self.column}: {self.failed_now:,} of the {self.computed:,} rows computed now failed ({codes}"
                + (f"; e.g. {example}" if example else "") + f"); each row's failure is in column "
                f"'{self.column}_failure' (ws.show(ids, columns='{self.column}_failure'), ws.failures({self.column!r}))")

    def run_requests_text(self) -> str:
        """``requests: 2 new, 8 answered by the on-disk cache, ...`` for a judge or tagger that ran on rows now (this
        run's record, in the words ``curate judge`` prints, with the requests a stopped run paid for); '' otherwise."""
        runs = self.provenance.get("runs") or [self.provenance]
        if not self.computed or self.provenance.get("kind") not in SENDING_KINDS or "requests" not in runs[-1]:
            return ""
        return f"requests: {requests_text(runs[-1])}{stopped_run_text(runs[-1])}"

    def summary(self) -> str:
        """One line: the counts, then the failure reasons when rows failed, then what the run's requests were."""
        reasons, took_over, requests = self.reasons_text(), self.takeover_text(), self.run_requests_text()
        return (f"{self.column}: {self.counts_text()}" + (f" — {reasons}" if reasons else "")
                + f" ({self.seconds:.1f} s)" + (f"; {requests}" if requests else "")
                + (f"; {took_over}" if took_over else ""))

    def _repr_html_(self) -> str:
        reasons, took_over, requests = self.reasons_text(), self.takeover_text(), self.run_requests_text()
        return (f"<b>{html.escape(self.column)}</b>: {html.escape(self.counts_text())}"
                + (f" — {html.escape(reasons)}" if reasons else "") + f" ({self.seconds:.1f} s)"
                + (f"<br>{html.escape(requests)}" if requests else "")
                + (f"<br><i>{html.escape(took_over)}</i>" if took_over else ""))

    def __repr__(self) -> str:
        return f"ApplyResult({self.summary()})"
