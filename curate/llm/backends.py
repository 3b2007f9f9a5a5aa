"""LLM backends behind one interface: ``await backend.run(requests, on_done)``.

- ``OpenAIBackend``: any OpenAI-compatible endpoint through ``openai.AsyncOpenAI`` with bounded
  concurrency, RPM/TPM limits, retries (exponential backoff + full jitter, ``Retry-After`` honoured)
  on 429/5xx/timeouts/connection errors/malformed bodies, per-request timeout, token and $ cost
  accounting and a hard ``max_cost`` cap checked *before* each request is sent: each request reserves
  its worst-case cost; one that does not fit waits for the requests in flight to settle, and fails
  (``reason_code`` ``"budget"``) only when nothing is in flight and it still does not fit.
- ``VLLMBackend``: in-process ``vllm.LLM``; all requests of a call go to the engine as one batch.

Every backend reports each request exactly once to ``on_done(request, result)``; ``result`` is a
response dict (``text``, ``top_logprobs``, ``usage``, ``cost_usd``, ``finish_reason``) or
``{"failure": reason}`` (plus ``reason_code`` where a caller may act on it). ``cost_usd`` is None when
the model's price is unknown: unknown, never $0. The caller caches responses before using them.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import json
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TypeVar

from curate.errors import CurateError

T = TypeVar("T")

# USD per 1M tokens (input, output). Extend with ``register_price`` or by editing PRICES.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
}


def register_price(model: str, input_per_mtok: float, output_per_mtok: float) -> None:
    """Add or override a model's price in USD per million input / output tokens."""
    PRICES[model] = (float(input_per_mtok), float(output_per_mtok))


def price_of(model: str) -> tuple[float, float] | None:
    """Price for ``model``: exact name, else the longest table entry it starts with (dated snapshots)."""
    if model in PRICES:
        return PRICES[model]
    prefixes = [m for m in PRICES if model.startswith(m)]
    return PRICES[max(prefixes, key=len)] if prefixes else None


class BudgetExceeded(CurateError):
    """The backend's max_cost would be exceeded by the next request."""


MAX_COST_REASON = "budget"  # ``reason_code`` of a request max_cost left unsent (curate.codes.FailureCode.BUDGET)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def is_loopback(base_url: str | None) -> bool:
    """True for a URL on this machine's loopback interface."""
    return bool(base_url) and any(host in base_url for host in LOOPBACK_HOSTS)


def format_usd(value: float) -> str:
    """Dollars with the decimals small spends need: ``$1.5000``, ``$0.0123``, ``$0.00008400``."""
    return f"${value:,.4f}" if value >= 0.01 else f"${value:.8f}"


@dataclass
class Request:
    """One chat completion to make: its cache key, messages and generation parameters."""

    key: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]


OnDone = Callable[[Request, dict[str, Any]], None]


def run_sync(make_coro: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also inside Jupyter's running event loop.

    With a loop already running in this thread, the coroutine runs in a fresh loop on a worker thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())  # type: ignore[arg-type]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="curate-loop") as pool:
        return pool.submit(lambda: asyncio.run(make_coro())).result()  # type: ignore[arg-type]


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A deliberately high estimate of prompt tokens (3 characters per token + per-message overhead)."""
    return sum(len(str(m.get("content") or "")) // 3 + 8 for m in messages) + 4


class Backend:
    """Interface every backend implements."""

    kind = "base"
    model = ""
    supports_logprobs = True
    supports_json_schema = True

    async def run(self, requests: list[Request], on_done: OnDone) -> None:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What identifies this backend in provenance (never secrets)."""
        return {"backend": self.kind, "model": self.model}

    def close(self) -> None:
        pass


class _WindowLimiter:
    """At most ``limit`` units in any 60-second window (requests for RPM, tokens for TPM)."""

    def __init__(self, limit: float, window: float = 60.0):
        self.limit = float(limit)
        self.window = window
        self.events: collections.deque[tuple[float, float]] = collections.deque()
        self.used = 0.0
        self.lock = asyncio.Lock()

    async def acquire(self, amount: float = 1.0) -> None:
        amount = min(amount, self.limit)  # a single oversized request still goes, alone in its window
        async with self.lock:
            while True:
                now = time.monotonic()
                while self.events and now - self.events[0][0] >= self.window:
                    self.used -= self.events.popleft()[1]
                if self.used + amount <= self.limit:
                    self.events.append((now, amount))
                    self.used += amount
                    return
                await asyncio.sleep(max(0.01, self.window - (now - self.events[0][0])))


