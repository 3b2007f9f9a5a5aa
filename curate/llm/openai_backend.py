"""``OpenAIBackend``: any OpenAI-compatible chat endpoint (OpenAI, a vLLM server, llama.cpp ...).

Bounded concurrency, RPS/RPM/TPM limits, retries (exponential backoff + full jitter, ``Retry-After``
honoured) on 429/5xx/timeouts/connection errors/malformed bodies, a per-request timeout (a retry after a
timeout waits longer: ``limits.TimeoutLadder``), token and $ cost accounting, and a hard ``max_cost`` cap
checked *before* each request is sent: each request reserves its worst-case cost; one that does not fit
waits for the requests in flight to settle, and fails (code ``budget``) only when nothing is in flight
and it still does not fit. A permanent HTTP
status fails with code ``http_error`` (``context_too_long`` when the server says the request exceeds the
model's context); retries spent on transient errors with code ``transient``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import math
import os
import random
import re
import time
from email.utils import parsedate_to_datetime
from typing import Any

from curate.codes import FailureCode
from curate.defaults import BACKEND
from curate.errors import CurateError, OptionError, python_and_cli
from curate.llm.base import (
    Backend,
    OnDone,
    Request,
    check_max_cost,
    estimate_tokens,
    failure_result,
    format_usd,
    is_loopback,
    price_of,
    refused_code,
    reply_token_limit,
)
from curate.llm.endpoint import (
    REFUSED_SETTINGS,
    refused_settings,
    transient_status,
    used_base_url,
    without_credentials,
)
from curate.llm.limits import TimeoutLadder, _RateLimiter, _WindowLimiter


def check_settings(*, concurrency: int, rpm: int | None, tpm: int | None, rps: float | None, timeout: float,
                   max_retries: int) -> None:
    """Refuse a client setting that cannot work, by name (--timeout nan made every request a transient failure,
    --max-retries -1 sent nothing, --concurrency 0 became 1 and --rpm -5 no limit, all in silence)."""
    def whole(v: float, least: int) -> bool:
        return math.isfinite(float(v)) and int(v) == v and v >= least

    wrong = [f"{name} must be a whole number >= {least} (got {v})"
             for name, v, least in (("concurrency", concurrency, 1), ("rpm", rpm, 1), ("tpm", tpm, 1),
                                    ("max_retries", max_retries, 0)) if v is not None and not whole(v, least)]
    wrong += [f"{name} must be > 0 (a number of {unit}; got {v})" for name, v, unit in
              (("rps", rps, "requests a second"), ("timeout", timeout, "seconds"))
              if v is not None and not (math.isfinite(float(v)) and v > 0)]
    if wrong:
        raise OptionError("; ".join(wrong))


class OpenAIBackend(Backend):
    """An OpenAI-compatible chat endpoint (OpenAI, vLLM server, llama.cpp server ...)."""

    kind = "openai"

    def __init__(self, base_url: str | None, model: str, api_key_env: str = BACKEND.api_key_env,
                 concurrency: int = BACKEND.concurrency, rpm: int | None = None, tpm: int | None = None,
                 timeout: float = BACKEND.timeout_s, max_retries: int = BACKEND.max_retries,
                 max_cost: float | None = None, *, api_key: str | None = None, kind: str | None = None,
                 supports_logprobs: bool = True, supports_json_schema: bool | None = None,
                 backoff_base: float = BACKEND.backoff_base_s, backoff_max: float = BACKEND.backoff_max_s,
                 rps: float | None = None):
        self.base_url = used_base_url(base_url)  # as the client sends it: a $OPENAI_BASE_URL is recorded too
        self.model = model
        self.api_key_env = api_key_env
        self._api_key = api_key  # kept out of describe(), repr and the cache
        check_settings(concurrency=concurrency, rpm=rpm, tpm=tpm, rps=rps, timeout=timeout, max_retries=max_retries)
        self.concurrency = int(concurrency)
        self.rpm, self.tpm, self.rps = rpm, tpm, rps
        # the limits hold across runs (a Judge sends a large pool in several runs)
        self._limiters = (_RateLimiter(rps) if rps else None, _WindowLimiter(rpm) if rpm else None,
                          _WindowLimiter(tpm) if tpm else None)
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_cost = max_cost
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.retry_after_max = BACKEND.retry_after_max_s
        if kind:
            self.kind = kind
        self.supports_logprobs = supports_logprobs
        # OpenAI itself and vLLM enforce json_schema; other servers may only know json_object.
        self.supports_json_schema = True if supports_json_schema is None else supports_json_schema
        # kind "local" is our own vLLM server on loopback: free. A remote URL labelled local is priced as usual.
        self.price = (0.0, 0.0) if self.kind == "local" and is_loopback(base_url) else price_of(model)
        check_max_cost(max_cost)
        if max_cost is not None and self.price is None:
            raise OptionError(f"max_cost ${max_cost:g} set but no price is known for model {model!r}, so its "
                              f"spend cannot be counted; register one with curate.llm.backends.register_price("
                              f"{model!r}, input_usd_per_mtok, output_usd_per_mtok)")
        self.spent_usd = 0.0
        self._reserved_usd = 0.0
        self._in_flight = 0  # requests holding a max_cost reservation
        self._settled: asyncio.Event | None = None  # set whenever a reservation is released
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.requests_sent = 0
        self.refused: str | None = None  # the server refused the key, permission or model: nothing more is sent
        self.answered = False  # the server answered a request once (any HTTP status): it is there, so retry it
        self.unreachable: str | None = None  # a run's connections failed before any answer: the rest is not sent
        self._connection_errors = 0
        # a server that answered and then went away: the run's last attempts all failed to connect (a pipeline
        # starts no further judge against it); the connection errors since the last answer, and the last one
        self.stopped_answering: str | None = None
        self._lost: tuple[int, str] = (0, "")

    def describe(self) -> dict[str, Any]:
        """Its settings as provenance records them: model, base URL without credentials, rate limits, retries,
        cost cap and price (never the API key)."""
        return {"backend": self.kind, "model": self.model, "base_url": without_credentials(self.base_url),
                "concurrency": self.concurrency, "rps": self.rps, "rpm": self.rpm, "tpm": self.tpm,
                "timeout": self.timeout,
                "max_retries": self.max_retries, "max_cost": self.max_cost,
                # None: no price known for this model, so its cost is unknown (cost_usd None)
                "price_usd_per_mtok": list(self.price) if self.price is not None else None}

    def _key(self) -> str:
        return api_key(self._api_key, self.api_key_env, self.base_url)

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for these tokens; None when the model's price is unknown."""
        if self.price is None:
            return None
        return (prompt_tokens * self.price[0] + completion_tokens * self.price[1]) / 1e6

    def _worst_cost(self, request: Request) -> float:
        """The most ``request`` can cost: estimated prompt tokens and every allowed completion token."""
        return self.cost(estimate_tokens(request.messages), _max_tokens(request)) or 0.0

    async def _reserve(self, request: Request) -> float | None:
        """Reserve the worst-case cost of ``request`` under max_cost; None if it cannot fit.

        While other requests are in flight their reservations may settle below their worst case, so a
        request that does not fit waits for them; it is refused only when nothing is in flight.
        """
        if self.max_cost is None:
            return 0.0
        worst = self._worst_cost(request)
        while self.spent_usd + self._reserved_usd + worst > self.max_cost:
            if self._in_flight == 0:
                return None
            assert self._settled is not None
            self._settled.clear()
            await self._settled.wait()
        self._in_flight += 1
        self._reserved_usd += worst
        return worst

    def _release(self, reserved: float) -> None:
        """Give back a reservation (its real cost, if any, is already in ``spent_usd``) and wake waiters."""
        if self.max_cost is None:
            return
        self._in_flight -= 1
        self._reserved_usd = self._reserved_usd - reserved if self._in_flight else 0.0  # no float residue
        if self._settled is not None:
            self._settled.set()

    def _budget_failure(self, request: Request) -> dict[str, Any]:
        assert self.max_cost is not None
        return failure_result(f"not sent: max_cost {format_usd(self.max_cost)} reached (spent "
                              f"{format_usd(self.spent_usd)}; this request may cost up to "
                              f"{format_usd(self._worst_cost(request))})", FailureCode.BUDGET)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + random.uniform(0, 0.1 * max(retry_after, 0.1))
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** attempt))

    async def run(self, requests: list[Request], on_done: OnDone) -> None:
        """Send ``requests`` to the chat completions endpoint, ``concurrency`` at a time within the rate limits and
        ``max_cost``, retrying 429, 5xx and timeouts with backoff; ``on_done(i, response)`` as each settles (a failure
        is a response too). A server that never answers ends the run early: the rest fail unsent."""
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key(), max_retries=0, timeout=self.timeout)
        queue: collections.deque[Request] = collections.deque(requests)
        self._settled = asyncio.Event()  # bound to this run's event loop

        async def worker() -> None:
            while queue:
                req = queue.popleft()
                on_done(req, await self._one(client, req))

        # each run tries the server again (it may have been started since): a judge sends a large pool in parts
        self.unreachable, self._connection_errors = None, 0
        self.stopped_answering, self._lost = None, (0, "")
        try:
            if self.refused is not None and queue:
                # each run asks again, with one request, not a full round: the key may have been fixed since (it
                # is read per run), and a judge sends a large pool in several runs
                self.refused = None
                probe = queue.popleft()
                on_done(probe, await self._one(client, probe))
            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(queue)))))
            if self.answered and self._lost[0] >= BACKEND.unreachable_after and self.unreachable is None:
                self.stopped_answering = (f"the server at {without_credentials(self.base_url)} stopped answering: "
                                          f"{self._lost[1]}, {self._lost[0]} times since its last answer")
        finally:
            await client.close()

    async def _one(self, client, req: Request) -> dict[str, Any]:
        import openai

        rps, rpm, tpm = self._limiters
        last, timeouts = "no attempt made", TimeoutLadder(self.timeout)  # a retry after a timeout waits longer
        for attempt in range(self.max_retries + 1):
            for stop in (self.refused, self.unreachable):  # every request would get the same answer: none is sent
                if stop is not None:  # (one tried before the stop was sent, and is counted so)
                    return {**failure_result(stop, FailureCode.TRANSIENT), **({"not_sent": True} if not attempt else {})}
            reserved = await self._reserve(req)
            if reserved is None:
                return self._budget_failure(req)
            retry_after = None
            try:
                if rps:
                    await rps.acquire()
                if rpm:
                    await rpm.acquire(1)
                if tpm:
                    await tpm.acquire(estimate_tokens(req.messages) + _max_tokens(req))
                self.requests_sent += 1
                # The client's low-level post: same auth and status errors as chat.completions.create, without
                # its per-call TypedDict transform of the messages (measured at ~4 ms CPU per request) and with the
                # body left for us to parse (cast_to=str: the body text, in openai 1.x and 3.x alike).
                body = await client.post("/chat/completions", cast_to=str, options={"timeout": timeouts.now},
                                         body={**req.params, "model": self.model, "messages": req.messages})
                self.answered, self._lost = True, (0, "")
                try:
                    result: dict[str, Any] | None = parse_chat_completion(json.loads(body))
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    last = f"malformed response body ({type(exc).__name__}: {exc}): {body[:200]!r}"
                    result = None
                if result is not None:
                    usage = result["usage"]
                    if usage.pop("reported"):
                        result["cost_usd"] = self.cost(usage["prompt_tokens"], usage["completion_tokens"])
                    else:  # no usage in the reply: charge the worst case so max_cost still holds, and say so
                        result["cost_usd"] = self.cost(estimate_tokens(req.messages), _max_tokens(req))
                        result["usage_estimated"] = True
                    self.spent_usd += result["cost_usd"] or 0.0  # None: price unknown (no max_cost then)
                    self.prompt_tokens += usage["prompt_tokens"]
                    self.completion_tokens += usage["completion_tokens"]
                    return result
            except openai.APIStatusError as exc:
                self.answered, self._lost = True, (0, "")
                status = exc.status_code
                last = f"HTTP {status}: {_status_text(exc)}"
                if status in REFUSED_SETTINGS:  # the key, the account or the model, not this row: not a row failure,
                    what = refused_settings(status, model=self.model, base_url=self.base_url,
                                            api_key_env=self.api_key_env,
                                            key_unset=not (self._api_key or os.environ.get(self.api_key_env)))
                    self.refused = (f"HTTP {status}: the server refuses {what}; fix it and re-run (nothing more was "
                                    f"sent): {_status_text(exc)}")  # a re-run sends the rows again
                    return failure_result(self.refused, FailureCode.TRANSIENT)
                if not transient_status(status):  # the row does not fit the context: its own code
                    return failure_result(last, refused_code(f"{exc} {getattr(exc, 'code', '') or ''}"))
                retry_after = _retry_after(exc.response.headers)
            except openai.APITimeoutError:
                last = timeouts.ran_out()
            except openai.APIConnectionError as exc:
                last = f"connection error: {_short(exc.__cause__ or exc)}"  # the cause says more than 'Connection error.'
                self._lost = (self._lost[0] + 1, last)
                if _cannot_connect(exc) and self._no_server(last):
                    return failure_result(self.unreachable, FailureCode.TRANSIENT)
            finally:
                self._release(reserved)
            if retry_after is not None and retry_after > self.retry_after_max:  # hours of silence help nobody
                return failure_result(f"{last}; the server asks to wait {retry_after:g}s (Retry-After), more than "
                                      f"{self.retry_after_max:g}s: re-run later to send it again", FailureCode.TRANSIENT)
            if attempt < self.max_retries:
                await asyncio.sleep(self._backoff(attempt, retry_after))
        return failure_result(f"gave up after {self.max_retries + 1} attempts; last error: {last}{timeouts.said()}",
                              FailureCode.TRANSIENT)

    def _no_server(self, error: str) -> bool:
        """Count a connection error; True once ``BACKEND.unreachable_after`` of them came before the server ever
        answered (a wrong URL, a server not started): the run then sends nothing more, its rows fail transient (a
        re-run sends them again). A server that answered before and drops for a moment is retried as usual."""
        if self.answered:
            return False
        self._connection_errors += 1
        if self._connection_errors >= BACKEND.unreachable_after and self.unreachable is None:
            self.unreachable = (f"no server at {without_credentials(self.base_url)}: {error}, {self._connection_errors} "
                                f"times and never an answer; the rest was not sent: check "
                                f"{python_and_cli('base_url=', '--base-url')} and that the server is running, then "
                                "re-run")
        return self.unreachable is not None

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.base_url!r}, model={self.model!r}, kind={self.kind!r})"


