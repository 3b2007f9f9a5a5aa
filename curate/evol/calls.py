"""How an Evol run calls the LLM (:class:`LLMCalls`: several prompts' calls sent together) and counts what it
paid (:class:`Usage`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from curate.codes import FailureCode


@dataclass
class Usage:
    requests: int = 0  # new (uncached) calls
    cached: int = 0    # answered by the on-disk response cache (an earlier run's answers)
    repeated: int = 0  # the same request as another call of this run: sent once, its one answer
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


@dataclass
class LLMCalls:
    """How run_evol calls the LLM: one backend, one response cache, one usage count."""
    backend: Any
    cache: Any
    usage: Usage
    progress: bool

    def run(self, calls: list[tuple[Any, list[dict[str, Any]], dict[str, Any]]], desc: str) -> list[list[Any]]:
        """Results of several prompts' calls, each (prompt, variables, run_prompt options), sent together: one batch
        or batch-runner launch for them all, and one for each round of their re-asks (``runner.run_prompts``)."""
        from curate.llm.runner import PromptCall, run_prompts

        parts = [PromptCall(prompt, variables, **options) for prompt, variables, options in calls]
        results = run_prompts(parts, self.backend, self.cache, progress=self.progress, desc=desc) if parts else []
        for res in (res for part in results for res in part):
            self.usage.add(res)
        return results
