"""Structured (JSON) output: request arguments, validation, re-ask messages.

The runner sends requests itself (cached, budgeted). Where the server enforces a schema, instructor shapes the
request (``response_format`` with the output model's schema); elsewhere (JSON mode) the schema goes to the model as
text from ``prompts/structured/json_mode.j2`` (a template file, like every prompt; instructor's own text was sent
before). Instructor validates a reply and writes the re-ask that carries the validation error.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any

from curate.codes import Failure, FailureCode
from curate.llm.base import Backend

JSON_MODE_TEMPLATE = "structured/json_mode.j2"  # under the built-in prompts folder


def instructor_mode(backend: Backend):
    """JSON_SCHEMA where the server enforces a schema; plain JSON mode elsewhere."""
    import instructor

    return instructor.Mode.JSON_SCHEMA if backend.supports_json_schema else instructor.Mode.JSON


@functools.lru_cache(maxsize=1)
def _json_mode_template() -> tuple[Any, str]:
    """The JSON-mode schema message's template, compiled in the prompts' sandbox, and a hash of its text."""
    from jinja2 import StrictUndefined, TemplateSyntaxError

    from curate.llm.prompt_checks import PromptError, read_prompt_file
    from curate.llm.prompts import builtin_prompt_dir
    from curate.llm.sandbox import BoundedSandbox

    path = builtin_prompt_dir() / JSON_MODE_TEMPLATE
    if not path.is_file():
        raise PromptError(f"{path}: the JSON-mode schema message's template is missing")
    text = read_prompt_file(path)
    try:
        template = BoundedSandbox(undefined=StrictUndefined, autoescape=False).from_string(text)
    except TemplateSyntaxError as exc:
        raise PromptError(f"{path}:{exc.lineno}: {exc.message}") from None
    return template, hashlib.sha256(text.encode()).hexdigest()[:16]


def json_mode_fingerprint(backend: Backend) -> str | None:
    """A hash of the JSON-mode schema message's template where ``backend`` gets it (no schema enforcement), else
    None: a json request's cache aliases and its column's fingerprint follow an edit of the file."""
    return None if backend.supports_json_schema else _json_mode_template()[1]


def json_mode_message(output_model: Any) -> str:
    """The system text that asks for ``output_model`` as JSON, its schema shown (``JSON_MODE_TEMPLATE``)."""
    schema = json.dumps(output_model.model_json_schema(), indent=2, ensure_ascii=False)
    return _json_mode_template()[0].render(schema=schema).strip()


def shape_request(messages: list[dict[str, Any]], output_model: Any, mode) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(messages, extra request params) that ask for ``output_model`` in ``mode``: JSON mode appends the schema
    message to the system message (a first system message where there is none) and asks for a JSON object;
    JSON_SCHEMA mode sends the schema as ``response_format`` (instructor's)."""
    import instructor

    if mode is instructor.Mode.JSON:
        text = json_mode_message(output_model)
        shaped = [dict(m) for m in messages]
        if shaped and shaped[0].get("role") == "system" and isinstance(shaped[0].get("content"), str):
            shaped[0]["content"] = f"{shaped[0]['content']}\n\n{text}"
        else:
            shaped.insert(0, {"role": "system", "content": text})
        return shaped, {"response_format": {"type": "json_object"}}
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


def truncated_failure(limit: int | None, deterministic: bool, asked_again: bool, attempt: int,
                      text: str | None) -> Failure:
    """The failure of a JSON reply that stopped at max_tokens before it was complete: ``truncated``, the raw output
    kept. The runner re-asks it at most once, and never at temperature 0 (greedy decoding gives the same reply)."""
    where = f"max_tokens ({limit})" if limit else "the server's reply limit"
    why = ("; not re-asked: at temperature 0 the same reply would come back" if deterministic else
           "; re-asked once" if asked_again else "")
    return Failure(FailureCode.TRUNCATED, f"the reply stopped at {where} before its JSON was complete, after "
                   f"{attempt + 1} attempt(s){why}; raise max_tokens (the prompt's params) to let it finish; raw "
                   f"output ends {(text or '')[-200:]!r}", text)