def _max_tokens(request: Request) -> int:
    """The reply length a request allows (max_tokens or max_completion_tokens), or the assumed worst case (cost cap,
    TPM and the dry run alike)."""
    return reply_token_limit(request.params) or BACKEND.worst_case_max_tokens


def _status_text(exc: Any) -> str:
    """The server's own words of an HTTP error (``bad request (invalid_request_error)``), not the SDK's wrapping of
    its JSON body (``Error code: 400 - {'error': {'message': ...}}``); the SDK's text where the body says none."""
    body = exc.body.get("error", exc.body) if isinstance(exc.body, dict) else None
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, str) or not message.strip():
        return _short(exc)
    kind = body.get("type") or body.get("code")
    return _short(message.strip() + (f" ({kind})" if isinstance(kind, str) and kind else ""))


def _short(exc: Exception | str) -> str:
    text = str(exc)
    return text if len(text) < 300 else text[:300] + "..."


def _retry_after(headers) -> float | None:
    value = headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def api_key(explicit: str | None, api_key_env: str, base_url: str | None) -> str:
    """The key to send: the one given, else ``$api_key_env``; a loopback server needs none (a placeholder)."""
    key = explicit or os.environ.get(api_key_env)
    if key:
        return key
    if is_loopback(base_url):
        return "unused-local-key"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):  # a key pasted in its place: never echoed
        raise CurateError(f"no API key: {python_and_cli('api_key_env=', '--api-key-env')} takes the name of an "
                          "environment variable that holds the key (e.g. OPENAI_API_KEY), and what it was given is "
                          "not a variable's name")
    raise CurateError(f"no API key: set ${api_key_env} (or name another variable: "
                      f"{python_and_cli('api_key_env=' + repr('VAR'), '--api-key-env VAR')})")


