"""``VLLMBackend``: an in-process ``vllm.LLM``; all requests of a call go to the engine in batches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from curate.codes import FailureCode
from curate.defaults import BACKEND
from curate.errors import CurateError, python_and_cli
from curate.hardware import resolve_dtype
from curate.llm.base import Backend, OnDone, Request, failure_result, refused_code, reply_token_limit
from curate.llm.local import (
    SERVED_NAME,
    WHOLE_PREFILL_ENGINE_KWARGS,
    check_model_path,
    curate_home,
    folder_model_name,
    prepare_model,
    server_env,
)

# Request parameters sampling_params maps itself, and those the engine takes under the same name (the OpenAI
# chat fields and vLLM's own extras that its server also accepts).
MAPPED_PARAMS = frozenset({"temperature", "top_p", "max_tokens", "max_completion_tokens", "logprobs", "top_logprobs",
                           "seed", "stop", "response_format"})
SAMPLING_PARAMS = ("presence_penalty", "frequency_penalty", "repetition_penalty", "top_k", "min_p", "min_tokens",
                   "stop_token_ids", "ignore_eos", "logit_bias", "skip_special_tokens", "include_stop_str_in_output")


def sampling_kwargs(params: dict[str, Any], model_defaults: dict[str, Any] | None = None,
                    openai_defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The keyword arguments of vLLM's ``SamplingParams`` for a request's OpenAI-style ``params``. Every parameter
    is honoured or refused: one the engine has no counterpart for raises, as an API server answers 400, rather
    than being dropped (a prompt's ``frequency_penalty`` must not act through a server and vanish in-process).
    A sampling parameter the request leaves out takes what vLLM's server gives it (request, else the model's
    generation config ``model_defaults``, else the OpenAI default in ``openai_defaults``): a prompt without a
    temperature was decoded greedily here and at 1.0 by a server, under one cache key."""
    unknown = sorted(set(params) - MAPPED_PARAMS - set(SAMPLING_PARAMS))
    if unknown:
        server = python_and_cli("OpenAIBackend(base_url=...)", "--backend local, or --base-url")
        raise CurateError(f"the in-process vLLM engine, {python_and_cli('VLLMBackend', '--backend vllm')}, has no "
                          f"request parameter {unknown}; it takes {sorted(MAPPED_PARAMS | set(SAMPLING_PARAMS))}. "
                          f"Remove it from the prompt's params, or send through a server ({server})")
    fmt = params.get("response_format") or {}
    structured = ({"json": fmt["json_schema"]["schema"]} if fmt.get("type") == "json_schema"
                  else {"json_object": True} if fmt.get("type") == "json_object" else None)
    # unset: the model's generation config, else None, which the engine reads as the rest of the context (max_model_len
    # less the prompt), as a server does; a fixed cap here cut replies a server lets run on, under one cache key
    max_tokens = reply_token_limit(params) or (model_defaults or {}).get("max_tokens")
    extra = {k: params[k] for k in SAMPLING_PARAMS if params.get(k) is not None}
    if "logit_bias" in extra:  # JSON object keys are strings; the engine indexes token ids
        extra["logit_bias"] = {int(k): float(v) for k, v in extra["logit_bias"].items()}
    given = {"temperature": params.get("temperature"), "top_p": params.get("top_p"), **extra}
    unset = {name: (model_defaults or {}).get(name, default) for name, default in (openai_defaults or {}).items()
             if given.get(name) is None}
    return {**unset, **{k: v for k, v in given.items() if v is not None},
            "max_tokens": None if max_tokens is None else int(max_tokens), "logprobs": params.get("top_logprobs") if params.get("logprobs") else None,
            "seed": params.get("seed"), "stop": params.get("stop"), "structured_outputs": structured}


def server_sampling_table() -> dict[str, Any]:
    """vLLM's server's OpenAI defaults of the sampling parameters a chat request leaves out (its own table; the
    module moved in vLLM 0.16)."""
    try:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    except ImportError:
        from vllm.entrypoints.openai.protocol import ChatCompletionRequest
    private = getattr(ChatCompletionRequest, "__private_attributes__", {}).get("_DEFAULT_SAMPLING_PARAMS")
    return dict(private.default if private is not None else ChatCompletionRequest._DEFAULT_SAMPLING_PARAMS)


