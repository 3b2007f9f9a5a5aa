"""Evol dry runs: what ``run_evol`` would send and cost, at most, without sending anything.

A chain's later rewrites depend on the answers to its earlier ones, so the dry run walks each chain through the
response cache as the run would (:func:`curate.evol.run.run_chains` with a backend that sends nothing): a cached
rewrite gives the next step's prompt, a request an earlier run failed for good is not sent again, and the first
request the cache does not answer is rendered and counted exactly. What comes after it is bounded: a later rewrite
takes a parent no longer than the rewrite prompt's ``max_tokens`` (it is a reply) or the seed, a rank call shows the
seed and at most ``steps`` such replies, and each rank call may be re-asked up to ``JUDGE.validation_retries``
times. A fully cached chain counts nothing. The cache is only read (:class:`curate.llm.cache.LookupOnlyCache`): a
dry run writes nothing to the workspace. The returned :class:`EvolEstimate` is data (the CLI prints it).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from curate.codes import Failure, FailureCode
from curate.defaults import EVOL, JUDGE
from curate.evol.rules import RankFailure
from curate.evol.run import EvolPlan, VariantSet, plan_evol
from curate.llm.dryrun import LOCAL_SERVER_NOTE, PricedTokens

BATCH_KINDS = ("openai-batch", "vllm-batch")  # one batch (openai) or one runner launch (vllm) per backend call
NOT_SENT = "dry run: not sent"  # the failure a dry run's requests get: the chain stops there, as unanswered


@dataclass
class EvolEstimate(PricedTokens):
    """At most what an Evol run sends: requests by kind, tokens, USD online and through a batch API, batches."""

    kind: str
    backend: str
    model: str
    seeds: int
    steps: int
    rewrites: int           # seeds x steps: a rewrite per chain per step (fewer once a chain stops)
    rewrites_cached: int    # of them, not to send: answered by the on-disk cache, failed before (not sent again),
                            # in a batch still open, or the same request as another seed's
    ranks: int              # at most: rank calls to send (a chain whose rank reply is cached: none)
    reasks: int             # at most: ranks x validation_retries (a rank reply that fails its schema), and re-asks
                            # of cached rank replies
    prompt_tokens: int      # at most, of the requests to send (``tokens_exact``: counted by the model's tokenizer)
    output_tokens: int      # at most: each request's max_tokens
    tokenizer: str
    tokens_exact: bool
    backend_calls: int      # at most: one per step to send, one for the ranks, one per re-ask round
    batches: int | None     # batch backends: at most this many batches (openai-batch) or runner launches (vllm-batch)
    price_online: tuple[float, float] | None = None
    price_batch: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        """At most this many requests to send."""
        return self.rewrites - self.rewrites_cached + self.ranks + self.reasks

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "requests": self.requests, "usd_online": self.usd_online, "usd_batch": self.usd_batch}


class NotSending:
    """A backend that sends nothing: it keeps each request it is given and answers it ``NOT_SENT`` (a transient
    failure, so the chain stops there as an unanswered one does); every other attribute is the real backend's."""

    def __init__(self, backend: Any) -> None:
        self._backend = backend
        self.asked: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    async def run(self, requests: list[Any], on_done: Any) -> None:
        from curate.llm.base import failure_result

        for req in requests:
            self.asked.append(req)
            on_done(req, failure_result(NOT_SENT, FailureCode.BUDGET))


