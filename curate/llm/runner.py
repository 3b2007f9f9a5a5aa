"""The prompt runner: one cached call of a prompt per variable dict, interpreted by the prompt's output kind.

``run_prompt(prompt, variables, backend, cache)`` renders each request, finds it in the response cache
or sends it (a response is committed to the cache before it is used, so a killed run resends nothing
that finished; a request another call of this process is sending is waited for: ``curate.llm.sending``), and
interprets it: a digit score, a validated Pydantic object (json prompts, re-asked with the validation error), or
the text. Every result without a value carries a ``codes.Failure``
(code, message, raw output). Judges, the tagger and Evol all call through here.

Digit scores: :mod:`curate.llm.digits`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from curate.codes import Failure, FailureCode
from curate.defaults import BACKEND, JUDGE
from curate.errors import CurateError
from curate.llm import structured
from curate.llm.base import Backend, Request, format_usd, reply_token_limit
from curate.llm.cache import (
    ResponseCache,
    alias_header,
    key_from_header,
    key_header,
    request_key,
    response_cache,
)
from curate.llm.calls import CallResult, add_attempt, declined_failure, transport_failure
from curate.llm.digits import DIGIT_RULE as DIGIT_RULE  # re-exported: judge fingerprints name it
from curate.llm.digits import _token_digit as _token_digit  # re-exported: tests read it here
from curate.llm.digits import digit_score
from curate.llm.prompt_layout import check_digit_params
from curate.llm.prompts import FORBIDDEN_PARAMS, Prompt, PromptError, PromptRenderError, load_prompt
from curate.llm.sending import execute

# -- progress and sending -----------------------------------------------------------------------------
#: ``on_counts(failed, cached, paid_by_stopped_run)``: the items that ended failed so far (indices; don't change the
#: set), the requests the on-disk cache answered and the answers a stopped run paid for, as the call's bar counts them
OnCounts = Callable[[set[int], int, int], None]


class _Progress:
    """Counts of one call, shown on a bar over its items (or given to the caller's callback): the items that ended
    failed (whatever the reason, once each), answers the cache gave (``resumed``: ones a stopped run paid for and
    this run counts as its own), tokens and cost of what this run pays for (sent now, or resumed)."""

    def __init__(self, total: int, desc: str, enabled: bool, on_items: Callable[[list[int]], None] | None,
                 on_counts: OnCounts | None = None):
        self.bar = None
        if enabled:
            from curate.storage.progress import progress_bar

            self.bar = progress_bar(total, desc, True, unit="call")
        self.on_items, self.on_counts = on_items, on_counts
        self.failed: set[int] = set()  # the items whose call failed
        self.tokens = self.cached = self.resumed = 0
        self.cost: float | None = 0.0  # None once a response came without a known price
        self._last = 0.0

    def done(self, items: list[int], failed: list[int] | None = None) -> None:
        """These items have their first answer; ``failed``: those of them whose request failed."""
        self.failed.update(failed or ())
        if self.on_items is not None and items:
            self.on_items(items)
        if self.bar is not None and items:
            self.bar.update(len(items))
        if items and (self.bar is not None or self.on_counts is not None):
            now = time.monotonic()
            if now - self._last > 0.2:
                self._last = now
                self._show(refresh=False)

    def _show(self, refresh: bool) -> None:
        if self.bar is not None:
            self.bar.set_postfix(self.postfix(), refresh=refresh)
        if self.on_counts is not None:
            self.on_counts(self.failed, self.cached, self.resumed)

    def note(self, *, tokens: int = 0, cost: float | None = 0.0, cached: int = 0, resumed: int = 0) -> None:
        self.tokens += tokens
        self.cost = None if cost is None or self.cost is None else self.cost + cost
        self.cached += cached
        self.resumed += resumed

    def postfix(self) -> dict[str, Any]:
        cost = "unknown" if self.cost is None else format_usd(self.cost)
        return {"failed": len(self.failed), "cached": self.cached,
                **({"paid_by_stopped_run": self.resumed} if self.resumed else {}), "tokens": self.tokens, "cost": cost}

    def close(self, results: list[CallResult | None]) -> None:
        """The final counts: ``failed`` as ``results`` end (a validation failure after its re-asks, too)."""
        self.failed = {i for i, res in enumerate(results) if res is not None and res.failure is not None}
        self._show(refresh=True)
        if self.bar is not None:
            self.bar.close()


# -- requests -----------------------------------------------------------------------------------------
def request_params(prompt: Prompt, backend: Backend, params: dict[str, Any] | None) -> dict[str, Any]:
    """The generation parameters of a call: the prompt's, overridden by ``params``; digit scores ask for
    one token and its top logprobs."""
    forbidden = sorted(set(params or {}) & FORBIDDEN_PARAMS)
    if forbidden:
        raise CurateError(f"params {forbidden} are not allowed: they would redirect the request "
                          f"(the backend sets the model and the prompt the messages)")
    merged = {**prompt.params, **(params or {})}
    if prompt.output_kind == "digit_score":
        check_digit_params(params or {}, prompt.scale, f"{prompt.where} (the params given with it)")  # else sent as 1 in silence
        merged["max_tokens"] = 1
        if backend.supports_logprobs:
            merged["logprobs"] = True
            merged.setdefault("top_logprobs", BACKEND.top_logprobs)
        else:
            merged.pop("logprobs", None)
            merged.pop("top_logprobs", None)
    return merged


def build_requests(prompt: Prompt, variables: list[dict[str, Any]], backend: Backend, *,
                   params: dict[str, Any] | None = None, output_model: Any = None) -> list[Request]:
    """The requests ``run_prompt`` sends (messages, parameters, cache key), one per variable dict."""
    req_params = request_params(prompt, backend, params)
    mode = structured.instructor_mode(backend) if prompt.output_kind == "json" else None
    requests: list[Request] = []
    headers: dict[str, bytes] = {}
    for item in variables:
        try:
            messages = prompt.render(**item)
        except PromptRenderError as exc:
            exc.variables = item  # lets the caller name the row
            raise
        call_params = dict(req_params)
        if mode is not None:
            messages, extra = structured.shape_request(messages, output_model, mode)
            call_params.update(extra)
        params_id = repr(sorted(call_params.items()))
        header = headers.get(params_id)
        if header is None:
            header = headers[params_id] = key_header(model=backend.model, params=call_params)
        requests.append(Request(key_from_header(header, messages), messages, call_params))
    return requests


def _variable_aliases(prompt: Prompt, variables: list[dict[str, Any]], backend: Backend,
                      params: dict[str, Any] | None, output_model: Any) -> list[str | None]:
    """Per item, a hash of everything that determines its request before rendering (None if not hashable)."""
    schema = output_model.model_json_schema() if output_model is not None and hasattr(output_model, "model_json_schema") else None
    json_mode = structured.json_mode_fingerprint(backend) if schema is not None else None  # its text is sent
    header = alias_header(backend_kind=backend.kind, model=backend.model, prompt_fingerprint=prompt.fingerprint,
                          params={"params": request_params(prompt, backend, params), "schema": schema,
                                  "json_schema_mode": backend.supports_json_schema, "alias": 1,
                                  **({"json_mode_message": json_mode} if json_mode else {})})
    out: list[str | None] = []
    for item in variables:
        try:
            blob = orjson.dumps(item, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        except TypeError:
            out.append(None)
            continue
        out.append(hashlib.sha256(header + blob).hexdigest())
    return out


def _interpret(part: _Part, response: dict[str, Any], *, cached: bool, billed_key: str | None = None,
               recovered: bool = False, repeated: bool = False) -> CallResult:
    """A response to one of ``part``'s requests as a CallResult, read with the part's own digit floor and logprobs
    request (first asks and re-asks alike: one source); ``billed_key``: count it as this run's spending (sent now, or
    ``recovered``: paid by a stopped run), once per key; ``cached``: the on-disk cache's answer; ``repeated``: another
    item's request."""
    prompt = part.prompt
    if "failure" in response:  # ``repeated``: an item sharing another's failed request: no request of its own
        return CallResult(failure=transport_failure(response), raw=dict(response), requests=int(not repeated), repeated=repeated)
    result = CallResult(text=response.get("text"), raw=dict(response), usage=dict(response.get("usage") or {}),
                        cost_usd=float(response.get("cost_usd") or 0.0), cached=cached, repeated=repeated, recovered=recovered,
                        cached_requests=int(cached and not recovered), repeated_requests=int(repeated))
    if billed_key is not None:
        result.bill(billed_key)
    declined = declined_failure(response)
    if declined is not None:  # paid for, never re-asked (it would decline again), no value
        result.failure = declined
        return result
    if prompt.output_kind == "digit_score":
        assert prompt.scale is not None
        score, info, failure = digit_score(response, prompt.scale, part.floor, logprobs_requested=part.logprobs_requested,
                                           top_requested=part.top_requested)
        result.raw.update(info)
        result.parsed, result.failure = score, failure
    elif prompt.output_kind == "text":
        if not (result.text or "").strip():
            result.failure = Failure(FailureCode.EMPTY_OUTPUT, "the reply has no text", result.text)
        else:
            result.parsed = result.text
    return result


