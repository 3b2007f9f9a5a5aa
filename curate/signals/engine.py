"""The small-LM scoring engine: per-token log-likelihoods of response tokens under a causal LM.

``Engine(model_dir)`` loads any Hugging Face causal LM folder (default: the packaged SmolLM2-135M-Instruct,
converted once by :func:`curate.llm.local.prepare_model`) on the CPU or on CUDA when present, in float32
unless asked otherwise (``SIGNAL.dtype``). :meth:`Engine.logprobs` answers a list of
:class:`~curate.signals.template.Request` from the on-disk cache first, then runs the missing ones in
length buckets (per request kind (conditioned / alone), sorted by length, ties by cache key, right-padded per
batch, a token budget per batch), writing every batch to the cache before its values are used. Only response positions go through the output head.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curate.defaults import SIGNAL
from curate.hardware import import_torch, resolve_device, resolve_dtype
from curate.quiet import quiet_transformers
from curate.signals.cache import LogprobCache, request_key
from curate.signals.template import Prompter, Request, capped_length, check_model_folder
from curate.storage.files import folder_fingerprint
from curate.storage.step import add_counts

OnDone = Callable[[list[int]], Any]
MIN_FILL = 0.75  # a batch stops growing when padding would exceed a quarter of it
HEAD_CHUNK = 1024  # response positions per output-head slice on the CPU (float32 logits ~200 MB); 8x on CUDA


def default_model_dir() -> Path:
    """The packaged SmolLM2-135M-Instruct as a Hugging Face folder (converted once, cached)."""
    from curate.llm.local import prepare_model

    return prepare_model()


def model_fingerprint(files: str, dtype: str, device: str, adapter: str | None = None) -> str:
    """What names a model's log-probabilities: its files, dtype and adapter; in bfloat16 also a CUDA device, whose bf16
    kernels round otherwise than the CPU's (bf16 moves a turn's IFD by up to 15%), so a GPU's values never answer a
    CPU request. float32 is shared (the devices agree to float rounding) and the CPU's names stay as they were."""
    on = "@cuda" if dtype == "bfloat16" and device.startswith("cuda") else ""
    return f"{files}:{dtype}{on}" + (f"+lora:{adapter}" if adapter is not None else "")


def batches(requests: Sequence[Request], order: Sequence[int], batch_tokens: int, max_batch: int,
            min_fill: float = MIN_FILL) -> list[list[int]]:
    """Length buckets over ``order`` (longest first): consecutive requests while the padded batch fits the
    token budget and at least ``min_fill`` of it is real tokens (a long request does not pad many short ones)."""
    out: list[list[int]] = []
    cur: list[int] = []
    width = real = 0
    for i in order:
        n = requests[i].length
        w = max(width, n)
        if cur and (w * (len(cur) + 1) > batch_tokens or len(cur) >= max_batch
                    or real + n < min_fill * w * (len(cur) + 1)):
            out.append(cur)
            cur, w, real = [], n, 0
        cur.append(i)
        width, real = w, real + n
    if cur:
        out.append(cur)
    return out