class OpenAIBackend(Backend):
    """An OpenAI-compatible chat endpoint (OpenAI, vLLM server, llama.cpp server ...)."""

    kind = "openai"

    def __init__(self, base_url: str | None, model: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 16,
                 rpm: int | None = None, tpm: int | None = None, timeout: float = 60.0, max_retries: int = 6,
                 max_cost: float | None = None, *, api_key: str | None = None, kind: str | None = None,
                 supports_logprobs: bool = True, supports_json_schema: bool | None = None,
                 backoff_base: float = 0.5, backoff_max: float = 30.0):
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self._api_key = api_key  # kept out of describe(), repr and the cache
        self.concurrency = max(1, int(concurrency))
        self.rpm, self.tpm = rpm, tpm
        self.timeout = float(timeout)
        self.max_retries = int(max_retries)
        self.max_cost = max_cost
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        if kind:
            self.kind = kind
        self.supports_logprobs = supports_logprobs
        # OpenAI itself and vLLM enforce json_schema; other servers may only know json_object.
        self.supports_json_schema = True if supports_json_schema is None else supports_json_schema
        # kind "local" is our own vLLM server on loopback: free. A remote URL labelled local is priced as usual.
        self.price = (0.0, 0.0) if self.kind == "local" and is_loopback(base_url) else price_of(model)
        if max_cost is not None and self.price is None:
            raise CurateError(f"max_cost ${max_cost:g} set but no price is known for model {model!r}, so its "
                              f"spend cannot be counted; register one with curate.llm.backends.register_price("
                              f"{model!r}, input_usd_per_mtok, output_usd_per_mtok)")
        self.spent_usd = 0.0
        self._reserved_usd = 0.0
        self._in_flight = 0  # requests holding a max_cost reservation
        self._settled: asyncio.Event | None = None  # set whenever a reservation is released
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.requests_sent = 0

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": self.base_url,
                "concurrency": self.concurrency, "rpm": self.rpm, "tpm": self.tpm, "timeout": self.timeout,
                "max_retries": self.max_retries, "max_cost": self.max_cost,
                # None: no price known for this model, so its cost is unknown (cost_usd None)
                "price_usd_per_mtok": list(self.price) if self.price is not None else None}

    def _key(self) -> str:
        key = self._api_key or os.environ.get(self.api_key_env)
        if key:
            return key
        if is_loopback(self.base_url):
            return "unused-local-key"
        raise CurateError(f"no API key: set ${self.api_key_env} (or pass --api-key-env VAR)")

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD for these tokens; None when the model's price is unknown."""
        if self.price is None:
            return None
        return (prompt_tokens * self.price[0] + completion_tokens * self.price[1]) / 1e6

    def _worst_cost(self, request: Request) -> float:
        """The most ``request`` can cost: estimated prompt tokens and every allowed completion token."""
        return self.cost(estimate_tokens(request.messages), int(request.params.get("max_tokens") or 1024)) or 0.0

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
        return {"failure": f"not sent: max_cost {format_usd(self.max_cost)} reached (spent "
                           f"{format_usd(self.spent_usd)}; this request may cost up to "
                           f"{format_usd(self._worst_cost(request))})",
                "reason_code": MAX_COST_REASON}

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + random.uniform(0, 0.1 * max(retry_after, 0.1))
        return random.uniform(0, min(self.backoff_max, self.backoff_base * 2 ** attempt))

    async def run(self, requests: list[Request], on_done: OnDone) -> None:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key(), max_retries=0, timeout=self.timeout)
        rpm = _WindowLimiter(self.rpm) if self.rpm else None
        tpm = _WindowLimiter(self.tpm) if self.tpm else None
        queue: collections.deque[Request] = collections.deque(requests)
        self._settled = asyncio.Event()  # bound to this run's event loop

        async def worker() -> None:
            while queue:
                req = queue.popleft()
                on_done(req, await self._one(client, req, rpm, tpm))

        try:
            await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(requests)))))
        finally:
            await client.close()

    async def _one(self, client, req: Request, rpm, tpm) -> dict[str, Any]:
        import openai

        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            reserved = await self._reserve(req)
            if reserved is None:
                return self._budget_failure(req)
            retry_after = None
            try:
                if rpm:
                    await rpm.acquire(1)
                if tpm:
                    await tpm.acquire(estimate_tokens(req.messages) + int(req.params.get("max_tokens") or 256))
                self.requests_sent += 1
                # The client's low-level post: same auth, timeouts and status errors as
                # chat.completions.create, without its per-call TypedDict transform of the messages
                # (measured at ~4 ms CPU per request) and with the body left for us to parse
                # (cast_to=str: the body text, in openai 1.x and 3.x alike; no httpx import of our own).
                body = await client.post("/chat/completions", cast_to=str,
                                         body={**req.params, "model": self.model, "messages": req.messages})
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
                        result["cost_usd"] = self.cost(estimate_tokens(req.messages),
                                                       int(req.params.get("max_tokens") or 1024))
                        result["usage_estimated"] = True
                    self.spent_usd += result["cost_usd"] or 0.0  # None: price unknown (no max_cost then)
                    self.prompt_tokens += usage["prompt_tokens"]
                    self.completion_tokens += usage["completion_tokens"]
                    return result
            except openai.APIStatusError as exc:
                status = exc.status_code
                last = f"HTTP {status}: {_short(exc)}"
                if status not in (408, 409, 429) and status < 500:
                    return {"failure": last}
                retry_after = _retry_after(exc.response.headers)
            except openai.APITimeoutError:
                last = f"timeout after {self.timeout:g}s"
            except openai.APIConnectionError as exc:
                last = f"connection error: {_short(exc)}"
            finally:
                self._release(reserved)
            if attempt < self.max_retries:
                await asyncio.sleep(self._backoff(attempt, retry_after))
        return {"failure": f"gave up after {self.max_retries + 1} attempts; last error: {last}"}

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.base_url!r}, model={self.model!r}, kind={self.kind!r})"