# -- the call -----------------------------------------------------------------------------------------
@dataclass
class PromptCall:
    """One prompt and its variable dicts with ``run_prompt``'s per-prompt options: a part of a ``run_prompts`` call."""

    prompt: str | os.PathLike | Prompt
    variables: list[dict[str, Any]]
    params: dict[str, Any] | None = None
    output_model: Any = None
    min_digit_mass: float | None = None
    validation_retries: int | None = None
    requests: list[Request] | None = None  # the items' requests, if the caller built them already (build_requests)


class _Part:
    """A PromptCall made ready: its prompt loaded, its output model and instructor mode, digit floor and re-asks."""

    def __init__(self, call: PromptCall, backend: Backend, prompt_dirs: list[str | os.PathLike] | None) -> None:
        self.prompt = load_prompt(call.prompt, prompt_dirs)
        self.variables, self.params, self.output_model = call.variables, call.params, call.output_model
        self.requests = call.requests or [None] * len(call.variables)
        if len(self.requests) != len(self.variables):
            raise CurateError(f"{len(self.requests)} requests given for {len(self.variables)} items")
        self.floor = JUDGE.min_digit_mass if call.min_digit_mass is None else call.min_digit_mass
        self.retries = JUDGE.validation_retries if call.validation_retries is None else call.validation_retries
        if self.prompt.output_kind == "json":
            self.output_model = self.output_model or self.prompt.model_class()
            if self.output_model is None:
                raise PromptError(f"{self.prompt.where}: a json prompt needs output.model (a Pydantic class) or "
                                  "output_model=")
        self.mode = structured.instructor_mode(backend) if self.prompt.output_kind == "json" else None
        sent = request_params(self.prompt, backend, self.params)
        self.logprobs_requested = bool(sent.get("logprobs"))
        self.top_requested = int(sent.get("top_logprobs") or 0) if self.logprobs_requested else 0
        self.reply_limit = reply_token_limit(sent)
        # temperature 0 (greedy) gives a cut-off reply back on every re-ask; unset is the server's default (OpenAI's
        # and vLLM's sample), so a second draw may finish within the limit
        self.deterministic = sent.get("temperature") == 0

    def build(self, variables: list[dict[str, Any]], backend: Backend) -> list[Request]:
        return build_requests(self.prompt, variables, backend, params=self.params, output_model=self.output_model)


