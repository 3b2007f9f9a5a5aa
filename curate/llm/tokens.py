"""Prompt tokens counted with the model's own tokenizer, for dry runs.

- Local models (``local``, ``vllm``, ``vllm-batch``, or the SmolLM2 name): the Hugging Face tokenizer
  of the model folder, applying its chat template with the generation prompt, as vLLM's server does.
- OpenAI models: ``tiktoken`` (``pip install curate[openai-tokens]``) with OpenAI's chat framing (3
  tokens per message + 3 for the reply). tiktoken downloads its encoding files on first use; where it
  cannot (no network, no cached file), the count falls back to the estimate and says so.
- Anything else: curate's deliberately high estimate (``curate.llm.base.estimate_tokens``: a token per 3 letters of a
  word, per symbol, per UTF-8 byte of non-ASCII text, + per-message overhead).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.llm.base import estimate_tokens

LOCAL_KINDS = ("local", "vllm", "vllm-batch")
Messages = list[dict[str, Any]]


class TokenCounter:
    """``count(list of message lists) -> tokens per request``; ``name`` says which tokenizer counted."""

    name = "estimate (a token per 3 letters, symbol or non-ASCII byte + 8 per message, a high bound)"
    exact = False

    def count(self, conversations: Sequence[Messages]) -> list[int]:
        return [estimate_tokens(m) for m in conversations]


class HFChatCounter(TokenCounter):
    """A Hugging Face tokenizer with the model's chat template (what vLLM's server counts)."""

    exact = True

    def __init__(self, folder: str | os.PathLike):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.name = f"Hugging Face tokenizer + chat template of {Path(folder).name}"

    def count(self, conversations: Sequence[Messages]) -> list[int]:
        if not conversations:
            return []
        texts = [self.tokenizer.apply_chat_template(m, add_generation_prompt=True, tokenize=False)
                 for m in conversations]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]


class TiktokenCounter(TokenCounter):
    """tiktoken with OpenAI's chat framing: 3 tokens per message plus its role and content, 3 for the reply."""

    exact = True

    def __init__(self, encoding: Any):
        self.encoding = encoding
        self.name = f"tiktoken {encoding.name}"

    def count(self, conversations: Sequence[Messages]) -> list[int]:
        out = []
        for messages in conversations:
            texts = []
            for m in messages:
                content = m.get("content")
                texts += [str(m.get("role", "")), content if isinstance(content, str) else str(content or "")]
                if m.get("name"):
                    texts.append(str(m["name"]))
            lengths = self.encoding.encode_ordinary_batch(texts) if texts else []
            out.append(sum(len(x) for x in lengths) + 3 * len(messages) + 3)
        return out


def _tiktoken(model: str) -> tuple[TokenCounter | None, str]:
    try:
        import tiktoken
    except ImportError:
        return None, "tiktoken not installed (pip install 'curate[openai-tokens]')"
    try:
        encoding = tiktoken.encoding_for_model(model)
    except KeyError:
        return None, f"tiktoken does not know model {model!r}"
    except Exception as exc:  # the encoding file could not be fetched (offline) or read
        return None, f"tiktoken's encoding for {model!r} is unavailable ({type(exc).__name__})"
    try:
        encoding.encode_ordinary("probe")
    except Exception as exc:
        return None, f"tiktoken's encoding {encoding.name} is unavailable ({type(exc).__name__})"
    return TiktokenCounter(encoding), ""


def token_counter(backend: Any) -> TokenCounter:
    """The tokenizer of ``backend``'s model: HF chat template for local models, tiktoken for OpenAI's,
    else the estimate (its ``name`` says why)."""
    from curate.llm.local import SERVED_NAME

    kind, model = getattr(backend, "kind", ""), getattr(backend, "model", "")
    if kind in LOCAL_KINDS or model == SERVED_NAME:
        from curate.llm.local import prepare_model

        return HFChatCounter(getattr(backend, "model_dir", None) or prepare_model())
    counter, why = _tiktoken(model)
    if counter is not None:
        return counter
    fallback = TokenCounter()
    fallback.name = f"{TokenCounter.name}; {why}"
    return fallback