def _short(exc: Exception) -> str:
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


def parse_chat_completion(data: dict[str, Any]) -> dict[str, Any]:
    """The cacheable parts of a chat completion body: text, first-position top logprobs, usage."""
    choice = data["choices"][0]
    text = choice["message"]["content"]
    if text is None:
        text = ""
    top = None
    lp = choice.get("logprobs")
    if lp and lp.get("content"):
        first = lp["content"][0]
        top = [{"token": t["token"], "logprob": float(t["logprob"])} for t in (first.get("top_logprobs") or [])]
        if not top and "token" in first:
            top = [{"token": first["token"], "logprob": float(first["logprob"])}]
    usage = data.get("usage") or {}
    return {"text": text, "top_logprobs": top, "finish_reason": choice.get("finish_reason"),
            "usage": {"prompt_tokens": int(usage.get("prompt_tokens") or 0),
                      "completion_tokens": int(usage.get("completion_tokens") or 0),
                      "reported": bool(usage)},
            "cost_usd": 0.0}


class VLLMBackend(Backend):
    """In-process ``vllm.LLM``: every request of a call goes to the engine in one ``chat`` batch.

    ``model_dir`` defaults to the converted SmolLM2 folder (see ``curate.llm.local.prepare_model``).
    Run it under ``if __name__ == "__main__":`` (vLLM spawns worker processes) and ``close()`` it.
    """

    kind = "vllm"

    def __init__(self, model_dir: str | os.PathLike | None = None, *, served_name: str | None = None,
                 max_model_len: int = 2048, dtype: str = "bfloat16", batch_size: int = 512, top_logprobs: int = 20,
                 **engine_kwargs: Any):
        from curate.llm.local import SERVED_NAME, prepare_model

        self.model_dir = Path(model_dir) if model_dir else prepare_model()
        self.model = served_name or (SERVED_NAME if model_dir is None else self.model_dir.name)
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.batch_size = batch_size
        self.max_logprobs = top_logprobs
        self.engine_kwargs = engine_kwargs
        self._llm = None
        self.prompt_tokens = self.completion_tokens = 0
        self.spent_usd = 0.0

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "model_dir": str(self.model_dir), "dtype": self.dtype}

    @property
    def llm(self):
        if self._llm is None:
            from curate.llm.local import curate_home, server_env

            for k, v in server_env(curate_home()).items():
                os.environ.setdefault(k, v)
            from vllm import LLM

            self._llm = LLM(model=str(self.model_dir), dtype=self.dtype, max_model_len=self.max_model_len,
                            enforce_eager=True, max_logprobs=self.max_logprobs, **self.engine_kwargs)
        return self._llm

    def sampling_params(self, params: dict[str, Any]):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = None
        fmt = params.get("response_format")
        if fmt and fmt.get("type") == "json_schema":
            structured = StructuredOutputsParams(json=fmt["json_schema"]["schema"])
        elif fmt and fmt.get("type") == "json_object":
            structured = StructuredOutputsParams(json_object=True)
        top = params.get("top_logprobs") if params.get("logprobs") else None
        return SamplingParams(temperature=float(params.get("temperature", 0.0)), top_p=float(params.get("top_p", 1.0)),
                              max_tokens=int(params.get("max_tokens") or 256), logprobs=top,
                              seed=params.get("seed"), stop=params.get("stop"), structured_outputs=structured)

    def generate_batch(self, requests: list[Request]) -> list[dict[str, Any]]:
        """One engine call for all ``requests``; results in the same order."""
        outputs = self.llm.chat([r.messages for r in requests], sampling_params=[self.sampling_params(r.params)
                                                                                 for r in requests], use_tqdm=False)
        results = []
        for out in outputs:
            comp = out.outputs[0]
            top = None
            if comp.logprobs:
                top = [{"token": lp.decoded_token, "logprob": float(lp.logprob)} for lp in comp.logprobs[0].values()]
            usage = {"prompt_tokens": len(out.prompt_token_ids or []), "completion_tokens": len(comp.token_ids)}
            self.prompt_tokens += usage["prompt_tokens"]
            self.completion_tokens += usage["completion_tokens"]
            results.append({"text": comp.text, "top_logprobs": top, "finish_reason": comp.finish_reason,
                            "usage": usage, "cost_usd": 0.0})
        return results

    async def run(self, requests: list[Request], on_done: OnDone) -> None:
        for start in range(0, len(requests), self.batch_size):
            chunk = requests[start:start + self.batch_size]
            for req, result in zip(chunk, self.generate_batch(chunk), strict=True):
                on_done(req, result)

    def close(self) -> None:
        """Shut the engine down (call before the interpreter exits)."""
        if self._llm is not None:
            import gc

            llm, self._llm = self._llm, None
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) or getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown:
                shutdown()
            del llm
            gc.collect()

    def __repr__(self) -> str:
        return f"VLLMBackend({str(self.model_dir)!r})"