def run_prompt(prompt: str | os.PathLike | Prompt, variables: list[dict[str, Any]], backend: Backend,
               cache: str | os.PathLike | ResponseCache, *, progress: bool = True,
               params: dict[str, Any] | None = None, output_model: Any = None, min_digit_mass: float | None = None,
               validation_retries: int | None = None, prompt_dirs: list[str | os.PathLike] | None = None,
               desc: str | None = None, on_items_done: Callable[[list[int]], None] | None = None,
               on_counts: OnCounts | None = None) -> list[CallResult]:
    """One cached call of ``prompt`` per dict in ``variables``; results in the same order.

    ``cache``: a ResponseCache, a folder (``responses.sqlite`` inside, e.g. ``ws.cache_dir``) or a file.
    ``digit_score`` prompts give the expected score in ``.parsed``; ``json`` prompts a validated Pydantic
    object (``output_model`` or the prompt's ``output.model``), with up to ``validation_retries`` re-asks;
    ``text`` prompts the text. Failures carry a code, a message and the raw output. ``on_items_done``
    hears the indices of items as their first response settles, ``on_counts`` the bar's counts as they change and
    once more when the call ends (:data:`OnCounts`; a caller's own progress).
    """
    call = PromptCall(prompt, variables, params, output_model, min_digit_mass, validation_retries)
    return run_prompts([call], backend, cache, progress=progress, prompt_dirs=prompt_dirs, desc=desc,
                       on_items_done=on_items_done, on_counts=on_counts)[0]


