"""The batch JSONL both batch backends write and read (``custom_id`` = the request's cache key): one input line
per request, the split by per-batch limits, and the reading of an output or error line.

Shared by ``curate.llm.batch`` (OpenAI's batch API) and ``curate.llm.vllm_batch`` (vLLM's offline batch runner).
"""

from __future__ import annotations

import json
from typing import Any

from curate.codes import FailureCode
from curate.errors import CurateError
from curate.llm.base import Request, cost_usd, estimate_tokens, failure_result, refused_code
from curate.llm.endpoint import transient_status
from curate.llm.openai_backend import _max_tokens, parse_chat_completion

ENDPOINT = "/v1/chat/completions"


def batch_line(request: Request, model: str) -> bytes:
    """One input line: the same body the online backend posts, ``custom_id`` = the request's cache key."""
    body = {**request.params, "model": model, "messages": request.messages}
    return json.dumps({"custom_id": request.key, "method": "POST", "url": ENDPOINT, "body": body},
                      ensure_ascii=False).encode() + b"\n"


def split_batches(lines: list[bytes], max_requests: int, max_bytes: int) -> list[list[int]]:
    """Indices of ``lines`` grouped into batches of at most ``max_requests`` lines and ``max_bytes`` bytes."""
    groups: list[list[int]] = []
    size = 0
    for i, line in enumerate(lines):
        if len(line) > max_bytes:
            raise CurateError(f"one batch request is {len(line):,} bytes, over the per-batch limit of {max_bytes:,}")
        if not groups or len(groups[-1]) >= max_requests or size + len(line) > max_bytes:
            groups.append([])
            size = 0
        groups[-1].append(i)
        size += len(line)
    return groups


def read_output_line(line: dict[str, Any], price: tuple[float, float] | None,
                     request: Request | None) -> tuple[str, dict[str, Any]]:
    """(outcome, result) of one output/error line: ``ok`` (a response dict, as the online backend stores it),
    ``retry`` (transient or expired: resubmit alone) or ``failed`` (a permanent failure dict)."""
    response = line.get("response") or {}
    error = line.get("error") or {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, dict):
        try:
            result = parse_chat_completion(body)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return "retry", failure_result(f"malformed response body in the batch output ({type(exc).__name__})",
                                           FailureCode.TRANSIENT)
        usage = result["usage"]
        if usage.pop("reported") or request is None:
            result["cost_usd"] = cost_usd(price, usage["prompt_tokens"], usage["completion_tokens"])
        else:  # no usage in the reply: charge the worst case, and say so (as the online backend does)
            result["cost_usd"] = cost_usd(price, estimate_tokens(request.messages), _max_tokens(request))
            result["usage_estimated"] = True
        return "ok", result
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        error = error or body["error"]
    message = error.get("message") or (json.dumps(body)[:200] if body else "no response")
    code = error.get("code")
    text = f"batch request {code or 'failed'}" + (f" (HTTP {status})" if status else "") + f": {message}"
    if code == "batch_expired" or status is None or transient_status(status):
        return "retry", failure_result(text, FailureCode.TRANSIENT)
    return "failed", failure_result(text, refused_code(f"{text} {code or ''}"))
