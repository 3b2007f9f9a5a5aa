"""How an Evol run calls the LLM (:class:`LLMCalls`: several prompts' calls sent together) and counts what it
paid (:class:`Usage`).

Failed requests are not cached (:mod:`curate.llm.sending`), so :class:`LLMCalls` keeps them itself, by request key:
a run records every failed request (``failures``, stored with its label set as ``failures.jsonl``) and is given the
earlier run's failures not to send again (``known_failures``: those failed for a permanent reason, and with
``retry_failed=False`` the transient ones too); their failure is replayed, as the judges' failure column does."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from curate.codes import Failure, FailureCode


@dataclass
class Usage:
    requests: int = 0  # new (uncached) calls
    cached: int = 0    # answered by the on-disk response cache (an earlier run's answers)
    repeated: int = 0  # the same request as another call of this run: sent once, its one answer
    failed_before: int = 0  # not sent: an earlier run's failure of the same request is replayed (known_failures)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float | None = 0.0  # None once a model's price is unknown
    not_sent: int = 0  # refused by max_cost
    paid_by_stopped_run: int = 0  # cached answers a run stopped before storing its labels had paid for
    billed_keys: list[str] = field(default_factory=list)  # marked recorded once the labels are stored

    def add(self, result: Any) -> None:
        """Count one CallResult of the runner (free now if cached or repeated, unless a stopped run paid it)."""
        if result.repeated or result.cached and not result.recovered:  # this run's answer, or an earlier run's
            self.repeated += result.repeated
            self.cached += not result.repeated
            return
        if result.failure is not None and result.failure.code is FailureCode.BUDGET:
            self.not_sent += 1
            return
        self.requests += 1
        self.paid_by_stopped_run += result.recovered
        self.billed_keys.extend(result.billed_keys)
        self.prompt_tokens += result.billed_usage["prompt_tokens"]
        self.completion_tokens += result.billed_usage["completion_tokens"]
        self.cost_usd = None if self.cost_usd is None or result.billed_usd is None else self.cost_usd + result.billed_usd


def first_requests(prompt: Any, variables: list[dict[str, Any]], backend: Any, options: dict[str, Any]) -> list[Any]:
    """Each item's (first) request, as ``run_prompts`` builds it: its cache key, and given to ``run_prompts`` so that
    it does not render the prompts again."""
    from curate.llm.runner import build_requests

    output_model = options.get("output_model")
    if output_model is None and prompt.output_kind == "json":
        output_model = prompt.model_class()
    return build_requests(prompt, variables, backend, params=options.get("params"), output_model=output_model)


@dataclass
class LLMCalls:
    """How run_evol calls the LLM: one backend, one response cache, one usage count, and the failed requests."""
    backend: Any
    cache: Any
    usage: Usage
    progress: bool
    known_failures: dict[str, Failure] = field(default_factory=dict)  # by request key: replayed, not sent
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # this run's failed requests, by key
    after_call: Callable[[str, list[str]], None] | None = None  # hears each call's name and its items' request keys

    def run(self, calls: list[tuple[Any, list[dict[str, Any]], dict[str, Any]]], desc: str) -> list[list[Any]]:
        """Results of several prompts' calls, each (prompt, variables, run_prompt options), sent together: one batch
        or batch-runner launch for them all, and one for each round of their re-asks (``runner.run_prompts``).
        Items whose request an earlier run saw fail (``known_failures``) are not sent: their failure comes back. Each
        item's prompt is rendered once: its request, built here for its key, is the one ``run_prompts`` sends."""
        from curate.llm.base import failure_result
        from curate.llm.calls import CallResult
        from curate.llm.runner import PromptCall, run_prompts

        built = [first_requests(prompt, variables, self.backend, options) for prompt, variables, options in calls]
        keys = [[req.key for req in part] for part in built]
        to_send = [[i for i, key in enumerate(part) if key not in self.known_failures] for part in keys]
        parts = [PromptCall(prompt, [variables[i] for i in send], **options, requests=[reqs[i] for i in send])
                 for (prompt, variables, options), send, reqs in zip(calls, to_send, built, strict=True) if send]
        sent = iter(run_prompts(parts, self.backend, self.cache, progress=self.progress, desc=desc) if parts else [])
        results: list[list[Any]] = []
        for part, send in zip(keys, to_send, strict=True):
            answers = dict(zip(send, next(sent) if send else [], strict=True))
            out = []
            for i, key in enumerate(part):
                res = answers.get(i)
                if res is None:  # an earlier run's failure of this very request, its raw as the first run had it
                    known = self.known_failures[key]
                    res = CallResult(failure=known, cached=True, raw=failure_result(known.message, known.code)
                                     if known.raw is None else {})
                    self.usage.failed_before += 1
                else:
                    self.usage.add(res)
                if res.failure is not None:
                    self.failures[key] = {"key": key, "call": desc, **res.failure.to_dict()}
                out.append(res)
            results.append(out)
        if self.after_call is not None:
            self.after_call(desc, [key for part in keys for key in part])
        return results
