"""``VLLMBackend``: an in-process ``vllm.LLM``; all requests of a call go to the engine in batches."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from curate.codes import FailureCode
from curate.defaults import BACKEND
from curate.hardware import resolve_dtype
from curate.llm.base import Backend, OnDone, Request, failure_result
from curate.llm.local import (
    SERVED_NAME,
    WHOLE_PREFILL_ENGINE_KWARGS,
    curate_home,
    folder_model_name,
    prepare_model,
    server_env,
)


class VLLMBackend(Backend):
    """In-process ``vllm.LLM``: every request of a call goes to the engine in one ``chat`` batch.

    ``model_dir`` defaults to the converted SmolLM2 folder (see ``curate.llm.local.prepare_model``).
    ``close()`` it. Run it under ``if __name__ == "__main__":`` (vLLM spawns its engine process).
    """

    kind = "vllm"

    def __init__(self, model_dir: str | os.PathLike | None = None, *, served_name: str | None = None,
                 max_model_len: int = 2048, dtype: str = "auto", batch_size: int = 512,
                 top_logprobs: int = BACKEND.top_logprobs, **engine_kwargs: Any):
        self.model_dir = Path(model_dir) if model_dir else prepare_model()
        self.model = served_name or (SERVED_NAME if model_dir is None else folder_model_name(self.model_dir))
        self.max_model_len = max_model_len
        self.dtype = resolve_dtype(dtype)
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
            for k, v in server_env(curate_home()).items():
                os.environ.setdefault(k, v)
            from vllm import LLM

            self._llm = LLM(model=str(self.model_dir), dtype=self.dtype, max_model_len=self.max_model_len,
                            enforce_eager=True, max_logprobs=self.max_logprobs,
                            **{**WHOLE_PREFILL_ENGINE_KWARGS, **self.engine_kwargs})
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
                              max_tokens=int(params.get("max_tokens") or BACKEND.worst_case_max_tokens), logprobs=top,
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
            return failure_result(f"vLLM refused the request: {str(exc)[:300]}", FailureCode.MODEL_ERROR)

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
