"""Evol dry runs: what ``run_evol`` would send and cost, at most, without sending anything.

A chain's later rewrites depend on the answers to its earlier ones, so only the first step's requests can be
rendered (and looked up in the response cache) exactly. The rest are bounded: a rewrite of step 2 or later takes a
parent no longer than the rewrite prompt's ``max_tokens`` (it is a reply), a rank call shows the seed and at most
``steps`` such replies, and each rank call may be re-asked up to ``JUDGE.validation_retries`` times. The returned
:class:`EvolEstimate` is data (the CLI prints it).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from curate.defaults import EVOL, JUDGE
from curate.errors import CurateError
from curate.evol.rules import (
    INSTRUCTION_OPERATIONS,
    KINDS,
    RANK_PROMPTS,
    RESPONSE_OPERATIONS,
    choose_operation,
)
from curate.evol.run import _seed_rows
from curate.llm.dryrun import LOCAL_SERVER_NOTE, PricedTokens

BATCH_KINDS = ("openai-batch", "vllm-batch")  # one batch (openai) or one runner launch (vllm) per backend call


@dataclass
class EvolEstimate(PricedTokens):
    """At most what an Evol run sends: requests by kind, tokens, USD online and through a batch API, batches."""

    kind: str
    backend: str
    model: str
    seeds: int
    steps: int
    rewrites: int           # seeds x steps: a rewrite per chain per step (fewer once a chain stops)
    rewrites_cached: int    # of the first step's, not to send: answered by the on-disk cache, in a batch still open,
                            # or the same request as another seed's (later steps: not known before they run)
    ranks: int              # one per seed whose set keeps two or more variants
    reasks: int             # at most: ranks x validation_retries (a rank reply that fails its schema)
    prompt_tokens: int      # at most, of the requests to send (``tokens_exact``: counted by the model's tokenizer)
    output_tokens: int      # at most: each request's max_tokens
    tokenizer: str
    tokens_exact: bool
    backend_calls: int      # at most: one per step, one for the ranks, one per re-ask round
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


def estimate_evol(seeds: Any, backend: Any, *, kind: str = "complexity", steps: int = EVOL.steps,
                  seed: int = EVOL.seed, cache_path: str | os.PathLike | Any, operations: Any = None,
                  rewrite_params: dict[str, Any] | None = None, rank_params: dict[str, Any] | None = None,
                  prompt_dirs: list[str | os.PathLike] | None = None) -> EvolEstimate:
    """What ``run_evol`` with the same arguments would send at most; sends nothing and starts no server."""
    from curate.evol.rules import derive_seed, rank_model
    from curate.llm.cache import response_cache
    from curate.llm.dryrun import plan_requests, prices
    from curate.llm.openai_backend import _max_tokens
    from curate.llm.prompts import load_prompt
    from curate.llm.runner import build_requests
    from curate.llm.tokens import token_counter

    if kind not in KINDS:
        raise CurateError(f"kind must be one of {KINDS}, not {kind!r}")
    if steps < 1:
        raise CurateError("steps must be at least 1")
    operations = tuple(operations or (INSTRUCTION_OPERATIONS if kind == "complexity" else RESPONSE_OPERATIONS))
    rows = _seed_rows(seeds, kind)
    field_name = "instruction" if kind == "complexity" else "response"
    cache = response_cache(cache_path)
    prompts = {op: load_prompt(f"evol/{op}", prompt_dirs) for op in operations}
    rank_prompt = load_prompt(f"evol/{RANK_PROMPTS[kind]}", prompt_dirs)
    counter = token_counter(backend)
    params = {"seed": derive_seed(seed, "sample", 1), **(rewrite_params or {})}

    def inputs(row: dict[str, str], text: str) -> dict[str, Any]:
        return {"instruction": text} if kind == "complexity" else {"instruction": row["instruction"], "response": text}

    prompt_tokens = output_tokens = cached = first_to_send = 0
    open_keys = backend.keys_in_open_batches() if hasattr(backend, "keys_in_open_batches") else set()
    for op, prompt in prompts.items():  # step 1: the seeds are known, so are its requests
        chosen = [r for r in rows if choose_operation(operations, seed, r["id"], 1) == op]
        if not chosen:
            continue
        to_send, hits, repeated = plan_requests(prompt, [inputs(r, r[field_name]) for r in chosen], backend, cache,
                                                params=params)
        cached += hits + repeated + sum(r.key in open_keys for r in to_send)
        to_send = [r for r in to_send if r.key not in open_keys]
        first_to_send += len(to_send)
        prompt_tokens += sum(counter.count([r.messages for r in to_send]))
        output_tokens += sum(_max_tokens(r) for r in to_send)
    # steps 2..M: each parent is a reply, at most the rewrite's max_tokens long, or the seed again where a step's
    # rewrite was eliminated (a long seed cut off at max_tokens is rewritten again); the longest prompt of each row
    reply_max = 0
    for row in rows:
        longest = output = 0
        for prompt in prompts.values():
            (req,) = build_requests(prompt, [inputs(row, "")], backend, params=params)
            reply_max = max(reply_max, _max_tokens(req))
            longest, output = max(longest, counter.count([req.messages])[0]), max(output, _max_tokens(req))
        seed = counter.count([[{"role": "user", "content": str(row[field_name])}]])[0]
        prompt_tokens += (steps - 1) * (longest + max(output, seed))
        output_tokens += (steps - 1) * output
    # ranks: the seed and at most ``steps`` replies; a re-ask repeats the call with the reply and the error after it
    rank_variables = [{"variants": [row[field_name]] + [""] * steps, "scale_max": steps + 1,
                       **({"instruction": row["instruction"]} if kind == "quality" else {})} for row in rows]
    rank_requests = build_requests(rank_prompt, rank_variables, backend, params=rank_params,
                                   output_model=rank_model(steps + 1, steps + 1))
    rank_prompt_tokens = sum(counter.count([r.messages for r in rank_requests])) + len(rows) * steps * reply_max
    rank_output = sum(_max_tokens(r) for r in rank_requests)
    retries = JUDGE.validation_retries
    prompt_tokens += rank_prompt_tokens * (1 + retries) + rank_output * sum(range(1, retries + 1))
    output_tokens += rank_output * (1 + retries)

    calls = (1 if first_to_send else 0) + (steps - 1) + 1 + retries
    batches = None
    if backend.kind in BATCH_KINDS:
        per_call = getattr(backend, "max_requests", None) or len(rows) or 1
        batches = calls * max(1, math.ceil(len(rows) / per_call))
    online, batch = prices(backend)
    notes = ["later steps' rewrites and the rank calls are bounded, not rendered: their inputs are the replies "
             "of earlier steps (each at most the rewrite prompt's max_tokens), and may be cached already",
             f"re-asks: at most {retries} per rank call (JUDGE.validation_retries), each priced with the replies "
             "before it; the validation error's text is not counted"]
    estimate = EvolEstimate(kind=kind, backend=backend.kind, model=backend.model, seeds=len(rows), steps=steps,
                        rewrites=len(rows) * steps, rewrites_cached=cached, ranks=len(rows),
                        reasks=len(rows) * retries, prompt_tokens=prompt_tokens, output_tokens=output_tokens,
                        tokenizer=counter.name, tokens_exact=counter.exact, backend_calls=calls, batches=batches,
                        price_online=online, price_batch=batch, notes=notes)
    if backend.kind == "local" and estimate.requests:
        notes.append(LOCAL_SERVER_NOTE)
    return estimate
