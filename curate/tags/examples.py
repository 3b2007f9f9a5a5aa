"""The few-shot examples of a tagging prompt, read from the prompt file itself: each example's query (the user
message as sent) and its answer's tag set. A small model copies an example's answer for another query (SmolLM2 tagged
"Predict the class for this text." ``code debugging, python, explanation``, the second example's set word for word);
:func:`echoed_example` finds such a reply, which the tagger stores as the failure ``echoed_example``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_WORD = re.compile(r"[^\W\d_]{3,}")
STEM_LETTERS = 5  # a tag word and a query word sharing this many first letters (or the whole of a shorter one) meet


def _stems(text: str) -> set[str]:
    return {w[:STEM_LETTERS] for w in _WORD.findall(text.lower())}


#: a placeholder query to render the prompt with: the examples are the user/assistant pairs before its message
_PROBE = "\x00curate-probe-query\x00"


@dataclass(frozen=True)
class FewShotExample:
    """One example of a tagging prompt: its number (1-based), its query as sent, its tag set (lower-cased)."""

    number: int
    query: str
    tags: frozenset[str]


def tag_set(tags: list[str]) -> frozenset[str]:
    """Tags compared as a set, case and surrounding blanks aside."""
    return frozenset(t.strip().lower() for t in tags if t.strip())


def few_shot_examples(prompt: Any, output_model: Any) -> list[FewShotExample]:
    """The (user, assistant) pairs of ``prompt`` before the query's own message, each answer read as
    ``output_model`` (``IntentTags``); an example answer that is not one is a PromptError naming the file."""
    from pydantic import ValidationError

    from curate.llm.prompt_checks import PromptError

    messages = prompt.render(**{name: _PROBE for name in prompt.inputs})
    last_user = max((k for k, m in enumerate(messages) if m["role"] == "user"), default=-1)
    examples: list[FewShotExample] = []
    for k in range(last_user):
        user, answer = messages[k], messages[k + 1]
        if user["role"] != "user" or answer["role"] != "assistant" or _PROBE in user["content"] + answer["content"]:
            continue
        try:
            parsed = output_model.model_validate_json(answer["content"])
        except ValidationError as exc:
            raise PromptError(f"{prompt.where}: the answer of few-shot example {len(examples) + 1} is not "
                              f"{output_model.__name__} JSON ({exc.error_count()} error(s): "
                              f"{exc.errors()[0]['msg']}); the tagger reads each example's tags from it") from None
        examples.append(FewShotExample(len(examples) + 1, user["content"].strip(),
                                       tag_set([t.tag for t in parsed.tags])))
    return examples


def echoed_example(examples: list[FewShotExample], prompt: Any, instruction: str,
                   tags: list[str]) -> FewShotExample | None:
    """The example whose tag set ``tags`` equals, when the query ``prompt`` sends for ``instruction`` is not that
    example's own (a query that is an example may well get its answer) and names none of those tags' words ("Why
    does my Python script crash?" may well be `code debugging, python, explanation`; "Predict the class for this
    text." is not)."""
    got = tag_set(tags)
    same = [e for e in examples if e.tags == got]
    if not same or _stems(" ".join(got)) & _stems(instruction):
        return None
    sent = prompt.render(instruction=instruction)[-1]["content"].strip()
    return next((e for e in same if e.query != sent), None)
