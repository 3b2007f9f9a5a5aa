"""What every LLM backend shares: the ``Backend`` interface, one ``Request``, prices, failure results.

A backend runs ``await backend.run(requests, on_done)`` and reports each request exactly once to
``on_done(request, result)``; ``result`` is a response dict (``text``, ``top_logprobs``, ``usage``,
``cost_usd``, ``finish_reason``) or a failure dict from :func:`failure_result` (``failure``: the message,
``reason_code``: a :class:`curate.codes.FailureCode` value the runner maps to a ``Failure``). A backend passes
``on_done(request, result, cached=True)`` for an answer another run paid for and counts in its own record (a batch
two live runs asked: ``curate.llm.batch``): stored in the response cache already, a cache hit to this call.
``cost_usd`` is None when the model's price is unknown: unknown, never $0. The caller caches responses
before using them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from curate.codes import FailureCode
from curate.defaults import BACKEND, JUDGE
from curate.errors import OptionError, StillSendingWarning

T = TypeVar("T")

# USD per 1M tokens (input, output). Extend with ``register_price`` or by editing PRICES.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    # dated snapshots priced unlike their alias (others take the alias's price, see price_of)
    "gpt-4o-2024-05-13": (5.00, 15.00),
    "gpt-3.5-turbo-1106": (1.00, 2.00),
    "gpt-3.5-turbo-0613": (1.50, 2.00),
    "gpt-3.5-turbo-0301": (1.50, 2.00),
    "gpt-3.5-turbo-16k": (3.00, 4.00),
    "gpt-3.5-turbo-16k-0613": (3.00, 4.00),
}
# USD per 1M tokens through the provider's batch API, where it has one (OpenAI's: 50% of the online price).
BATCH_PRICES: dict[str, tuple[float, float]] = {m: (i * 0.5, o * 0.5) for m, (i, o) in PRICES.items()}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def register_price(model: str, input_per_mtok: float, output_per_mtok: float, *,
                   batch: tuple[float, float] | None = None) -> None:
    """Add or override a model's price in USD per million input / output tokens; ``batch``: its price per
    million input / output tokens through the provider's batch API, where it has one."""
    PRICES[model] = (float(input_per_mtok), float(output_per_mtok))
    if batch is not None:
        BATCH_PRICES[model] = (float(batch[0]), float(batch[1]))
    else:
        BATCH_PRICES.pop(model, None)


# a dated snapshot: gpt-4o-2024-08-06, gpt-3.5-turbo-0125, claude-3-5-sonnet-20241022 (not -latest: it moves)
SNAPSHOT_SUFFIX = re.compile(r"-(20\d{2}-\d{2}-\d{2}|20\d{6}|\d{4})$")


def price_of(model: str, table: dict[str, tuple[float, float]] | None = None) -> tuple[float, float] | None:
    """Price for ``model``: its own entry, else a dated snapshot's alias's (``gpt-4o-2024-08-06``: ``gpt-4o``); None
    for any other name. Not the longest entry a name starts with: that priced ``gpt-4o-2024-05-13`` ($5 / $15) and
    ``gpt-3.5-turbo-16k`` at their aliases' lower prices, and would any ``gpt-4o-<variant>``."""
    table = PRICES if table is None else table
    if model in table:
        return table[model]
    alias = SNAPSHOT_SUFFIX.sub("", model)
    return table.get(alias) if alias != model else None


def batch_price_of(model: str) -> tuple[float, float] | None:
    """The model's price through its provider's batch API; None when unknown or the provider has none."""
    return price_of(model, BATCH_PRICES)


def cost_usd(price: tuple[float, float] | None, prompt_tokens: int, completion_tokens: int) -> float | None:
    """USD for these tokens at ``price`` (per million input / output tokens); None when the price is unknown."""
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / 1e6


def check_max_cost(max_cost: float | None) -> None:
    """A cap below $0 (or not a number) is an error: it would leave every request unsent, run after run."""
    if max_cost is not None and not max_cost >= 0:
        raise OptionError(f"max_cost is a USD amount >= 0, not {max_cost!r}")


