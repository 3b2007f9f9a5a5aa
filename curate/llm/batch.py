"""Batch backends: the uncached requests of a call as batch JSONL (``custom_id`` = the cache key).

``OpenAIBatchBackend`` (``--backend openai-batch``) runs them through an OpenAI-compatible batch API:
write the JSONL, upload it (files API), create the batch, poll with backoff, download the output and
error files, and report every request to the runner, which caches each answer exactly as the online
backend's (same key, same response dict, cost at the batch price). Large calls are split by the
per-batch limits (requests and bytes). Requests that failed transiently or expired inside a batch are
resubmitted alone, in a new batch, up to ``resubmits`` times.

Every submission is recorded in the workspace (artifacts ``llm-batches`` and ``llm-batch-<id>``, the
latter holding its request keys) *before* the batch is created and again once its id is known; a
process killed while waiting resumes polling the same batches on the next run instead of resubmitting
(a submission killed between "create" and "record" is found again by its metadata). Answers that arrive
for requests the current call did not ask for are still written to the cache. A batch the server no longer knows
(404) has its requests submitted again and is marked ``lost`` in the index, with the reason; so are those whose
answers sat in a finished batch's output or error file that the server no longer has (``curate.llm.batch_collect``).
A finished (or lost) batch is collected by one run at a time, which counts its answers' cost once
(``curate.llm.batch_state``); another waits, then polls the retry batches it made rather than making them again.

The JSONL helpers live in ``curate.llm.batch_jsonl``, shared with ``curate.llm.vllm_batch``; one run over a call's
requests (submit, poll, collect, resubmit) in ``curate.llm.batch_call``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from curate.defaults import BACKEND, BATCH
from curate.errors import ConfigError, CurateError, OptionError, RetryLaterError
from curate.llm.base import (
    Backend,
    OnDone,
    Request,
    batch_price_of,
    check_max_cost,
    cost_usd,
    estimate_tokens,
)
from curate.llm.batch_call import _Call
from curate.llm.batch_collect import check_polls
from curate.llm.batch_jsonl import batch_line, split_batches
from curate.llm.batch_notices import interrupted_notice
from curate.llm.batch_state import SETTLED, BatchState, normal_url, same_url
from curate.llm.endpoint import REFUSED_SETTINGS, refused_settings, transient_status
from curate.llm.openai_backend import _max_tokens, _short, api_key, without_credentials

# what tests and callers import from here: the call (curate.llm.batch_call) and the JSONL helpers moved out
__all__ = ["BatchState", "OpenAIBatchBackend", "_Call", "batch_line", "split_batches"]


# -- OpenAI's batch API -----------------------------------------------------------------------------------
class OpenAIBatchBackend(Backend):
    """An OpenAI-compatible batch API: half the online price, answers within ``completion_window``.

    ``workspace``: where submissions are remembered (resume after a kill); ``cache``: where answers to
    requests outside the current call go (default: the workspace's response cache).
    """

    kind = "openai-batch"
    submits_batches = True

    def __init__(self, base_url: str | None, model: str, *, workspace: Any, api_key_env: str = BACKEND.api_key_env,
                 api_key: str | None = None, max_cost: float | None = None, cache: Any = None,
                 poll_s: float = BATCH.poll_s, poll_max_s: float = BATCH.poll_max_s,
                 max_requests: int = BATCH.max_requests, max_bytes: int = BATCH.max_bytes,
                 completion_window: str = BATCH.completion_window, resubmits: int = BATCH.resubmits,
                 timeout: float = BACKEND.timeout_s, on_event: Callable[[str], None] | None = None,
                 claim_expiry_s: float = BATCH.claim_expiry_s):
        self.base_url, self.model = base_url, model
        self.api_key_env, self._api_key = api_key_env, api_key
        self.state = BatchState(workspace, claim_expiry_s)
        self._cache = cache
        self.max_cost = max_cost
        check_polls(poll_s, poll_max_s)
        self.poll_s, self.poll_max_s = float(poll_s), float(poll_max_s)
        self.max_requests, self.max_bytes = int(max_requests), int(max_bytes)
        self.completion_window, self.resubmits, self.timeout = completion_window, int(resubmits), float(timeout)
        self.on_event = on_event
        self.price = batch_price_of(model)
        check_max_cost(max_cost)
        if max_cost is not None and self.price is None:
            raise OptionError(f"max_cost ${max_cost:g} set but no batch price is known for model {model!r}; register "
                              f"one with curate.llm.backends.register_price({model!r}, input_usd_per_mtok, "
                              f"output_usd_per_mtok, batch=(input, output))")
        self.spent_usd = 0.0
        self.prompt_tokens = self.completion_tokens = 0
        self.submitted_batches = self.requests_sent = 0

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "base_url": without_credentials(normal_url(self.base_url)),
                "max_cost": self.max_cost,
                "completion_window": self.completion_window,
                "price_usd_per_mtok": list(self.price) if self.price is not None else None}

    def _key(self) -> str:
        return api_key(self._api_key, self.api_key_env, self.base_url)

    @property
    def cache(self) -> Any:
        if self._cache is None:
            from curate.llm.cache import response_cache

            self._cache = response_cache(self.state.ws.cache_dir)
        return self._cache

    def _say(self, text: str | None) -> None:
        if self.on_event is not None and text:  # None: nothing to say
            self.on_event(text)

    def _mine(self, entry: dict[str, Any]) -> bool:
        return entry.get("model") == self.model and same_url(entry.get("base_url"), self.base_url)

    def keys_in_open_batches(self) -> set[str]:
        """The request keys this backend's submissions in the workspace still cover (a run resumes them; a dry run
        leaves them out of what is still to send)."""
        return self.state.open_keys(self._mine, SETTLED)

    def _worst(self, request: Request) -> float:
        return cost_usd(self.price, estimate_tokens(request.messages), _max_tokens(request)) or 0.0

    async def run(self, requests: list[Request], on_done: OnDone) -> None:
        import openai

        client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self._key(), max_retries=BACKEND.max_retries,
                                    timeout=self.timeout)
        call = _Call(self, client, {r.key: r for r in requests}, on_done)
        try:
            await call.go()
        except (asyncio.CancelledError, KeyboardInterrupt):  # Ctrl-C: say what stays open, and that a re-run resumes
            self._say(interrupted_notice(call.open.values()))
            raise
        except openai.APIError as exc:  # the files or batches API itself failed, retries spent: one line, not a trace
            status = getattr(exc, "status_code", None)
            why = f"the server refuses {self._refused(status)}" if status in REFUSED_SETTINGS else "it failed"
            # the exit code by what failed, as the online backend's (curate.exit_codes)
            if status in REFUSED_SETTINGS:
                kind: type[CurateError] = ConfigError
            elif isinstance(exc, openai.APIConnectionError) or (status is not None and transient_status(status)):
                kind = RetryLaterError  # nothing listening, timeouts, 5xx, 429
            else:
                kind = CurateError
            raise kind(f"openai-batch: {f'HTTP {status}: ' if status else ''}{why}: {_short(exc)}; the batches "
                       "submitted so far are remembered in the workspace: fix it and re-run to resume") from None
        finally:
            await client.close()

    def _refused(self, status: int) -> str:
        """What a 401/403/404 refuses, worded as the online backend's refusal, always with the model and the URL."""
        return refused_settings(status, model=self.model, base_url=self.base_url, api_key_env=self.api_key_env,
                                key_unset=not (self._api_key or os.environ.get(self.api_key_env)))

    def __repr__(self) -> str:
        return f"OpenAIBatchBackend({self.base_url!r}, model={self.model!r})"
