"""Structured (JSON) output through instructor: request arguments, validation, re-ask messages.

The runner sends requests itself (cached, budgeted); instructor only shapes the request for the
output model (``response_format`` / schema text), validates a reply, and writes the re-ask that
carries the validation error.
"""

from __future__ import annotations

from typing import Any

from curate.llm.base import Backend


def instructor_mode(backend: Backend):
    """JSON_SCHEMA where the server enforces a schema; plain JSON mode elsewhere."""
    import instructor

    return instructor.Mode.JSON_SCHEMA if backend.supports_json_schema else instructor.Mode.JSON


def shape_request(messages: list[dict[str, Any]], output_model: Any, mode) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(messages, extra request params) that ask for ``output_model`` in ``mode``."""
    from instructor.processing import handle_response_model

    _, kwargs = handle_response_model(output_model, mode=mode, messages=messages)
    messages = kwargs.pop("messages")
    return messages, kwargs


def _as_completion(text: str, finish_reason: str | None, model: str):
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate({
        "id": "curate-cached", "object": "chat.completion", "created": 0, "model": model or "unknown",
        "choices": [{"index": 0, "finish_reason": finish_reason or "stop",
                     "message": {"role": "assistant", "content": text}}]})


def validate(response: dict[str, Any], output_model: Any, mode, model_name: str):
    """(object, None) or (None, (exception, completion)) for a stored response."""
    from instructor.processing import process_response

    completion = _as_completion(response.get("text") or "", response.get("finish_reason"), model_name)
    try:
        return process_response(completion, response_model=output_model, stream=False, mode=mode), None
    except Exception as exc:  # instructor raises ValidationError, JSONDecodeError, IncompleteOutputException ...
        return None, (exc, completion)


def reask(messages: list[dict[str, Any]], params: dict[str, Any], mode, completion,
          exc: Exception) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(messages, params) of the re-ask that shows the model its invalid reply and the error."""
    from instructor.processing import handle_reask_kwargs

    kwargs = handle_reask_kwargs({"messages": list(messages), **params}, mode, completion, exc)
    new_messages = kwargs.pop("messages")
    return new_messages, {k: v for k, v in kwargs.items() if k in params}
