"""Judges: prompt files run over rows through a backend, cached, with scores from logprobs.

``run_prompt`` is the generic cached call (one request per variable dict); ``Judge`` + ``score``
turn a prompt into workspace columns ``<column>``, ``<column>_failure`` and ``<column>_digit_mass``.

Digit scores (DEITA): one generated token with its top logprobs; tokens are mapped to digits by
their text (``"5"`` or ``" 5"``); the score is the expected digit under the softmax restricted to the
scale's digits, i.e. ``sum_k k * p_k / sum_k p_k``. The probability mass the digits carried is
recorded. If some digits are missing from the top logprobs, the present ones are renormalised only
when their mass is at least ``min_digit_mass`` (default 0.5); otherwise the row fails with the reason.
Without logprobs the digit is parsed from the text and the score is marked ``parsed``.
Never a default score.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from curate.llm.backends import MAX_COST_REASON, Backend, Request, format_usd, run_sync
from curate.llm.cache import ResponseCache, key_from_header, key_header, request_key
from curate.errors import CurateError
from curate.llm.prompts import FORBIDDEN_PARAMS, Prompt, PromptError, PromptRenderError, load_prompt

DEFAULT_MIN_DIGIT_MASS = 0.5
DEFAULT_TOP_LOGPROBS = 20
DEFAULT_VALIDATION_RETRIES = 2


@dataclass
class CallResult:
    """The outcome of one prompt call: ``parsed`` (score or Pydantic object) or ``failure`` (reason)."""

    text: str | None = None
    parsed: Any = None
    failure: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0})
    cost_usd: float = 0.0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def digit_mass(self) -> float | None:
        return self.raw.get("digit_mass")

    @property
    def score_method(self) -> str | None:
        return self.raw.get("score_method")


# -- digit scores -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=65536)
def _token_digit(token: str) -> int | None:
    text = token.replace("\u0120", " ").replace("\u2581", " ").strip()
    return int(text) if len(text) == 1 and text.isdigit() else None


def digit_score(response: dict[str, Any], scale: tuple[int, int],
                min_digit_mass: float = DEFAULT_MIN_DIGIT_MASS) -> tuple[float | None, dict[str, Any], str | None]:
    """(score, info, failure) from a response's first-token top logprobs, or its text without logprobs."""
    lo, hi = scale
    text = response.get("text") or ""
    top = response.get("top_logprobs")
    if top:
        probs: dict[int, float] = {}
        for entry in top:
            digit = _token_digit(entry["token"])
            if digit is not None and lo <= digit <= hi:
                probs[digit] = probs.get(digit, 0.0) + math.exp(entry["logprob"])
        mass = sum(probs.values())
        missing = [k for k in range(lo, hi + 1) if k not in probs]
        info = {"score_method": "logprobs", "digit_mass": mass, "missing_digits": missing}
        if not probs:
            return None, info, (f"no digit {lo}-{hi} among the {len(top)} top first-token logprobs "
                                f"(output {text[:80]!r})")
        if missing and mass < min_digit_mass:
            return None, info, (f"digits {missing} absent from the top logprobs and the present digits carry "
                                f"mass {mass:.3f} < min_digit_mass {min_digit_mass} (output {text[:80]!r})")
        return sum(k * p for k, p in probs.items()) / mass, info, None
    info = {"score_method": "parsed", "digit_mass": None, "missing_digits": None}
    match = re.match(r"\s*(\d+)", text)
    if not match:
        return None, info, f"no logprobs and no digit at the start of the output {text[:80]!r}"
    value = int(match.group(1))
    if not lo <= value <= hi:
        return None, info, f"no logprobs and parsed value {value} outside {lo}-{hi} (output {text[:80]!r})"
    return float(value), info, None


# -- structured output (instructor) -----------------------------------------------------------------
def _instructor_mode(backend: Backend):
    import instructor

    return instructor.Mode.JSON_SCHEMA if backend.supports_json_schema else instructor.Mode.JSON


def _as_completion(text: str, finish_reason: str | None, model: str):
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate({
        "id": "curate-cached", "object": "chat.completion", "created": 0, "model": model or "unknown",
        "choices": [{"index": 0, "finish_reason": finish_reason or "stop",
                     "message": {"role": "assistant", "content": text}}]})


