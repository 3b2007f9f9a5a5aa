"""LLM backends behind one interface, ``await backend.run(requests, on_done)``: the public names.

- :class:`OpenAIBackend` (``curate.llm.openai_backend``): any OpenAI-compatible endpoint, with
  concurrency, RPM/TPM limits, retries, timeouts, cost accounting and a hard ``max_cost`` cap.
- :class:`VLLMBackend` (``curate.llm.vllm_engine``): an in-process ``vllm.LLM``, batched.
- ``LocalServer().backend()`` (``curate.llm.local``): SmolLM2 on a vLLM server on loopback.

The interface, prices and the shared helpers live in ``curate.llm.base``.
"""

from curate.llm.base import (
    PRICES,
    Backend,
    OnDone,
    Request,
    estimate_tokens,
    format_usd,
    is_loopback,
    price_of,
    register_price,
    run_sync,
)
from curate.llm.openai_backend import OpenAIBackend, parse_chat_completion
from curate.llm.vllm_engine import VLLMBackend

__all__ = ["PRICES", "Backend", "OnDone", "OpenAIBackend", "Request", "VLLMBackend", "estimate_tokens",
           "format_usd", "is_loopback", "parse_chat_completion", "price_of", "register_price", "run_sync"]
