"""One prompt call's outcome (:class:`CallResult`) and what a step's calls cost, as its run records it.

A call's *billed* part is what the run that made it must count as its own spending: the requests it sent, and
cached answers that a run stopped before storing its record had paid for (``recovered``; the response cache lists
those as unrecorded until a record holds them). Everything else the cache answered is free now.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curate.codes import Failure, FailureCode


@dataclass
class CallResult:
    """The outcome of one prompt call: ``parsed`` (score, Pydantic object or text) or ``failure``."""

    text: str | None = None
    parsed: Any = None
    failure: Failure | None = None
    raw: dict[str, Any] = field(default_factory=dict)  # the stored response (+ digit-score info)
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    cost_usd: float = 0.0
    cached: bool = False    # answered by the on-disk response cache (an earlier run's answer), every attempt
    repeated: bool = False  # answered without a request of its own, by another item's request of this call (sent
    # once) at least once and by the cache otherwise: this call asked the same thing twice, never ``cached`` too
    # What this call's run must count as its own spending: the requests sent now, and cached answers that a run
    # stopped before its record had paid for (``recovered``); their keys are marked recorded once the record is stored.
    billed_keys: list[str] = field(default_factory=list)
    billed_usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    billed_usd: float | None = 0.0  # None: a billed response came without a known price
    recovered: bool = False
    requests: int = 1           # the requests behind this result: its first and each re-ask (add_attempt)
    cached_requests: int = 0    # of them, answered by the on-disk cache (not a stopped run's unrecorded answers)
    repeated_requests: int = 0  # of them, the same request as another item of this call: sent once, its one answer

    def bill(self, key: str) -> None:
        """Count this result's own response (its usage and price) as spending of the run now."""
        self.billed_keys.append(key)
        self.billed_usage = {k: self.billed_usage.get(k, 0) + int(self.usage.get(k) or 0)
                             for k in ("prompt_tokens", "completion_tokens")}
        price = self.raw.get("cost_usd", 0.0)
        self.billed_usd = None if self.billed_usd is None or price is None else self.billed_usd + float(price)

    def __repr__(self) -> str:
        """Short (a notebook prints lists of them): the parsed value or the failure's code, the text shortened, the
        digit mass, whether cached; the raw response's top logprobs counted, not shown (``.raw`` has them whole)."""
        parts = [f"failure={self.failure.code.value!r}" if self.failure else f"parsed={_short(self.parsed)}"]
        if self.text is not None and self.text != self.parsed:
            parts.append(f"text={_short(self.text)}")
        if self.digit_mass is not None:
            parts.append(f"digit_mass={self.digit_mass:.3g}")
        if top := self.raw.get("top_logprobs"):
            parts.append(f"top_logprobs=<{len(top)}>")
        if self.cached:
            parts.append("cached=True")
        return f"CallResult({', '.join(parts)})"

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def digit_mass(self) -> float | None:
        return self.raw.get("digit_mass")

    @property
    def score_method(self) -> str | None:
        return self.raw.get("score_method")


def _short(value: Any, width: int = 60) -> str:
    """``repr(value)``, cut to ``width`` characters with an ellipsis."""
    text = repr(value)
    return text if len(text) <= width else text[:width - 1] + "…"


def total_cost(results: list[CallResult]) -> float | None:
    """USD of every answer, the cached ones too; None (unknown, not $0) when one was answered without a known price."""
    if any("cost_usd" in r.raw and r.raw["cost_usd"] is None for r in results):
        return None
    return round(sum(r.cost_usd for r in results), 8)


def call_usage(results: list[CallResult], priced: bool = True) -> dict[str, Any]:
    """What a step's calls cost, as its run records it: requests (cached, left unsent by max_cost, paid by a run that
    was stopped before recording them), then the tokens and USD this run counts (None when a price is unknown: an
    answer without one, or, ``priced`` False, a model without one that was sent requests, answered or not: a
    --retry-failed run whose requests all failed again said $0.00 where its first run said cost unknown)."""
    billed = [r for r in results if r.billed_keys]
    usd = [r.billed_usd for r in billed]
    requests, cached, repeated = (sum(getattr(r, k) for r in results)
                                  for k in ("requests", "cached_requests", "repeated_requests"))
    if not priced and requests > cached + repeated:
        usd.append(None)
    return {"requests": requests, "cached_requests": cached, "repeated_requests": repeated,
            # the last request of a result (a re-ask's, perhaps); none for a row sharing another's unsent request
            "requests_not_sent_max_cost": sum(min(r.requests, 1) for r in results
                                              if r.failure is not None and r.failure.code is FailureCode.BUDGET),
            "requests_not_sent_refused": sum(min(r.requests, 1) for r in results if r.raw.get("not_sent")),
            "requests_paid_by_stopped_run": sum(r.recovered for r in results),
            "tokens": {"prompt": sum(r.billed_usage["prompt_tokens"] for r in billed),
                       "completion": sum(r.billed_usage["completion_tokens"] for r in billed)},
            "cost_usd": None if None in usd else round(sum(usd), 8)}


def billed_keys(results: list[CallResult]) -> list[str]:
    """The keys of every response ``results`` count as spending: mark them recorded once their run record is stored."""
    return [k for r in results for k in r.billed_keys]


def add_attempt(fresh: CallResult, old: CallResult) -> None:
    """Fold an earlier attempt of the same item (a re-ask's first answer) into ``fresh``: usage, cost, billing."""
    fresh.usage = {k: old.usage.get(k, 0) + fresh.usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens")}
    fresh.cost_usd += old.cost_usd
    unsent = (fresh.cached or fresh.repeated) and (old.cached or old.repeated)  # no attempt sent a request
    fresh.cached = fresh.cached and old.cached
    fresh.repeated = unsent and not fresh.cached
    fresh.requests, fresh.cached_requests = old.requests + fresh.requests, old.cached_requests + fresh.cached_requests
    fresh.repeated_requests += old.repeated_requests
    fresh.recovered = fresh.recovered or old.recovered
    fresh.billed_keys = old.billed_keys + fresh.billed_keys
    fresh.billed_usage = {k: old.billed_usage[k] + fresh.billed_usage[k] for k in ("prompt_tokens", "completion_tokens")}
    fresh.billed_usd = None if old.billed_usd is None or fresh.billed_usd is None else old.billed_usd + fresh.billed_usd


def transport_failure(response: dict[str, Any]) -> Failure:
    """The Failure of a request the backend could not answer (its ``reason_code``; transient when absent)."""
    return Failure(FailureCode(response.get("reason_code") or FailureCode.TRANSIENT), response["failure"])


def declined_failure(response: dict[str, Any]) -> Failure | None:
    """A reply the model declined: the API's ``refusal`` (OpenAI sends it with no content) or a reply a content
    filter stopped (``finish_reason`` content_filter: the text is cut off where the filter struck)."""
    if response.get("refusal"):
        return Failure(FailureCode.REFUSED, f"the model refused: {str(response['refusal'])[:300]}", response["refusal"])
    if response.get("finish_reason") == "content_filter":
        return Failure(FailureCode.REFUSED, "a content filter stopped the reply (finish_reason content_filter)",
                       response.get("text"))
    return None