def _validate_json(response: dict[str, Any], output_model, mode, model_name: str):
    """(object, None) or (None, (exception, completion))."""
    from instructor.processing import process_response

    completion = _as_completion(response.get("text") or "", response.get("finish_reason"), model_name)
    try:
        obj = process_response(completion, response_model=output_model, stream=False, mode=mode)
        return obj, None
    except Exception as exc:  # instructor raises ValidationError, JSONDecodeError, IncompleteOutputException ...
        return None, (exc, completion)


# -- the generic cached call ------------------------------------------------------------------------
def workspace_cache_path(ws: Any) -> Path:
    """A workspace's LLM response cache: every judge, tagger and Evol call of that workspace shares it."""
    return Path(ws.cache_dir) / "responses.sqlite"


def resolve_cache(cache_path: str | os.PathLike | ResponseCache | None) -> ResponseCache:
    """A ResponseCache from a cache, a file, a folder (``responses.sqlite`` inside), or None (curate's home)."""
    if isinstance(cache_path, ResponseCache):
        return cache_path
    if cache_path is None:
        from curate.llm.local import curate_home

        cache_path = curate_home() / "responses.sqlite"
    path = Path(cache_path)
    if path.is_dir() or not path.suffix:
        path = path / "responses.sqlite"
    return ResponseCache(path)