def run_prompts(calls: list[PromptCall], backend: Backend, cache: str | os.PathLike | ResponseCache, *,
                progress: bool = True, prompt_dirs: list[str | os.PathLike] | None = None, desc: str | None = None,
                on_items_done: Callable[[list[int]], None] | None = None,
                on_counts: OnCounts | None = None) -> list[list[CallResult]]:
    """``run_prompt`` of several prompts at once, one result list per call: their requests go to the backend in one
    ``run`` (one batch of openai-batch, one launch of vllm-batch), and so does each round of their re-asks. The same
    requests, cache keys and results as one ``run_prompt`` per call; ``on_items_done`` hears item indices counted
    over the calls in order, and so does ``on_counts``."""
    cache = response_cache(cache)
    parts = [_Part(call, backend, prompt_dirs) for call in calls]
    owner = [part for part in parts for _ in part.variables]  # each item's part
    variables = [item for part in parts for item in part.variables]
    aliases = [a for part in parts
               for a in _variable_aliases(part.prompt, part.variables, backend, part.params, part.output_model)]
    found = cache.get_aliased([a for a in aliases if a])
    results: list[CallResult | None] = [None] * len(variables)
    requests: list[Request | None] = [req for part in parts for req in part.requests]  # built: not rendered again
    hit_idx = [i for i, alias in enumerate(aliases) if alias in found]
    miss_idx = [i for i, alias in enumerate(aliases) if alias not in found]
    billed: set[str] = set()  # a key billed once per call, however many items share its request

    def interpret(i: int, response: dict[str, Any], key: str | None, cached: bool, recovered: bool) -> None:
        # shares a request already counted (sent now, or paid by a stopped run): answered by that response
        repeated = key in billed and (not cached or recovered)
        cached = cached and not repeated
        bill = key is not None and (not cached or recovered) and key not in billed
        if bill:
            billed.add(key)
        results[i] = _interpret(owner[i], response, cached=cached, billed_key=key if bill else None,
                                recovered=recovered and bill, repeated=repeated)

    stopped_run = cache.unrecorded_aliases([aliases[i] for i in hit_idx]) if hit_idx else {}
    for i in hit_idx:
        key = stopped_run.get(aliases[i])
        interpret(i, found[aliases[i]], key, True, key is not None)
    names = " + ".join(dict.fromkeys(part.prompt.name for part in parts))
    bar = _Progress(len(variables), desc or names, progress, on_items_done, on_counts)
    try:
        bar.note(cached=sum(results[i].cached_requests for i in hit_idx), resumed=sum(results[i].recovered for i in hit_idx))
        for res in (results[i] for i in hit_idx if results[i].recovered):  # a stopped run's: this run's spending
            bar.note(tokens=sum(res.billed_usage.values()), cost=res.billed_usd)
        bar.done(hit_idx, [i for i in hit_idx if results[i].failure is not None])
        if miss_idx:
            for part in parts:
                todo = [i for i in miss_idx if owner[i] is part and requests[i] is None]
                for i, req in zip(todo, part.build([variables[i] for i in todo], backend) if todo else [], strict=True):
                    requests[i] = req
            built: list[Request] = [requests[i] for i in miss_idx]  # type: ignore[misc]
            alias_by_key: dict[str, set[str]] = {}
            items_by_key: dict[str, list[int]] = {}
            for i, req in zip(miss_idx, built, strict=True):
                items_by_key.setdefault(req.key, []).append(i)
                if aliases[i]:
                    alias_by_key.setdefault(req.key, set()).add(aliases[i])
            def settled(answers: dict[str, dict[str, Any]]) -> None:
                bar.done([i for k in answers for i in items_by_key[k]],
                         [i for k, answer in answers.items() if "failure" in answer or declined_failure(answer)
                          for i in items_by_key[k]])

            responses, hits, recovered = execute(backend, cache, built, bar, alias_by_key, on_keys=settled)
            for i, req in zip(miss_idx, built, strict=True):
                interpret(i, responses[req.key], req.key, req.key in hits, req.key in recovered)
        if any(part.mode is not None for part in parts):
            def request_for(i: int) -> Request:
                if requests[i] is None:
                    requests[i] = owner[i].build([variables[i]], backend)[0]
                return requests[i]

            _validate_round(backend, cache, owner, request_for, results, bar)
    finally:
        bar.close(results)
    out, start = [], 0
    for part in parts:
        out.append(results[start:start + len(part.variables)])
        start += len(part.variables)
    return out  # type: ignore[return-value]


