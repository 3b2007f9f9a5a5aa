"""What the model is asked: the exact token ids of each response turn, with and without its context.

Conditioned (Cherry LLM's s(A|Q)): the conversation up to and including the user turn, rendered with the
model's chat template and its assistant header (``add_generation_prompt``), as the model was trained;
the target is the response's own tokens. Alone (s(A)): the same response tokens after a single
start-of-document token (see :func:`start_token`), no instruction, no template.

Truncation: when context + response exceed ``max_length`` tokens, the response keeps at least half of
the length (its tail is cut), the context keeps its end (the latest user turn and the assistant header);
both losses then cover the same response tokens, and the turn is marked ``truncated``. ``max_length`` is
capped at the model's position window (:func:`capped_length`): past it a model has no positions to read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.codes import Failure, FailureCode
from curate.errors import CurateError, OptionError, python_and_cli
from curate.rows import Turn


@dataclass(frozen=True)
class Request:
    """Score ``target`` token by token after ``context`` (both exact token ids)."""
    context: tuple[int, ...]
    target: tuple[int, ...]

    @property
    def length(self) -> int:
        """Tokens fed to the model (the last target token is only predicted)."""
        return len(self.context) + len(self.target) - 1


@dataclass(frozen=True)
class TurnPlan:
    """One turn's requests, or why it has none."""
    conditioned: Request | None = None
    alone: Request | None = None
    truncated: bool = False
    failure: Failure | None = None


def messages_before(turns: list[Turn], t: int) -> list[dict[str, str]]:
    """The chat messages a model saw before answering turn ``t`` (0-based): the system message in force,
    the earlier turns with their replies, and turn ``t``'s user message."""
    msgs: list[dict[str, str]] = []
    if turns[t].system:
        msgs.append({"role": "system", "content": turns[t].system})
    for prev in turns[:t]:
        msgs.append({"role": "user", "content": prev.instruction})
        if prev.response is not None:
            msgs.append({"role": "assistant", "content": prev.response})
    msgs.append({"role": "user", "content": turns[t].instruction})
    return msgs


DOCUMENT_SEPARATORS = ("<|endoftext|>",)


def start_token(tokenizer: Any, name: str | None = None) -> int:
    """The token a response scored alone starts after: ``name`` if given, else the pre-training document
    separator (``<|endoftext|>`` in GPT-2, SmolLM, Qwen vocabularies), else BOS, else EOS.

    Chat models often set BOS to a role marker (SmolLM2: ``<|im_start|>``), after which a response is
    implausible whatever it says; the document separator is the context-free start the model knows.
    """
    vocab = tokenizer.get_vocab()
    for cand in ([name] if name is not None else list(DOCUMENT_SEPARATORS)):
        if cand in vocab:
            return int(vocab[cand])
    if name is not None:
        raise CurateError(f"alone_start token {name!r} is not in the tokenizer's vocabulary")
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise CurateError("the tokenizer has no document separator, BOS or EOS token to start a response scored alone")
    return int(start)


WINDOW_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "seq_length")  # as model configs name it


def check_model_folder(model_dir: str | Path) -> Path:
    """``model_dir`` as a Path; an error naming it unless it is a Hugging Face model folder (its config.json)."""
    if not (Path(model_dir) / "config.json").exists():
        raise OptionError(f"{model_dir}: not a Hugging Face model folder (no config.json)")
    return Path(model_dir)


def position_window(config: dict[str, Any]) -> int | None:
    """The tokens a model can read at once, from its config (None when the config does not say)."""
    for key in WINDOW_KEYS:
        if isinstance(config.get(key), int) and config[key] > 0:
            return int(config[key])
    return None


def capped_length(max_length: int, model: str | Path | Any) -> int:
    """``max_length`` capped at the position window of ``model`` (a Hugging Face folder or a loaded model)."""
    if isinstance(model, (str, Path)):
        config = json.loads((Path(model) / "config.json").read_text())
    else:
        config = model.config.to_dict()
    window = position_window(config)
    return min(max_length, window) if window else max_length


class Prompter:
    """Turns conversations into scoring requests for one tokenizer."""

    def __init__(self, tokenizer: Any, max_length: int, chat_template: str | None = None,
                 alone_start: str | None = None):
        if max_length < 8:
            raise OptionError(f"max_length must be at least 8 tokens, got {max_length} "
                              f"({python_and_cli('max_length=', '--max-length')})")
        if chat_template is None and not getattr(tokenizer, "chat_template", None):
            raise CurateError("the model's tokenizer has no chat template: give one (chat_template= to the signal "
                              "steps in Python, --chat-template FILE to `curate signal`; Jinja) so the instruction is "
                              "rendered the way the model was trained; `curate train` and LESS need a model whose "
                              "tokenizer has one")
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.chat_template = chat_template
        self.start_token = start_token(tokenizer, alone_start)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens added."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def context_ids(self, messages: list[dict[str, str]]) -> list[int]:
        """The chat-template rendering of ``messages`` with the assistant header, as token ids."""
        from jinja2 import TemplateError

        try:  # transformers compiles it (its own Jinja extensions) at the first row
            text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                      chat_template=self.chat_template)
        except TemplateError as exc:  # a traceback from inside transformers before
            where = "the chat template given" if self.chat_template is not None else "the tokenizer's chat template"
            line = f" (line {exc.lineno})" if getattr(exc, "lineno", None) else ""
            raise CurateError(f"{where}{line} cannot render a conversation: {type(exc).__name__}: {exc}") from None
        return self.encode(text)

    def plan(self, turns: list[Turn]) -> list[TurnPlan]:
        """One plan per turn (a failure for a turn without a response)."""
        out: list[TurnPlan] = []
        for t, turn in enumerate(turns):
            if not turn.has_response:
                out.append(TurnPlan(failure=Failure(FailureCode.NO_RESPONSE, "the turn has no assistant reply",
                                                    turn=t + 1)))
                continue
            target = self.encode(turn.response)
            context = self.context_ids(messages_before(turns, t))
            truncated = len(context) + len(target) > self.max_length
            if truncated:
                keep = min(len(target), max(self.max_length - len(context), self.max_length // 2))
                target = target[:keep]
                context = context[len(context) - (self.max_length - keep):]
            out.append(TurnPlan(Request(tuple(context), tuple(target)), Request((self.start_token,), tuple(target)),
                                truncated))
        return out