class _Progress:
    def __init__(self, total: int, desc: str, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="req", dynamic_ncols=True)
        self.failures = self.tokens = self.cached = 0
        self.cost = 0.0
        self._last = 0.0

    def update(self, n: int = 1, *, failed: int = 0, tokens: int = 0, cost: float = 0.0, cached: int = 0) -> None:
        self.failures += failed
        self.tokens += tokens
        self.cost += cost
        self.cached += cached
        if self.bar is not None:
            self.bar.update(n)
            now = time.monotonic()
            if now - self._last > 0.2:
                self._last = now
                self.bar.set_postfix(failed=self.failures, cached=self.cached, tokens=self.tokens,
                                     cost=format_usd(self.cost), refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.set_postfix(failed=self.failures, cached=self.cached, tokens=self.tokens,
                                 cost=format_usd(self.cost), refresh=True)
            self.bar.close()


def _execute(backend: Backend, cache: ResponseCache, requests: list[Request], progress: _Progress,
             aliases: dict[str, set[str]] | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Look every request up in the cache (batched); send the misses; commit each response before use.

    ``aliases`` (key -> variable hashes) are stored with the responses. Returns (responses by key,
    cached responses by key); failures appear as ``{"failure": ...}``.
    """
    aliases = aliases or {}
    by_key = {r.key: r for r in requests}
    hits = cache.get_many(list(by_key))
    out: dict[str, dict[str, Any]] = dict(hits)
    if hits:
        progress.update(len(hits), cached=len(hits))
        cache.add_aliases([(a, k) for k in hits for a in aliases.get(k, ())])
    misses = [r for k, r in by_key.items() if k not in hits]

    def on_done(req: Request, result: dict[str, Any]) -> None:
        if "failure" not in result:
            cache.put(req.key, result, tuple(aliases.get(req.key, ())))  # committed before anyone reads it
            usage = result.get("usage") or {}
            progress.update(tokens=usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
                            cost=result.get("cost_usd") or 0.0)  # None: price unknown
        else:
            progress.update(failed=1)
        out[req.key] = result

    if misses:
        run_sync(lambda: backend.run(misses, on_done))
    return out, hits


def _request_params(prompt: Prompt, backend: Backend, params: dict[str, Any] | None) -> dict[str, Any]:
    forbidden = sorted(set(params or {}) & FORBIDDEN_PARAMS)
    if forbidden:
        raise CurateError(f"params {forbidden} are not allowed: they would redirect the request "
                          f"(the backend sets the model and the prompt the messages)")
    merged = {**prompt.params, **(params or {})}
    if prompt.output_kind == "digit_score":
        merged["max_tokens"] = 1
        if backend.supports_logprobs:
            merged["logprobs"] = True
            merged.setdefault("top_logprobs", DEFAULT_TOP_LOGPROBS)
        else:
            merged.pop("logprobs", None)
            merged.pop("top_logprobs", None)
    return merged


def build_requests(prompt: Prompt, variables: list[dict[str, Any]], backend: Backend, *,
                   params: dict[str, Any] | None = None, output_model: Any = None) -> list[Request]:
    """The requests ``run_prompt`` sends (messages, parameters, cache key), one per variable dict."""
    req_params = _request_params(prompt, backend, params)
    mode = _instructor_mode(backend) if prompt.output_kind == "json" else None
    requests: list[Request] = []
    fingerprint = prompt.fingerprint
    headers: dict[str, bytes] = {}
    for item in variables:
        try:
            messages = prompt.render(**item)
        except PromptRenderError as exc:
            exc.variables = item  # lets the caller name the row
            raise
        call_params = dict(req_params)
        if mode is not None:
            from instructor.processing import handle_response_model

            _, kwargs = handle_response_model(output_model, mode=mode, messages=messages)
            messages = kwargs.pop("messages")
            call_params.update(kwargs)
        params_id = repr(sorted(call_params.items()))
        header = headers.get(params_id)
        if header is None:
            header = headers[params_id] = key_header(backend_kind=backend.kind, model=backend.model,
                                                     prompt_fingerprint=fingerprint, params=call_params)
        requests.append(Request(key_from_header(header, messages), messages, call_params))
    return requests


def run_prompt(prompt: str | os.PathLike | Prompt, variables: list[dict[str, Any]], backend: Backend,
               cache_path: str | os.PathLike | ResponseCache | None = None, *, progress: bool = True,
               params: dict[str, Any] | None = None, output_model: Any = None,
               min_digit_mass: float = DEFAULT_MIN_DIGIT_MASS, validation_retries: int = DEFAULT_VALIDATION_RETRIES,
               prompt_dirs: list[str | os.PathLike] | None = None, desc: str | None = None) -> list[CallResult]:
    """One cached call of ``prompt`` per dict in ``variables``; results in the same order.

    ``digit_score`` prompts give the expected score in ``.parsed``; ``json`` prompts a validated
    Pydantic object (``output_model`` or the prompt's ``output.model``), with up to
    ``validation_retries`` re-asks; ``text`` prompts the text. Failures carry a reason and the raw output.
    """
    prompt = load_prompt(prompt, prompt_dirs)
    cache = resolve_cache(cache_path)
    if prompt.output_kind == "json":
        output_model = output_model or prompt.model_class()
        if output_model is None:
            raise PromptError(f"prompt {prompt.name!r} is json but has no output model")
    mode = _instructor_mode(backend) if prompt.output_kind == "json" else None
    aliases = _variable_aliases(prompt, variables, backend, params, output_model)
    found = cache.get_aliased([a for a in aliases if a])
    results: list[CallResult | None] = [None] * len(variables)
    requests: list[Request | None] = [None] * len(variables)
    miss_idx = []
    for i, alias in enumerate(aliases):
        if alias in found:
            results[i] = _interpret(prompt, found[alias], True, min_digit_mass)
        else:
            miss_idx.append(i)
    bar = _Progress(len(variables) - len(miss_idx), desc or prompt.name, progress)
    try:
        if len(variables) > len(miss_idx):
            bar.update(len(variables) - len(miss_idx), cached=len(variables) - len(miss_idx))
        if miss_idx:
            built = build_requests(prompt, [variables[i] for i in miss_idx], backend, params=params,
                                   output_model=output_model)
            alias_by_key: dict[str, set[str]] = {}
            for i, req in zip(miss_idx, built, strict=True):
                requests[i] = req
                if aliases[i]:
                    alias_by_key.setdefault(req.key, set()).add(aliases[i])
            if bar.bar is not None:
                bar.bar.total += len({r.key for r in built})
                bar.bar.refresh()
            responses, hits = _execute(backend, cache, built, bar, alias_by_key)
            for i, req in zip(miss_idx, built, strict=True):
                results[i] = _interpret(prompt, responses[req.key], req.key in hits, min_digit_mass)
        if mode is not None:
            def request_for(i: int) -> Request:
                if requests[i] is None:
                    requests[i] = build_requests(prompt, [variables[i]], backend, params=params,
                                                 output_model=output_model)[0]
                return requests[i]

            _validate_round(prompt, backend, cache, request_for, results, output_model, mode,
                            validation_retries, bar)
    finally:
        bar.close()
    return results  # type: ignore[return-value]


def _variable_aliases(prompt: Prompt, variables: list[dict[str, Any]], backend: Backend,
                      params: dict[str, Any] | None, output_model: Any) -> list[str | None]:
    """Per item, a hash of everything that determines its request before rendering (None if not hashable)."""
    schema = output_model.model_json_schema() if output_model is not None and hasattr(output_model, "model_json_schema") else None
    header = key_header(backend_kind=backend.kind, model=backend.model, prompt_fingerprint=prompt.fingerprint,
                        params={"params": _request_params(prompt, backend, params), "schema": schema,
                                "json_schema_mode": backend.supports_json_schema, "alias": 1})
    out: list[str | None] = []
    for item in variables:
        try:
            blob = orjson.dumps(item, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
        except TypeError:
            out.append(None)
            continue
        out.append(hashlib.sha256(header + blob).hexdigest())
    return out


def _interpret(prompt: Prompt, response: dict[str, Any], cached: bool, min_digit_mass: float) -> CallResult:
    if "failure" in response:
        return CallResult(failure=response["failure"], raw=dict(response))
    result = CallResult(text=response.get("text"), raw=dict(response), usage=dict(response.get("usage") or {}),
                        cost_usd=float(response.get("cost_usd") or 0.0), cached=cached)
    if prompt.output_kind == "digit_score":
        assert prompt.scale is not None
        score, info, failure = digit_score(response, prompt.scale, min_digit_mass)
        result.raw.update(info)
        result.parsed, result.failure = score, failure
    elif prompt.output_kind == "text":
        result.parsed = result.text
    return result


def _validate_round(prompt, backend, cache, request_for, results, output_model, mode,
                    retries: int, bar: _Progress) -> None:
    """Validate json outputs with instructor; re-ask (cached, bounded) with the validation error."""
    from instructor.processing import handle_reask_kwargs

    pending: dict[int, Request | None] = {i: None for i, res in enumerate(results) if res.failure is None}
    attempt = 0
    while pending:
        retry: dict[int, Request] = {}
        for i, req in pending.items():
            res = results[i]
            obj, err = _validate_json(res.raw, output_model, mode, backend.model)
            if err is None:
                res.parsed = obj
                continue
            exc, completion = err
            reason = (f"output failed validation after {attempt + 1} attempt(s): {type(exc).__name__}: "
                      f"{str(exc)[:300]}; raw output {(res.text or '')[:300]!r}")
            res.failure = reason
            if attempt < retries:
                req = req or request_for(i)
                kwargs = handle_reask_kwargs({"messages": list(req.messages), **req.params}, mode, completion, exc)
                messages = kwargs.pop("messages")
                params = {k: v for k, v in kwargs.items() if k in req.params}
                key = request_key(backend_kind=backend.kind, model=backend.model,
                                  prompt_fingerprint=prompt.fingerprint, messages=messages, params=params)
                retry[i] = Request(key, messages, params)
        if not retry:
            return
        attempt += 1
        if bar.bar is not None:
            bar.bar.total += len({r.key for r in retry.values()})
        new, new_hits = _execute(backend, cache, list(retry.values()), bar)
        for i, req in retry.items():
            old = results[i]
            fresh = _interpret(prompt, new[req.key], req.key in new_hits, DEFAULT_MIN_DIGIT_MASS)
            fresh.usage = {k: old.usage.get(k, 0) + fresh.usage.get(k, 0) for k in ("prompt_tokens", "completion_tokens")}
            fresh.cost_usd += old.cost_usd
            if fresh.failure is not None:  # transport failure on the re-ask: keep the validation reason too
                fresh.failure = f"{old.failure}; re-ask failed: {fresh.failure}"
                fresh.text = old.text
            results[i] = fresh
        pending = {i: r for i, r in retry.items() if results[i].failure is None}


# -- judges -------------------------------------------------------------------------------------------
class Judge:
    """A prompt file plus the column it writes. ``output`` is the Pydantic model of json prompts."""

    def __init__(self, prompt: str | os.PathLike | Prompt, output: Any = None, column: str | None = None, *,
                 prompt_dirs: list[str | os.PathLike] | None = None, min_digit_mass: float = DEFAULT_MIN_DIGIT_MASS,
                 params: dict[str, Any] | None = None):
        self.prompt = load_prompt(prompt, prompt_dirs)
        if self.prompt.output_kind == "json" and output is None:
            output = self.prompt.model_class()
        self.output = output
        self.column = column or self.prompt.name
        self.min_digit_mass = min_digit_mass
        self.params = params or {}

    @property
    def name(self) -> str:
        return self.prompt.name

    def __repr__(self) -> str:
        return f"Judge({self.prompt.name!r}, column={self.column!r}, kind={self.prompt.output_kind})"

    def _repr_html_(self) -> str:
        return self.prompt._repr_html_()


BUILTIN_JUDGES = ("complexity", "quality", "alpagasus")


def get_judge(judge: str | os.PathLike | Judge | Prompt, prompt_dirs: list[str | os.PathLike] | None = None) -> Judge:
    """A Judge from a Judge, a Prompt, a built-in name, a name in ``prompt_dirs`` or a prompt file path."""
    if isinstance(judge, Judge):
        return judge
    return Judge(judge, prompt_dirs=prompt_dirs)


def __getattr__(name: str) -> Judge:
    # built-in judges as module attributes (curate.llm.judges.complexity ...), loaded on first use
    if name in BUILTIN_JUDGES:
        return Judge(name)
    raise AttributeError(name)


# Template variables the judge engine fills from the conversation; any other input is a pool or derived column.
_ROW_VARS = ("instruction", "response", "system", "turn", "conversation")


def _row_items(judge: Judge, conversations, pool_columns) -> list[list[dict[str, Any] | str]]:
    """Per row, per user turn: the template variables, or a failure reason string for that turn."""
    from curate.pools import user_turns

    needs_response = "response" in judge.prompt.inputs
    extra = [v for v in judge.prompt.inputs if v not in _ROW_VARS]
    rows = []
    for pos, conv in enumerate(conversations):
        system = next((t["content"] for t in conv if t["role"] == "system"), "")
        turns = user_turns(conv)
        if not turns:
            rows.append(["row has no user turn"])
            continue
        items: list[dict[str, Any] | str] = []
        for t, (instruction, response) in enumerate(turns, start=1):
            if needs_response and response is None:
                items.append(f"turn {t} has no assistant response")
                continue
            item = {"instruction": instruction, "response": response or "", "system": system, "turn": t,
                    "conversation": conv}
            for name in extra:
                item[name] = pool_columns[name][pos]
            items.append(item)
        rows.append(items)
    return rows


def score(ws, judge: str | os.PathLike | Judge, backend: Backend, *, ids: list[str] | None = None,
          cache_path: str | os.PathLike | None = None, progress: bool = True, params: dict[str, Any] | None = None,
          prompt_dirs: list[str | os.PathLike] | None = None, min_digit_mass: float | None = None) -> dict[str, Any]:
    """Run ``judge`` over the workspace rows (or ``ids``) and store its columns; returns a summary.

    Columns: ``<column>`` (float per row; a list per user turn when any row has several turns),
    ``<column>_failure`` (reason or None), ``<column>_digit_mass`` (digit scores; mass per row or turn).
    Every row without a score has a failure reason. Responses are cached in ``ws.cache_dir``.
    The summary counts ``rows_not_sent_max_cost`` (rows the backend's max_cost left unsent); its
    ``cost_usd`` is None when the model's price is unknown. A prompt that cannot render (undefined
    variable, sandbox violation) raises PromptRenderError naming the file and the first row it hit.
    """
    judge = get_judge(judge, prompt_dirs)
    with ws.column_lock(judge.column):  # a second process scoring this column waits, then hits the cache
        return _score_locked(ws, judge, backend, ids=ids, cache_path=cache_path, progress=progress, params=params,
                             min_digit_mass=min_digit_mass)


def _score_locked(ws, judge: Judge, backend: Backend, *, ids, cache_path, progress, params, min_digit_mass):
    floor = judge.min_digit_mass if min_digit_mass is None else min_digit_mass
    all_ids = ws.ids
    ids = all_ids if ids is None else list(ids)
    positions = [ws.index[i] for i in ids]
    # only the rows being scored become Python objects (not the whole pool)
    conversations = ws.pool.data.table.column("conversation").take(positions).to_pylist()
    extra = [v for v in judge.prompt.inputs if v not in _ROW_VARS]
    pool_columns = {}
    for name in extra:
        if name not in ws.pool.column_names and not ws.has_column(name):
            raise PromptError(f"prompt {judge.prompt.name!r} needs {name!r}, which is not a pool or derived column")
        pool_columns[name] = ws.column(name, ids)
    rows = _row_items(judge, conversations, pool_columns)
    flat = [item for items in rows for item in items if isinstance(item, dict)]
    started = time.time()
    cache = resolve_cache(cache_path or workspace_cache_path(ws))
    try:
        results = run_prompt(judge.prompt, flat, backend, cache, progress=progress,
                             params={**judge.params, **(params or {})}, output_model=judge.output,
                             min_digit_mass=floor, desc=f"{judge.column} ({len(ids):,} rows)")
    except PromptRenderError as exc:  # a prompt/config mistake: stop with the file and the first row it hit
        row_id = next((rid for rid, items in zip(ids, rows, strict=True) for item in items
                       if item is exc.variables), None)
        if row_id is None:
            raise
        raise PromptRenderError(f"{exc} (row id {row_id})") from exc
    seconds = time.time() - started

    it = iter(results)
    values: list[Any] = []
    failures: list[str | None] = []
    masses: list[Any] = []
    per_turn = any(len(items) > 1 for items in rows)
    counts = {"scored": 0, "failed": 0, "parsed": 0, "logprobs": 0, "renormalised": 0, "cached": 0,
              "not_sent_max_cost": 0}
    for items in rows:
        turn_values, turn_masses, reasons = [], [], []
        budget_stopped = False
        for t, item in enumerate(items, start=1):
            if isinstance(item, str):
                turn_values.append(None)
                turn_masses.append(None)
                reasons.append(item)
                continue
            res = next(it)
            counts["cached"] += res.cached
            if res.failure is None:
                value = res.parsed
                if judge.prompt.output_kind == "json":
                    value = res.parsed.model_dump_json() if hasattr(res.parsed, "model_dump_json") else json.dumps(res.parsed)
                turn_values.append(value)
                if res.score_method:
                    counts[res.score_method] += 1
                    counts["renormalised"] += bool(res.raw.get("missing_digits"))
            else:
                turn_values.append(None)
                reasons.append(res.failure if len(items) == 1 else f"turn {t}: {res.failure}")
                budget_stopped |= res.raw.get("reason_code") == MAX_COST_REASON
            turn_masses.append(res.digit_mass)
        ok = all(v is not None for v in turn_values)
        counts["scored" if ok else "failed"] += 1
        counts["not_sent_max_cost"] += budget_stopped
        if per_turn:
            values.append(turn_values)
            masses.append(turn_masses)
        else:
            values.append(turn_values[0])
            masses.append(turn_masses[0])
        failures.append("; ".join(reasons) if reasons else None)

    usage_prompt = sum(r.usage.get("prompt_tokens", 0) for r in results if not r.cached)
    usage_completion = sum(r.usage.get("completion_tokens", 0) for r in results if not r.cached)
    provenance = {
        "kind": "judge", "judge": judge.column, "prompt": judge.prompt.name, "prompt_version": judge.prompt.version,
        "prompt_fingerprint": judge.prompt.fingerprint, "prompt_path": str(judge.prompt.path or ""),
        "output_kind": judge.prompt.output_kind, "scale": list(judge.prompt.scale) if judge.prompt.scale else None,
        **backend.describe(),
        "params": _request_params(judge.prompt, backend, {**judge.params, **(params or {})}),
        "min_digit_mass": floor, "per_turn": per_turn, "rows": len(ids), "requests": len(results),
        "scored_rows": counts["scored"], "failed_rows": counts["failed"], "cached_requests": counts["cached"],
        "rows_not_sent_max_cost": counts["not_sent_max_cost"],
        "score_methods": {"logprobs": counts["logprobs"], "parsed": counts["parsed"],
                          "renormalised_missing_digits": counts["renormalised"]},
        "tokens": {"prompt": usage_prompt, "completion": usage_completion},
        "cost_usd": _total_cost(results, include_cached=False),
        "cost_usd_including_cached": _total_cost(results, include_cached=True),
        "seconds": round(seconds, 2),
    }
    column = judge.column
    if len(ids) < len(all_ids) and ws.has_column(column):
        # scoring a subset: keep the other rows' earlier values and reasons
        values, failures, masses, ids = _merge_subset(ws, column, ids, values, failures, masses, all_ids)
    ws.add_column(column, values, provenance, ids=ids)
    ws.add_column(f"{column}_failure", failures, {"kind": "judge_failure", "judge": column,
                                                  "prompt_fingerprint": judge.prompt.fingerprint}, ids=ids)
    if judge.prompt.output_kind == "digit_score":
        ws.add_column(f"{column}_digit_mass", masses, {"kind": "judge_digit_mass", "judge": column,
                                                       "prompt_fingerprint": judge.prompt.fingerprint}, ids=ids)
    return provenance


def _total_cost(results: list[CallResult], *, include_cached: bool) -> float | None:
    """USD of the answered requests; None (unknown, not $0) when one was answered without a known price."""
    picked = [r for r in results if include_cached or not r.cached]
    if any("cost_usd" in r.raw and r.raw["cost_usd"] is None for r in picked):
        return None
    return round(sum(r.cost_usd for r in picked), 8)


def _column_ids(ws, name: str) -> list[str]:
    """Ids stored in a derived column (the rows it covers)."""
    from curate.storage.files import read_arrow as _read_arrow

    return _read_arrow(ws.path / "columns" / f"{name}.arrow").column("id").to_pylist()


def _merge_subset(ws, column, ids, values, failures, masses, all_ids):
    covered = set(_column_ids(ws, column)) | set(ids)
    keep = [rid for rid in all_ids if rid in covered]
    old_values = ws.column(column, keep)
    old_failures = ws.column(f"{column}_failure", keep) if ws.has_column(f"{column}_failure") else [None] * len(keep)
    old_masses = (ws.column(f"{column}_digit_mass", keep) if ws.has_column(f"{column}_digit_mass")
                  else [None] * len(keep))
    pos = {rid: i for i, rid in enumerate(keep)}
    for rid, v, f, m in zip(ids, values, failures, masses, strict=True):
        old_values[pos[rid]], old_failures[pos[rid]], old_masses[pos[rid]] = v, f, m
    if any(isinstance(v, list) for v in old_values):  # one shape per column: per-turn lists everywhere
        old_values = [v if isinstance(v, list) or v is None else [v] for v in old_values]
        old_masses = [m if isinstance(m, list) or m is None else [m] for m in old_masses]
    return old_values, old_failures, old_masses, keep


def turn_scores(ws, column: str, ids: list[str] | None = None) -> list[list[float | None]]:
    """A judge column as per-turn lists for every row (a float column becomes one-element lists)."""
    return [v if isinstance(v, list) else [v] for v in ws.column(column, ids)]


def missing_report(ws, column: str) -> dict[str, int]:
    """Rows the judge ran on, those without a complete score, and how many of those lack a reason (should be 0)."""
    ids = _column_ids(ws, column)
    values = ws.column(column, ids)
    reasons = ws.column(f"{column}_failure", ids) if ws.has_column(f"{column}_failure") else [None] * len(values)
    missing = [i for i, v in enumerate(values) if v is None or (isinstance(v, list) and any(x is None for x in v))]
    return {"rows": len(values), "missing": len(missing), "unexplained": sum(1 for i in missing if not reasons[i])}


__all__ = ["BUILTIN_JUDGES", "CallResult", "DEFAULT_MIN_DIGIT_MASS", "Judge", "digit_score", "get_judge",
           "missing_report", "run_prompt", "score", "turn_scores", "CurateError"]
