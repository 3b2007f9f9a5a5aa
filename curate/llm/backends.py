"""LLM backends behind one interface, ``await backend.run(requests, on_done)``: the public names.

- :class:`OpenAIBackend` (``curate.llm.openai_backend``): any OpenAI-compatible endpoint, with
  concurrency, RPM/TPM limits, retries, timeouts, cost accounting and a hard ``max_cost`` cap.
- :class:`VLLMBackend` (``curate.llm.vllm_engine``): an in-process ``vllm.LLM``, batched.
- ``LocalServer().backend()`` (``curate.llm.local``): SmolLM2 on a vLLM server on loopback;
  ``warm_backend()`` reuses a running ``curate serve-local`` or one server per Python session.
- :class:`OpenAIBatchBackend` (``curate.llm.batch``): an OpenAI-compatible batch API (half price, resumable).
- :class:`VLLMBatchBackend` (``curate.llm.vllm_batch``): the same batch file through vLLM's batch runner.

The interface, prices and the shared helpers live in ``curate.llm.base``.
"""

from curate.llm.base import (
    BATCH_PRICES,
    PRICES,
    Backend,
    OnDone,
    Request,
    batch_price_of,
    estimate_tokens,
    format_usd,
    is_loopback,
    price_of,
    register_price,
    run_sync,
)
from curate.llm.batch import OpenAIBatchBackend
from curate.llm.openai_backend import OpenAIBackend, parse_chat_completion
from curate.llm.vllm_batch import VLLMBatchBackend
from curate.llm.vllm_engine import VLLMBackend

__all__ = ["BATCH_PRICES", "PRICES", "Backend", "OnDone", "OpenAIBackend", "OpenAIBatchBackend", "Request",
           "VLLMBackend", "VLLMBatchBackend", "batch_price_of", "estimate_tokens", "format_usd", "is_loopback",
           "parse_chat_completion", "price_of", "register_price", "run_sync"]
