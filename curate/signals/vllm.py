"""The alternative engine: the same requests answered by vLLM's ``prompt_logprobs`` over HTTP.

``VllmEngine`` keeps everything of :class:`~curate.signals.engine.Engine` (the requests, the chat template,
truncation, the on-disk cache, length buckets, progress) and replaces only the forward pass: each request's
exact token ids go to an OpenAI-compatible vLLM server as a one-token completion with
``prompt_logprobs=0``, ``concurrency`` in flight. With no ``base_url`` it starts the packaged SmolLM2 on a
:class:`curate.llm.local.LocalServer` at the first request that misses the cache, and stops it on
:meth:`VllmEngine.close`. vLLM's kernels differ from transformers', so its cache entries are its own
(the fingerprint says ``vllm``). Measured on 2 CPU cores (evals/bench_signals.py --vllm): about twice the
transformers engine's rows/s; the lent GPU machine has no vLLM, so there the transformers engine runs.

A server given by ``base_url`` serves weights this process cannot hash, so its fingerprint (the cache key and the
steps' columns) adds what the server's ``/v1/models`` says of ``served_model``: its id, ``root`` (the weights'
path or hub name), ``parent`` and ``max_model_len``; two servers of different models that share a tokenizer keep
apart. The address is left out (a restarted server on another port keeps its cache); so is the server's dtype, which
the API does not tell: serve one model in one dtype per cache. The requests are token ids from ``model_dir``'s tokenizer (default: the
packaged SmolLM2's), so before its first request a remote server must encode a probe text (vLLM's ``/tokenize``) as
that tokenizer does: a server of another vocabulary is refused, where it scored other text in silence. The packaged server keeps its old fingerprint (its
weights are the tokenizer folder's, hashed).

``max_length`` is capped at the server's context less the one token a completion must generate (the packaged server's
``BACKEND.local_max_model_len``; a remote one's ``max_model_len``), as the transformers engine caps it at the model's
position window: a longer turn is truncated and counted, where the server refused it (HTTP 400) and the run stopped.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from curate.defaults import BACKEND, SIGNAL
from curate.errors import CurateError
from curate.signals.cache import json_fingerprint
from curate.signals.engine import Engine
from curate.signals.template import Request

VLLM_BATCH = 64  # requests handed to the server per cached batch (the server batches them itself)
TOKENIZER_PROBE = "Curate: Hello, world! 東京 2026 — ça va? 😀"  # text a remote server's tokenizer must encode as ours


class VllmEngine(Engine):
    """:class:`Engine` whose forward pass is a vLLM server's ``prompt_logprobs``, in the dtype the packaged server
    runs in on this machine (:func:`curate.hardware.resolve_dtype`'s ``auto``)."""

    def __init__(self, model_dir: str | Path | None = None, *, base_url: str | None = None,
                 served_model: str | None = None, concurrency: int = BACKEND.concurrency,
                 max_length: int = SIGNAL.max_length, chat_template: str | None = None,
                 alone_start: str | None = None):
        if base_url is None and model_dir is not None:
            raise CurateError("VllmEngine starts a server for the packaged SmolLM2 only: serve your model with "
                              "vLLM and pass base_url=, served_model= and this model_dir= (its tokenizer and chat "
                              "template build the requests)")
        super().__init__(model_dir, device="cpu", dtype="auto", max_length=max_length,
                         batch_tokens=1 << 40, max_batch=VLLM_BATCH, chat_template=chat_template,
                         alone_start=alone_start)
        self.base_url = base_url
        self.served_model = served_model
        self.remote = base_url is not None  # a server given by address (not the packaged one this engine starts)
        self.served: dict[str, Any] | None = None  # the remote server's /v1/models entry of served_model, once read
        self.concurrency = concurrency
        self._server: Any = None
        self._client: Any = None
        self._tokenizer_checked = False

    @property
    def fingerprint(self) -> str:
        """The tokenizer folder's hash and dtype, plus (a remote server) what it says of the model it serves."""
        if not self.remote:
            return f"{self._tokenizer_fingerprint}:vllm"
        return f"{self._tokenizer_fingerprint}:{self.served_model}@{json_fingerprint(self.served_identity())}:vllm"

    @fingerprint.setter
    def fingerprint(self, value: str) -> None:  # Engine.__init__ sets the folder's hash and dtype
        self._tokenizer_fingerprint = value

    @property
    def max_length(self) -> int:
        """Context + response tokens per request: as asked, capped at :meth:`server_window` less one (the generated
        token: vLLM refuses a prompt that leaves it no room)."""
        window = self.server_window()
        return min(self._max_length, window - 1) if window else self._max_length

    @max_length.setter
    def max_length(self, value: int) -> None:  # Engine.__init__ sets the length asked for, capped at the position window
        self._max_length = value

    def server_window(self) -> int | None:
        """The tokens the server reads at once (prompt and reply): the packaged server's ``max_model_len``, or what a
        remote one's ``/v1/models`` says (None when it does not say)."""
        if not self.remote:
            return BACKEND.local_max_model_len
        window = self.served_identity().get("max_model_len")
        return int(window) if isinstance(window, int) and window > 1 else None

    def _failed(self, what: str, exc: Exception) -> CurateError:
        return CurateError(f"{self.base_url} (served model {self.served_model!r}): {what} failed: "
                           f"{type(exc).__name__}: {exc}")

    def served_identity(self) -> dict[str, Any]:
        """The remote server's ``/v1/models`` entry of ``served_model`` (id, root, parent, max_model_len): read once."""
        if self.served is None:
            import openai

            if self._client is None:
                self._connect()
            try:
                listed = self._client.models.list().data
            except openai.OpenAIError as exc:
                raise self._failed("listing its models (GET /models)", exc) from exc
            entry = next((m for m in listed if m.id == self.served_model), None)
            if entry is None:
                raise CurateError(f"{self.base_url}: the server serves no model named {self.served_model!r} (it "
                                  f"serves: {', '.join(m.id for m in listed) or 'none'}); pass served_model= one of them")
            extra = entry.model_extra or {}
            self.served = {"id": entry.id, **{k: extra.get(k) for k in ("root", "parent", "max_model_len")}}
        return self.served

    def _connect(self) -> None:
        from openai import OpenAI

        if self.base_url is None:
            from curate.llm.local import LocalServer

            self._server = LocalServer(dtype=self.dtype).start()
            self.base_url, self.served_model = self._server.base_url, self._server.model
        if not self.served_model:
            raise CurateError("VllmEngine needs served_model= (the name the server serves the model under)")
        self._client = OpenAI(base_url=self.base_url, api_key="local", timeout=BACKEND.timeout_s * 10)

    def check_tokenizer(self) -> None:
        """Refuse a remote server whose tokenizer encodes :data:`TOKENIZER_PROBE` otherwise than this engine's model
        folder: the requests are token ids, so another vocabulary would score other text, in silence (vLLM's
        ``/tokenize``, once per engine)."""
        import urllib.error
        import urllib.request

        url = self.base_url.rstrip("/").removesuffix("/v1") + "/tokenize"
        body = json.dumps({"model": self.served_model, "prompt": TOKENIZER_PROBE, "add_special_tokens": False})
        req = urllib.request.Request(url, data=body.encode(), headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=BACKEND.timeout_s) as resp:
                theirs = json.loads(resp.read())["tokens"]
        except (OSError, ValueError, KeyError, TypeError) as exc:  # urllib's HTTPError and URLError are OSErrors
            raise self._failed(f"checking its tokenizer (POST {url}; is it vLLM?)", exc) from exc
        ours = self.prompter.encode(TOKENIZER_PROBE)
        if list(theirs) != ours:
            raise CurateError(f"{self.base_url} (served model {self.served_model!r}): its tokenizer encodes text "
                              f"otherwise than the one of {self.model_dir} ({TOKENIZER_PROBE!r}: {len(theirs)} tokens "
                              f"{list(theirs)[:6]}... there, {len(ours)} tokens {ours[:6]}... here), so the token ids "
                              "sent would be other text to it: pass model_dir= the served model's folder")
        self._tokenizer_checked = True

    def _one(self, request: Request) -> np.ndarray:
        import openai

        ids = list(request.context) + list(request.target)
        try:
            resp = self._client.completions.create(model=self.served_model, prompt=ids, max_tokens=1,
                                                   temperature=0.0, extra_body={"prompt_logprobs": 0})
        except openai.APIError as exc:  # its own message names neither the server nor the model
            raise self._failed("a prompt_logprobs request", exc) from exc
        plp = (resp.choices[0].model_extra or {}).get("prompt_logprobs")
        if plp is None or len(plp) != len(ids):
            raise CurateError(f"{self.base_url}: the server returned no prompt_logprobs for {len(ids)} tokens "
                              "(is it vLLM?)")
        start = len(request.context)
        return np.array([plp[start + k][str(t)]["logprob"] for k, t in enumerate(request.target)], np.float32)

    def _forward(self, batch: list[Request]) -> list[np.ndarray]:
        if self._client is None:
            self._connect()
        if self.remote and not self._tokenizer_checked:
            self.check_tokenizer()
        with ThreadPoolExecutor(self.concurrency) as pool:
            out = list(pool.map(self._one, batch))
        self.stats["forward_passes"] += 1
        return out

    @property
    def model(self) -> Any:
        raise CurateError("VllmEngine has no in-process model (its forward pass is the server's)")

    def close(self) -> None:
        """Stop the server this engine started (a no-op for a server given by ``base_url``)."""
        if self._server is not None:
            self._server.stop()
            self._server = None
            self.base_url = self._client = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "engine": "vllm prompt_logprobs", "base_url": self.base_url,
                "served_model": self.served_model, **({"served": self.served_identity()} if self.remote else {})}