def estimate_evol(seeds: Any, backend: Any, *, kind: str = EVOL.kind, steps: int = EVOL.steps,
                  seed: int = EVOL.seed, cache_path: str | os.PathLike | Any, operations: Any = None,
                  rewrite_params: dict[str, Any] | None = None, rank_params: dict[str, Any] | None = None,
                  prompt_dirs: list[str | os.PathLike] | None = None, earlier_failures: dict[str, Failure] | None = None,
                  retry_failed: bool = JUDGE.retry_failed, earlier_sets: list[dict[str, Any]] | None = None
                  ) -> EvolEstimate:
    """What ``run_evol`` with the same arguments would send at most; sends nothing and starts no server."""
    from curate.evol.calls import LLMCalls, Usage
    from curate.evol.run import earlier_set_failures, replayed_failures, run_chains
    from curate.llm.cache import LookupOnlyCache
    from curate.llm.dryrun import prices
    from curate.llm.openai_backend import _max_tokens
    from curate.llm.tokens import token_counter

    plan = plan_evol(seeds, kind=kind, steps=steps, seed=seed, operations=operations, rules=None,
                     rewrite_params=rewrite_params, rank_params=rank_params, prompt_dirs=prompt_dirs)
    dry = NotSending(backend)
    open_keys = backend.keys_in_open_batches() if hasattr(backend, "keys_in_open_batches") else set()
    asked: dict[str, tuple[list[Any], set[str]]] = {}  # call name -> (requests to send, its items' first keys)

    def heard(desc: str, keys: list[str]) -> None:
        asked[desc] = ([r for r in dry.asked if r.key not in open_keys], set(keys))
        dry.asked.clear()

    ctx = LLMCalls(dry, LookupOnlyCache(cache_path), Usage(), False,
                   known_failures=replayed_failures(earlier_failures, retry_failed)
                   | earlier_set_failures(earlier_sets, plan, backend), after_call=heard)
    sets = run_chains(ctx, plan)
    counter = token_counter(backend)
    retries = JUDGE.validation_retries
    # exact: the requests the walk reached and the cache does not answer
    rewrites_sent = [r for desc, (reqs, _) in asked.items() if desc != "evol rank" for r in reqs]
    rank_reqs, rank_keys = asked.get("evol rank", ([], set()))
    first_ranks = [r for r in rank_reqs if r.key in rank_keys]
    exact = rewrites_sent + rank_reqs
    prompt_tokens = sum(counter.count([r.messages for r in exact]))
    output_tokens = sum(_max_tokens(r) for r in exact)
    rank_sizes = [(n, o) for n, o in zip(counter.count([r.messages for r in rank_reqs]),
                                         (_max_tokens(r) for r in rank_reqs), strict=True)]
    prompt_tokens += sum(n * retries + o * sum(range(1, retries + 1)) for n, o in rank_sizes)  # their re-asks
    output_tokens += sum(o * retries for _, o in rank_sizes)
    # bounded: what follows a chain's first request to send
    open_steps = [(vs, stopped) for vs in sets if (stopped := _stopped_at(vs, steps)) is not None]
    bound = _bounds(plan, open_steps, backend, counter, retries)
    steps_to_send = {int(desc.rsplit(" ", 1)[1]) for desc, (reqs, _) in asked.items() if desc != "evol rank" and reqs}
    steps_to_send |= {s for _, stopped in open_steps for s in range(stopped + 1, steps + 1)}
    ranks = len(first_ranks) + len(open_steps)
    reasks = retries * (ranks + len(rank_reqs) - len(first_ranks))
    calls = len(steps_to_send) + (1 if ranks or reasks else 0) + (retries if reasks else 0)
    batches = None
    if backend.kind in BATCH_KINDS:
        per_call = getattr(backend, "max_requests", None) or len(sets) or 1
        batches = calls * max(1, math.ceil(len(sets) / per_call))
    online, batch = prices(backend)
    notes = [f"re-asks: at most {retries} per rank call (JUDGE.validation_retries), each priced with the replies "
             "before it; the validation error's text is not counted"] if reasks else []
    if open_steps:
        notes.insert(0, f"{len(open_steps):,} chain(s) reach a request the cache does not answer: their later steps' "
                        "rewrites and rank calls are bounded, not rendered (their inputs are replies not yet made, each "
                        "at most the rewrite prompt's max_tokens)")
    rewrites_left = len(rewrites_sent) + sum(steps - stopped for _, stopped in open_steps)
    estimate = EvolEstimate(kind=kind, backend=backend.kind, model=backend.model, seeds=len(sets), steps=steps,
                            rewrites=len(sets) * steps, rewrites_cached=len(sets) * steps - rewrites_left, ranks=ranks,
                            reasks=reasks, prompt_tokens=prompt_tokens + bound[0],
                            output_tokens=output_tokens + bound[1], tokenizer=counter.name,
                            tokens_exact=counter.exact and not open_steps, backend_calls=calls, batches=batches,
                            price_online=online, price_batch=batch, notes=notes)
    if backend.kind == "local" and estimate.requests:
        notes.append(LOCAL_SERVER_NOTE)
    return estimate


def _stopped_at(vs: VariantSet, steps: int) -> int | None:
    """The step whose rewrite a chain sends (its later ones are not known yet), or None: the chain is known to its
    rank call (or stops where an earlier run left it unanswered, with ``retry_failed`` off)."""
    if vs.failure is not RankFailure.NOT_ANSWERED or NOT_SENT not in (vs.failure_detail or ""):
        return None
    done = len(vs.variants) - 1 + len(vs.eliminated)
    return done + 1 if done < steps else None


def _bounds(plan: EvolPlan, open_steps: list[tuple[VariantSet, int]], backend: Any, counter: Any,
            retries: int) -> tuple[int, int]:
    """At most the prompt and output tokens of the chains' steps after ``open_steps`` (the step each sends) and of
    their rank calls and re-asks."""
    from curate.evol.rules import rank_model
    from curate.llm.openai_backend import _max_tokens
    from curate.llm.runner import build_requests

    def inputs(vs: VariantSet, text: str) -> dict[str, Any]:
        return {"instruction": text} if plan.kind == "complexity" else {"instruction": vs.instruction, "response": text}

    params = {"seed": 0, **(plan.rewrite_params or {})}
    prompt_tokens = output_tokens = 0
    for vs, stopped in open_steps:
        later = plan.steps - stopped
        longest = output = 0
        for prompt in plan.prompts.values():
            (req,) = build_requests(prompt, [inputs(vs, "")], backend, params=params)
            longest, output = max(longest, counter.count([req.messages])[0]), max(output, _max_tokens(req))
        parent = max(counter.count([[{"role": "user", "content": v.text}]])[0] for v in vs.variants + vs.eliminated)
        prompt_tokens += later * (longest + max(output, parent))  # a parent: a reply, or a survivor already known
        output_tokens += later * output
        shown = {"variants": [vs.variants[0].text] + [""] * plan.steps, "scale_max": plan.steps + 1,
                 **({"instruction": vs.instruction} if plan.kind == "quality" else {})}
        (rank,) = build_requests(plan.rank_prompt, [shown], backend, params=plan.rank_params,
                                 output_model=rank_model(plan.steps + 1, plan.steps + 1))
        rank_prompt = counter.count([rank.messages])[0] + plan.steps * max(output, parent)
        rank_output = _max_tokens(rank)
        prompt_tokens += rank_prompt * (1 + retries) + rank_output * sum(range(1, retries + 1))
        output_tokens += rank_output * (1 + retries)
    return prompt_tokens, output_tokens