def is_loopback(base_url: str | None) -> bool:
    """True for a URL on this machine's loopback interface."""
    return bool(base_url) and any(host in base_url for host in LOOPBACK_HOSTS)


def format_usd(value: float) -> str:
    """Dollars with the decimals small spends need: ``$1.5000``, ``$0.0123``, ``$0.00008400``; nothing is ``$0.00``."""
    return "$0.00" if value == 0 else f"${value:,.4f}" if value >= 0.01 else f"${value:.8f}"


def estimate_tokens(messages: list[dict[str, Any]]) -> int:
    """A deliberately high estimate of prompt tokens, for the cost cap, --tpm and the dry run without a tokenizer:
    a token per 3 letters of a word, per digit, per ASCII symbol or control character, per run of whitespace, per
    UTF-8 byte of other characters (a byte-level BPE tokenizer never spends more), and a per-message overhead.
    A flat 3 characters per token counted Chinese (~1.9 tokens a character in SmolLM2's tokenizer) 6x low and code
    2x low; max_cost let 2x its cap through."""
    return sum(_text_tokens(str(m.get("content") or "")) + 8 for m in messages) + 4


# a token per 3 letters, per digit (SmolLM2 splits numbers digit by digit), per symbol (a long run of one symbol, a
# rule of dashes: per 8), per control character, per run of whitespace
_ASCII_PIECES = re.compile(r"[A-Za-z]{1,3}|[0-9]|([!-/:-@\[-`{-~])\1{7}|[!-/:-@\[-`{-~]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|"
                           r"\s{2,}")


def _text_tokens(text: str) -> int:
    pieces = len(_ASCII_PIECES.findall(text))
    if text.isascii():
        return pieces
    ascii_chars = len(text.encode("ascii", "ignore"))
    return pieces + len(text.encode("utf-8", "surrogatepass")) - ascii_chars


def reply_token_limit(params: dict[str, Any]) -> int | None:
    """The reply length request parameters allow: ``max_tokens`` or OpenAI's newer ``max_completion_tokens`` (the
    smaller of the two when both are set); None when neither is."""
    limits = [int(params[k]) for k in ("max_tokens", "max_completion_tokens") if params.get(k)]
    return min(limits) if limits else None


def failure_result(message: str, code: FailureCode) -> dict[str, Any]:
    """What a backend reports for a request it could not answer."""
    return {"failure": message, "reason_code": code.value}


# How servers refuse a request longer than the model's context: OpenAI's error code, vLLM's and OpenAI's words
# ("This model's maximum context length is 2048 tokens ...", "The decoder prompt (length N) is longer than the
# maximum model length of 2048 ...").
_CONTEXT_TOO_LONG = re.compile(r"context_length_exceeded|maximum (context|model) length", re.IGNORECASE)


def refused_code(message: str, otherwise: FailureCode = FailureCode.HTTP_ERROR) -> FailureCode:
    """The failure code of a request a server refused for good (a 4xx, or an engine's ValueError): ``context_too_long``
    when ``message`` says the row does not fit the model's context, else ``otherwise``."""
    return FailureCode.CONTEXT_TOO_LONG if _CONTEXT_TOO_LONG.search(message) else otherwise


@dataclass
class Request:
    """One chat completion to make: its cache key, messages and generation parameters."""

    key: str
    messages: list[dict[str, Any]]
    params: dict[str, Any]


OnDone = Callable[..., None]  # on_done(request, result) or, for another run's paid answer, (..., cached=True)