def _validate_round(backend: Backend, cache: ResponseCache, owner: list[_Part], request_for: Callable[[int], Request],
                    results: list[Any], bar: _Progress) -> None:
    """Validate json outputs with instructor; re-ask (cached, bounded) with the validation error, each round's
    re-asks of every part in one ``execute``."""
    pending: dict[int, Request | None] = {i: None for i, res in enumerate(results)
                                          if res.failure is None and owner[i].mode is not None}
    attempt = 0
    cut_asked: set[int] = set()  # items re-asked once already after a reply cut off at max_tokens
    while pending:
        retry: dict[int, Request] = {}
        for i, req in pending.items():
            res, part = results[i], owner[i]
            obj, err = structured.validate(res.raw, part.output_model, part.mode, backend.model)
            if err is None:
                res.parsed = obj
                continue
            exc, completion = err
            cut = (res.raw or {}).get("finish_reason") == "length"
            res.failure = (structured.truncated_failure(part.reply_limit, part.deterministic, i in cut_asked, attempt,
                                                       res.text) if cut else
                           Failure(FailureCode.INVALID_OUTPUT,
                                   f"output failed validation after {attempt + 1} attempt(s): {type(exc).__name__}: "
                                   f"{str(exc)[:300]}; raw output {(res.text or '')[:300]!r}", res.text))
            if cut and (part.deterministic or i in cut_asked):
                continue  # the same cut-off reply again would only be paid for again (F3: 3 requests a row)
            if cut:
                cut_asked.add(i)
            if attempt < part.retries:
                req = req or request_for(i)
                messages, params = structured.reask(req.messages, req.params, part.mode, completion, exc)
                key = request_key(model=backend.model, messages=messages, params=params)
                retry[i] = Request(key, messages, params)
        if not retry:
            return
        attempt += 1
        new, new_hits, recovered = execute(backend, cache, list(retry.values()), bar)
        asked: set[str] = set()
        for i, req in retry.items():
            old = results[i]
            shared = req.key in asked  # rows with the same request share one re-ask: one request, billed once
            asked.add(req.key)
            cached = req.key in new_hits
            fresh = _interpret(owner[i], new[req.key], cached=cached,
                               billed_key=None if shared or cached and req.key not in recovered else req.key,
                               recovered=req.key in recovered and not shared, repeated=shared and not cached)
            add_attempt(fresh, old)
            if fresh.failure is not None:  # transport failure on the re-ask: its code, the validation reason too
                fresh.failure = Failure(fresh.failure.code, f"{old.failure.message}; re-ask failed: "
                                        f"{fresh.failure.message}", old.text)
                fresh.text = old.text
            results[i] = fresh
        pending = {i: r for i, r in retry.items() if results[i].failure is None}