def parse_chat_completion(data: dict[str, Any]) -> dict[str, Any]:
    """The cacheable parts of a chat completion body: text, first-position top logprobs, usage; the first token's
    own logprob without a top list (a server ignoring ``top_logprobs``) apart, as ``sampled_token``."""
    choice = data["choices"][0]
    text, top, sampled = choice["message"]["content"] or "", None, {}
    lp = choice.get("logprobs")
    if lp and lp.get("content"):
        first = lp["content"][0]
        top = [{"token": t["token"], "logprob": float(t["logprob"])} for t in (first.get("top_logprobs") or [])]
        if not top:
            top = None
            if "token" in first:
                sampled = {"sampled_token": {"token": first["token"], "logprob": float(first["logprob"])}}
    usage = data.get("usage") or {}
    refusal = {"refusal": choice["message"]["refusal"]} if choice["message"].get("refusal") else {}
    return {"text": text, **refusal, "top_logprobs": top, **sampled, "finish_reason": choice.get("finish_reason"),
            "usage": {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                      "completion_tokens": int(usage.get("completion_tokens") or 0),
                      "reported": bool(usage)},
            "cost_usd": 0.0}


def _cannot_connect(exc: BaseException) -> bool:
    """Whether a transport error is a connection never made (refused, no such host: httpx's ConnectError, by name,
    as openai 1.x and 3.x vendor different httpx packages), not a server that accepted and then reset or closed a
    connection: only the first says there is no server at the URL."""
    import socket

    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ == "ConnectError" or isinstance(seen, ConnectionRefusedError | socket.gaierror):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