def run_sync(make_coro: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion from sync code, also inside Jupyter's running event loop.

    With a loop already running in this thread, the coroutine runs in a fresh loop on a worker thread, and a Ctrl-C
    (the notebook's stop button) cancels it there as ``asyncio.run`` does on the main thread: the interrupt returns once
    the call has stopped sending (within ``BACKEND.cancel_wait_s``), so a re-run neither races it nor pays twice.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make_coro())  # type: ignore[arg-type]
    return _run_on_worker_loop(make_coro)


def _run_on_worker_loop(make_coro: Callable[[], Awaitable[T]]) -> T:
    running: concurrent.futures.Future = concurrent.futures.Future()  # (its loop, its task), once it runs
    outcome: concurrent.futures.Future = concurrent.futures.Future()

    async def main() -> T:
        running.set_result((asyncio.get_running_loop(), asyncio.current_task()))
        return await make_coro()

    def work() -> None:
        try:
            outcome.set_result(asyncio.run(main()))
        except BaseException as exc:  # noqa: BLE001 (handed to the waiting thread, a cancellation included)
            outcome.set_exception(exc)

    thread = threading.Thread(target=work, name="curate-loop", daemon=True)
    try:
        thread.start()  # inside: a Ctrl-C while it waits for the thread to begin must cancel it too
        return outcome.result()
    except KeyboardInterrupt as interrupt:
        _cancel_and_wait(running, outcome, thread, interrupt)
        raise


def _cancel_and_wait(running: concurrent.futures.Future, outcome: concurrent.futures.Future,
                     thread: threading.Thread, interrupt: KeyboardInterrupt) -> None:
    """Cancel the worker loop's task and wait for the call to end (its ``outcome`` set, up to ``BACKEND.cancel_wait_s``;
    not ``thread.is_alive()``, False while a thread starts); a second Ctrl-C meanwhile cancels again rather than
    leaving the call running in the background (it went on sending, and its requests, released as no longer in
    flight, were sent again by the re-run). A call still running when the wait ends is said (a
    :class:`~curate.errors.StillSendingWarning`): the interrupt returned with no word of it. Under ``-W error`` the
    warning, raised, replaced the KeyboardInterrupt: its text is then a note of ``interrupt`` instead."""
    start = time.monotonic()
    cancelled = False
    while not outcome.done() and time.monotonic() < start + BACKEND.cancel_wait_s:
        if thread.ident is None and time.monotonic() > start + 5.0:
            break  # the interrupt came before the thread was made: nothing runs
        try:
            if not cancelled and running.done():
                loop, task = running.result()
                try:
                    loop.call_soon_threadsafe(task.cancel)
                except RuntimeError:
                    pass  # its loop closed: the call has just ended
                cancelled = True
            concurrent.futures.wait([outcome], timeout=0.1)
        except KeyboardInterrupt:
            cancelled = False  # cancel again: the call may have swallowed the first
    if outcome.done():
        thread.join(1.0)  # it returns once the outcome is set
    elif thread.ident is not None:
        try:
            warnings.warn(still_sending_text(time.monotonic() - start), StillSendingWarning, stacklevel=3)
        except StillSendingWarning as raised:  # warnings as errors: the interrupt stays what is raised
            interrupt.add_note(f"{StillSendingWarning.__name__}: {raised}")


def still_sending_text(waited_s: float) -> str:
    """What an interrupt says when the call it cancelled had not stopped after ``waited_s`` seconds."""
    return (f"the interrupted call had not stopped after {waited_s:.1f} s (BACKEND.cancel_wait_s "
            f"{BACKEND.cancel_wait_s:g} s): it may still be sending requests in the background (thread curate-loop); "
            "a re-run now may send them again and pay twice: wait for it to end, or restart the kernel to stop it")


class Backend:
    """Interface every backend implements."""

    kind = "base"
    model = ""
    supports_logprobs = True
    supports_json_schema = True
    submits_batches = False  # each run is one batch submission (answered within hours): give it every request at once

    async def run(self, requests: list[Request], on_done: OnDone) -> None:
        """Send ``requests``, calling ``on_done(i, response)`` as each is answered or fails (a response holding
        ``failure``); returns when every one is settled."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What identifies this backend in provenance (never secrets)."""
        return {"backend": self.kind, "model": self.model}

    def close(self) -> None:
        """Release what the backend holds between runs (nothing, for one that opens its connections per run)."""


def rows_per_call(backend: Any) -> int | None:
    """Rows an LLM step hands ``ws.apply`` at a time (``Step.rows_per_call``) with ``backend``: ``JUDGE.rows_per_call``
    for one that answers each request on its own, so the requests and answers of a large pool are not all held at
    once; None (every row in one call) for a batch backend, where each call is a submission of its own."""
    return None if getattr(backend, "submits_batches", False) else JUDGE.rows_per_call