class VLLMBackend(Backend):
    """In-process ``vllm.LLM``: every request of a call goes to the engine in one ``chat`` batch.

    ``model_dir`` defaults to the converted SmolLM2 folder (see ``curate.llm.local.prepare_model``).
    ``close()`` it. Run it under ``if __name__ == "__main__":`` (vLLM spawns its engine process).
    """

    kind = "vllm"

    def __init__(self, model_dir: str | os.PathLike | None = None, *, served_name: str | None = None,
                 max_model_len: int = BACKEND.local_max_model_len, dtype: str = "auto", batch_size: int = 512,
                 top_logprobs: int = BACKEND.top_logprobs, **engine_kwargs: Any):
        check_model_path(model_dir)
        self.model_dir = Path(model_dir) if model_dir else prepare_model()
        self.model = served_name or (SERVED_NAME if model_dir is None else folder_model_name(self.model_dir))
        self.max_model_len = max_model_len
        self.dtype = resolve_dtype(dtype)
        self.batch_size = batch_size
        self.max_logprobs = top_logprobs
        self.engine_kwargs = engine_kwargs
        self._llm = None
        self._sampling_defaults: tuple[dict[str, Any], dict[str, Any]] | None = None
        self.prompt_tokens = self.completion_tokens = 0
        self.spent_usd = 0.0

    def describe(self) -> dict[str, Any]:
        return {"backend": self.kind, "model": self.model, "model_dir": str(self.model_dir), "dtype": self.dtype}

    @property
    def llm(self):
        if self._llm is None:
            for k, v in server_env(curate_home()).items():
                os.environ.setdefault(k, v)
            from vllm import LLM

            self._llm = LLM(model=str(self.model_dir), dtype=self.dtype, max_model_len=self.max_model_len,
                            enforce_eager=True, max_logprobs=self.max_logprobs,
                            **{**WHOLE_PREFILL_ENGINE_KWARGS, **self.engine_kwargs})
        return self._llm

    def sampling_params(self, params: dict[str, Any]):
        """vLLM's ``SamplingParams`` for a request's OpenAI-style ``params`` (see :func:`sampling_kwargs`), its
        unset sampling parameters as vLLM's server sets them (the model's generation config, else OpenAI's)."""
        sampling_kwargs(params)  # first: a refused parameter stops before vLLM is imported (~10 s) or loaded
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        if self._sampling_defaults is None:  # read once: vLLM reads generation_config.json again at each call
            self._sampling_defaults = (self.llm.model_config.get_diff_sampling_param(), server_sampling_table())
        kwargs = sampling_kwargs(params, *self._sampling_defaults)
        structured = kwargs.pop("structured_outputs")
        return SamplingParams(**kwargs, structured_outputs=StructuredOutputsParams(**structured) if structured else None)

    def generate_batch(self, requests: list[Request]) -> list[dict[str, Any]]:
        """One engine call for all ``requests``; results in the same order."""
        for r in requests:  # before self.llm: a refused one loads nothing
            sampling_kwargs(r.params)
        sampling = [self.sampling_params(r.params) for r in requests]
        outputs = self.llm.chat([r.messages for r in requests], sampling_params=sampling, use_tqdm=False)
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
            try:
                results = self.generate_batch(chunk)
            except ValueError:  # the engine refuses an input (e.g. longer than max_model_len): find which, alone
                results = [self._one(req) for req in chunk]
            for req, result in zip(chunk, results, strict=True):
                on_done(req, result)

    def _one(self, request: Request) -> dict[str, Any]:
        try:
            return self.generate_batch([request])[0]
        except ValueError as exc:
            return failure_result(f"vLLM refused the request: {str(exc)[:300]}",
                                  refused_code(str(exc), FailureCode.MODEL_ERROR))

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
