"""The small-LM reader in DEITA's style (the ``small-lm`` scorer kind): SmolLM2-135M + LoRA with the cross-encoder's
score head, or DEITA's own digits head over a reader prompt (:class:`SmallLMScorer`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import curate.scorers.readermap as readermap
from curate.errors import ScorerError
from curate.scorers.finetuned import CrossEncoderScorer
from curate.scorers.model import KINDS

DIGITS_PROMPT_ROOM = 36  # tokens a reader prompt adds to a plain chat turn (SmolLM2: quality 36, complexity 34)
READER_PROMPTS = {"response": "quality_reader", "instruction": "complexity_reader"}  # by the last text read


class SmallLMScorer(CrossEncoderScorer):
    """The small-LM reader in DEITA's style: SmolLM2-135M (packaged, :func:`curate.llm.local.prepare_model`) +
    LoRA on its attention projections, batched, on the CPU by default.

    ``head="score"`` (default): the cross-encoder's linear head on the last token, length covariate and calibration.
    ``head="digits"``: DEITA's own scorer: the LM answers a reader prompt (``prompt``: a prompt file or name,
    default ``prompts/quality_reader.md``, or ``complexity_reader.md`` for an instruction alone) and the score is
    its expected digit over the prompt's scale; training is cross-entropy on the label's digits (two-hot). The
    prompt's text is saved with the scorer, so a later edit of the file does not change a trained reader.
    """

    kind = "small-lm"
    heads = ("score", "digits")
    base_name = "SmolLM2-135M-Instruct"

    def __init__(self, *, head: str = "score", prompt: Any = None, **kwargs: Any):
        super().__init__(head=head, **kwargs)
        self.prompt = None
        if head == "score":
            if prompt is not None:
                raise ScorerError("prompt: only the digits head reads a prompt (head='digits')")
            return
        from curate.llm.prompts import load_prompt

        self.prompt = load_prompt(prompt or READER_PROMPTS[self.reads[-1]])
        if self.prompt.output_kind != "digit_score" or set(self.prompt.inputs) != set(self.reads):
            raise ScorerError(f"{self.prompt.where}: a digits head needs a digit_score prompt whose inputs are the "
                              f"texts read, {self.reads}; it declares {self.prompt.output_kind} of {list(self.prompt.inputs)}")

    @staticmethod
    def default_base() -> str:
        from curate.llm.local import prepare_model

        return str(prepare_model())

    @staticmethod
    def default_max_length(reads: Sequence[str], head: str = "score") -> int:
        """The score head's lengths; the digits head gets room for its reader prompt on top, so the row itself
        keeps the same budget (SmolLM2: the reader prompts take 36 and 34 tokens more than a plain chat turn)."""
        return CrossEncoderScorer.default_max_length(reads) + (DIGITS_PROMPT_ROOM if head == "digits" else 0)

    def _digits(self) -> list[int]:
        lo, hi = self.prompt.scale
        return list(range(lo, hi + 1))

    def _head_options(self, tok) -> dict[str, Any]:
        if self.head == "score":
            return {}
        if not getattr(tok, "chat_template", None):
            raise ScorerError(f"{self.base or self.base_name}: its tokenizer has no chat template; a digits head asks "
                              f"a chat model the reader prompt ({self.prompt.where})")
        ids = []
        for d in self._digits():
            token = tok.convert_tokens_to_ids(str(d))
            if not isinstance(token, int) or token == tok.unk_token_id or tok.decode([token]).strip() != str(d):
                raise ScorerError(f"the tokenizer of {self.base or self.base_name} has no single token for the digit "
                                  f"{d}; a digits head reads the next-token probability of each digit of the scale")
            ids.append(token)
        reads = tuple(self.reads)
        prompt = self.prompt

        def messages(instruction: str, response: str | None) -> list[dict[str, str]]:
            return prompt.render(**dict(zip(reads, (instruction, response), strict=False)))

        return {"digit_tokens": ids, "digit_values": [float(d) for d in self._digits()], "messages": messages}

    def _point_targets(self, y: np.ndarray, label_range: tuple[float, float]) -> np.ndarray:
        if self.head == "score":
            return super()._point_targets(y, label_range)
        digits = self._digits()  # the judge's scale mapped linearly onto the digits
        return readermap.linear_map(y, label_range, (digits[0], digits[-1]))

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        if self.head == "digits":  # absent for the score head, so saved score-head readers keep their fingerprint
            cfg.update({"head": self.head, "prompt": {"name": self.prompt.name, "fingerprint": self.prompt.fingerprint,
                                                      "text": prompt_text(self.prompt)}})
        return cfg

    def _options(self) -> dict[str, Any]:
        return {"head": self.head, "prompt": self.prompt}

    @classmethod
    def _saved_options(cls, doc: dict[str, Any]) -> dict[str, Any]:
        if doc.get("head", "score") == "score":
            return {}
        from curate.llm.prompts import parse_prompt

        return {"head": doc["head"], "prompt": parse_prompt(doc["prompt"]["text"])}

    def __repr__(self) -> str:
        return f"SmallLMScorer({self.column!r}, head={self.head!r}, reads={self.reads}, max_length={self.max_length})"


def prompt_text(prompt: Any) -> str:
    """A prompt as the file text it was parsed from (front-matter and body): what a digits-head reader saves."""
    import yaml

    return "---\n" + yaml.safe_dump(prompt.declaration, sort_keys=False, allow_unicode=True) + "---\n" + prompt.body


KINDS[SmallLMScorer.kind] = SmallLMScorer