class Engine:
    """Per-token log-likelihoods of response tokens, cached; see the module doc.

    ``fingerprint`` names the model's exact behaviour (its files' hashes + dtype + any adapter); it keys the
    cache and the steps' columns. ``stats`` counts requests, cache hits, computed requests and forward passes.
    """

    def __init__(self, model_dir: str | Path | None = None, *, device: str | None = None, dtype: str = SIGNAL.dtype,
                 max_length: int = SIGNAL.max_length, batch_tokens: int | None = None,
                 max_batch: int | None = None, chat_template: str | None = None,
                 alone_start: str | None = None, adapter: Any = None):
        self.model_dir = check_model_folder(model_dir if model_dir is not None else default_model_dir())
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        self.max_length = capped_length(max_length, self.model_dir)
        cuda = self.device.startswith("cuda")
        self.batch_tokens = batch_tokens or (SIGNAL.batch_tokens_cuda if cuda else SIGNAL.batch_tokens)
        self.max_batch = max_batch or (SIGNAL.max_batch_cuda if cuda else SIGNAL.max_batch)
        self.head_chunk = HEAD_CHUNK * (8 if cuda else 1)
        self.chat_template = chat_template
        self.alone_start = alone_start
        self.adapter = adapter  # a curate.signals.lora.Adapter merged into the weights at load time
        self.fingerprint = model_fingerprint(folder_fingerprint(self.model_dir), self.dtype, self.device,
                                             adapter.fingerprint if adapter is not None else None)
        self._tokenizer: Any = None
        self._model: Any = None
        self._prompter: Prompter | None = None
        self.stats = {"requests": 0, "cache_hits": 0, "computed": 0, "forward_passes": 0, "tokens": 0,
                      "seconds": 0.0}

    # -- loading ---------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            import_torch()  # first: a Ctrl-C in its first import breaks torch for the process
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
        return self._tokenizer

    @property
    def prompter(self) -> Prompter:
        """Builds this model's requests from turns (chat template, truncation)."""
        if self._prompter is None:
            self._prompter = Prompter(self.tokenizer, self.max_length, self.chat_template, self.alone_start)
        return self._prompter

    @property
    def model(self) -> Any:
        """The causal LM in eval mode on its device and dtype (loaded on first use)."""
        if self._model is None:
            torch = import_torch()
            from transformers import AutoModelForCausalLM

            dt = getattr(torch, self.dtype)
            with quiet_transformers():
                model = AutoModelForCausalLM.from_pretrained(str(self.model_dir), dtype=dt)
            if self.adapter is not None:
                model = self.adapter.merged(model)
            self._model = model.to(self.device).eval()
        return self._model

    def release(self) -> None:
        """Drop the loaded model (the tokenizer stays)."""
        self._model = None

    # -- scoring ---------------------------------------------------------------------------------------
    def key(self, request: Request) -> str:
        return request_key(self.fingerprint, request.context, request.target)

    def logprobs(self, requests: Sequence[Request], cache_dir: Path, on_done: OnDone | None = None,
                 cache_use: dict[str, int] | None = None, groups: Sequence[str] | None = None) -> list[np.ndarray]:
        """Log-probability of every target token of every request (float32 arrays, aligned to ``requests``).

        Cached answers come first (``on_done`` is called with their indices), then the rest in length
        buckets; each batch is stored in ``cache_dir`` before ``on_done`` hears of it. ``groups``: a label per request
        (``conditioned``, ``alone``); a batch holds one label's requests only, so a request's batch-mates (and so its
        last digits) do not depend on which other kinds of request were asked with it. ``cache_use``: the caller's
        own count of this call's requests and cache answers (``stats`` sums every call, from every thread).
        """
        started = time.perf_counter()
        keys = [self.key(r) for r in requests]
        out: list[np.ndarray | None] = [None] * len(requests)
        with LogprobCache(cache_dir) as cache:
            hits = cache.get_many(set(keys))
            for i, k in enumerate(keys):
                if k in hits:
                    out[i] = hits[k]
            done = [i for i, v in enumerate(out) if v is not None]
            self.stats["requests"] += len(requests)
            self.stats["cache_hits"] += len(done)
            add_counts(cache_use, requests=len(requests), cached_requests=len(done))
            if done and on_done is not None:
                on_done(done)
            same: dict[str, list[int]] = {}  # identical requests are computed once
            for i, k in enumerate(keys):
                if out[i] is None:
                    same.setdefault(k, []).append(i)
            for batch in self.batch_plan(requests, keys, list(same.values()), groups):
                values = self._forward([requests[i] for i in batch])
                cache.put_many(self.fingerprint, [(keys[i], v) for i, v in zip(batch, values, strict=True)])
                finished = []
                for i, v in zip(batch, values, strict=True):
                    for j in same[keys[i]]:
                        out[j] = v
                        finished.append(j)
                self.stats["computed"] += len(batch)
                self.stats["tokens"] += sum(requests[i].length for i in batch)
                if on_done is not None:
                    on_done(finished)
        self.stats["seconds"] += time.perf_counter() - started
        return out  # type: ignore[return-value]

    def batch_plan(self, requests: Sequence[Request], keys: Sequence[str], same: list[list[int]],
                   groups: Sequence[str] | None = None) -> list[list[int]]:
        """The batches of the distinct requests ``same`` (indices of identical requests, the first one computed): per
        group label, longest first, ties by cache key, so the plan depends on the set of requests, not their order."""
        label = (lambda i: "") if groups is None else (lambda i: groups[i])
        firsts = sorted((min(label(j) for j in g), -requests[g[0]].length, keys[g[0]], g[0]) for g in same)
        plan: list[list[int]] = []
        for _, part in itertools.groupby(firsts, key=lambda item: item[0]):
            plan += batches(requests, [item[3] for item in part], self.batch_tokens, self.max_batch)
        return plan

    def _forward(self, batch: list[Request]) -> list[np.ndarray]:
        """One padded forward pass; log-probabilities of each request's target tokens (float32)."""
        torch = import_torch()
        model = self.model
        width = max(r.length for r in batch)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.full((len(batch), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        rows, cols, targets = [], [], []
        for b, r in enumerate(batch):
            seq = list(r.context) + list(r.target[:-1])
            ids[b, :len(seq)] = torch.tensor(seq, dtype=torch.long)
            mask[b, :len(seq)] = 1
            start = len(r.context) - 1  # the position that predicts the first target token
            rows += [b] * len(r.target)
            cols += range(start, start + len(r.target))
            targets += r.target
        ids, mask = ids.to(self.device), mask.to(self.device)
        rows_t = torch.tensor(rows, device=self.device)
        cols_t = torch.tensor(cols, device=self.device)
        tgt = torch.tensor(targets, device=self.device)
        with torch.inference_mode():
            if _plain_head(model):
                hidden = model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state[rows_t, cols_t]
                head = model.get_output_embeddings()
                step = self.head_chunk
                parts = [_target_logprobs(head(hidden[i:i + step]), tgt[i:i + step])
                         for i in range(0, len(targets), step)]
                lp = torch.cat(parts)
            else:  # a model that scales or caps its logits: take them from its own forward
                lp = _target_logprobs(model(input_ids=ids, attention_mask=mask).logits[rows_t, cols_t], tgt)
        self.stats["forward_passes"] += 1
        flat = lp.cpu().numpy().astype(np.float32)
        out, at = [], 0
        for r in batch:
            out.append(flat[at:at + len(r.target)].copy())
            at += len(r.target)
        return out

    def describe(self) -> dict[str, Any]:
        """Provenance of the engine's settings."""
        return {"model": str(self.model_dir), "model_fingerprint": self.fingerprint, "dtype": self.dtype,
                "device": self.device, "max_length": self.max_length,
                "alone_start": self.tokenizer.convert_ids_to_tokens(self.prompter.start_token),
                **({"adapter": self.adapter.describe()} if self.adapter is not None else {})}


def _target_logprobs(logits: Any, targets: Any) -> Any:
    """log softmax(logits)[target] per row, in float32: the target's logit minus the row's logsumexp."""
    torch = import_torch()
    logits = logits.float()
    return logits.gather(1, targets[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)


def _plain_head(model: Any) -> bool:
    """Whether logits are just the output head applied to the backbone's last hidden state."""
    cfg = model.config
    if getattr(cfg, "final_logit_softcapping", None) or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        return False
    return model.get_output_embeddings() is not None and model.base_model is not model
