"""The InsTag tagger: an LLM judge (prompt ``prompts/instag.md``) that names each user turn's intents.

:class:`Tagger` is a Step (``ws.apply(Tagger(backend))``): column ``tags_raw``, one list of tag strings
per user turn (order kept, duplicates removed); a turn whose call failed has ``None`` there and a
:class:`~curate.codes.Failure` (code, message, raw output) in ``tags_raw_failure``: the engine's codes, and
``echoed_example`` for a reply that copies the tag set of one of the prompt's few-shot examples (:mod:`.examples`). Responses are cached
in the workspace's response cache, so a re-run or a resumed run pays nothing twice.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, Field

from curate.codes import Failure, FailureCode
from curate.defaults import TAG
from curate.storage.step import RowInput, RowProgress, StepContext, StepOutput

#: most tags the judge is asked for per query (the paper's pool averaged a few; its 6K sample 16.6 per row), and the
#: longest tag and explanation asked for. The schema sent says so (a server that enforces it closes the list: a tiny
#: model otherwise repeats tags until max_tokens), but a reply past them is kept whole, not failed: a server that
#: does not enforce them (JSON mode, OpenAI's structured outputs) or InsTag's own tagger may give a query 12 real
#: tags, and failing the row lost all of them. The tagger counts such turns (``turns_past_schema_bounds``).
MAX_TAGS_PER_QUERY = 10
MAX_TAG_CHARS = 60
MAX_EXPLANATION_CHARS = 200


# -- the judge's output schema. Its docstrings are the schema's descriptions, sent to the model with its bounds:
# write them for the model (plain words about the answer), keep notes for developers in comments like these;
# changing either changes the requests (their cache keys) and the tagger's fingerprint (it re-tags). The upper bounds
# are json_schema_extra, so they are sent (the same schema, key for key, as when they were validated) and not checked.
class IntentTag(BaseModel):
    """One intent of a user query."""

    tag: str = Field(min_length=1, json_schema_extra={"maxLength": MAX_TAG_CHARS})
    explanation: str = Field(json_schema_extra={"maxLength": MAX_EXPLANATION_CHARS})


# The answer is an object holding the list, not a bare list: JSON-schema decoding needs an object at the top. Its
# description is kept word for word as every earlier tagging request sent it: new words would change the cache key of
# every tagging request, so a workspace tagged before would pay for all its rows again on its next run.
class IntentTags(BaseModel):
    """The tagging judge's answer: the query's intent tags (an object, so JSON-schema decoding works)."""

    # bounded in the schema, so schema-guided decoding closes the list (a tiny model otherwise repeats tags until
    # max_tokens)
    tags: list[IntentTag] = Field(min_length=1, json_schema_extra={"maxItems": MAX_TAGS_PER_QUERY})

    def past_schema_bounds(self) -> bool:
        """Whether the reply went past a bound the schema asked for (more tags, a longer tag or explanation)."""
        return len(self.tags) > MAX_TAGS_PER_QUERY or any(
            len(t.tag) > MAX_TAG_CHARS or len(t.explanation) > MAX_EXPLANATION_CHARS for t in self.tags)


def dedupe(tags: Sequence[str]) -> list[str]:
    """Tags in first-seen order, each once."""
    return list(dict.fromkeys(tags))


def _turn_failure(failure: Failure, turn: int, raw: str | None) -> Failure:
    """The engine's failure of one call, tied to its (1-based) turn, with the raw output when it has none."""
    return dataclasses.replace(failure, turn=turn, raw=failure.raw if failure.raw is not None else raw)


class Tagger:
    """InsTag's LLM tagger as a Step: column ``tags_raw`` (turn granularity, no reducer: values are tag lists)."""

    granularity = "turn"
    reducer = None
    inputs: tuple[str, ...] = ()

    def __init__(self, backend: Any = None, *, prompt: str | os.PathLike | Any = TAG.prompt, column: str = "tags_raw",
                 params: dict[str, Any] | None = None, prompt_dirs: list[str | os.PathLike] | None = None):
        from curate.llm.prompts import PromptError, load_prompt

        self.prompt = load_prompt(prompt, prompt_dirs)
        model = self.prompt.model_class()
        if model is None or not issubclass(model, IntentTags):  # checked before any call is paid for
            raise PromptError(f"{self.prompt.where}: a tagging prompt answers IntentTags (output kind json, model "
                              f"curate.tags:IntentTags), not {self.prompt.output_model or self.prompt.output_kind}")
        from curate.tags.examples import few_shot_examples

        self.examples = few_shot_examples(self.prompt, model)  # an answer copying one is a failure (echoed_example)
        self.backend = backend
        self.column = column
        self.params = dict(params or {})

    def with_backend(self, backend: Any) -> Tagger:
        return Tagger(backend, prompt=self.prompt, column=self.column, params=self.params)

    @property
    def rows_per_call(self) -> int | None:
        """Rows ``ws.apply`` hands :meth:`run` at a time (``curate.llm.base.rows_per_call``)."""
        from curate.llm.base import rows_per_call

        return rows_per_call(self.backend)

    def _require_backend(self) -> Any:
        if self.backend is None:
            raise ValueError("the InsTag tagger needs a backend: Tagger(backend) or tagger.with_backend(backend)")
        return self.backend

    def fingerprint(self) -> str:
        """Prompt fingerprint, backend kind and model, params and the output schema (its text is sent), and the
        JSON-mode schema message's where the backend gets it."""
        from curate.llm.structured import json_mode_fingerprint

        backend = self._require_backend()
        json_mode = json_mode_fingerprint(backend)  # a json prompt's backend says whether it enforces schemas
        blob = json.dumps({"prompt": self.prompt.fingerprint, "backend": getattr(backend, "kind", type(backend).__name__),
                           "model": getattr(backend, "model", None), "params": self.params,
                           "schema": self.prompt.model_class().model_json_schema(),
                           # a reply copying a few-shot example's tags fails (it was stored as tags before): re-read
                           "checks": ["echoed_example"],
                           # a reply past the schema's bounds failed (invalid_output); it is kept now: re-read
                           "bounds": "sent, not validated",
                           **({"json_mode_message": json_mode} if json_mode else {})}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def check_column(self, ws: Any) -> None:
        """Refuse to write over a pool field or a column another producer wrote (``ws.apply`` calls this before any
        call is paid): a tagger may take over only a tagger's column."""
        from curate.storage.step import check_column_owner

        check_column_owner(ws, self.column, "the tagger", lambda prov: prov.get("kind") == "instag_tags")

    def describe(self) -> dict[str, Any]:
        backend = self.backend
        return {"kind": "instag_tags", "prompt": self.prompt.name, "prompt_version": self.prompt.version,
                "prompt_fingerprint": self.prompt.fingerprint, "model": getattr(backend, "model", None),
                "backend": backend.describe() if hasattr(backend, "describe") else None, "params": self.params}

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        """One cached judge call per user turn; a row's value is its turns' tag lists."""
        from curate.llm.cache import response_cache
        from curate.llm.runner import run_prompt
        from curate.storage.progress import call_counts
        from curate.tags.examples import echoed_example

        backend = self._require_backend()
        variables = [{"instruction": turn.instruction} for row in rows for turn in row.turns]
        owners = [r for r, row in enumerate(rows) for _ in row.turns]
        progress = RowProgress(owners, len(rows), ctx.progress)
        counts = call_counts(ctx.progress)  # failed=, cached= on the row bar, live
        cache = response_cache(ctx.cache_dir)
        results = run_prompt(self.prompt, variables, backend, cache, progress=False, params=self.params or None,
                             on_items_done=progress.items_done, on_counts=counts.listener(owners))
        progress.finish()
        values: list[list[list[str] | None]] = []
        failures: list[list[Failure]] = []
        k = 0
        past_bounds = 0  # turns whose reply went past the schema's bounds, kept whole
        for row in rows:
            tags: list[list[str] | None] = []
            fails: list[Failure] = []
            for t in range(1, len(row.turns) + 1):
                res = results[k]
                k += 1
                if res.failure is not None:
                    raw = res.text if res.text is not None else json.dumps(res.raw, default=str)
                    fails.append(_turn_failure(res.failure, t, raw))
                    tags.append(None)
                elif not (named := dedupe(it.tag.strip() for it in res.parsed.tags if it.tag.strip())):
                    fails.append(Failure(FailureCode.INVALID_OUTPUT, "every tag the judge gave is blank", res.text, t))
                    tags.append(None)
                elif (copied := echoed_example(self.examples, self.prompt, row.turns[t - 1].instruction, named)):
                    fails.append(Failure(FailureCode.ECHOED_EXAMPLE, f"the tags ({', '.join(named)}) are those of the "
                                         f"prompt's few-shot example {copied.number}, for a query that is not that "
                                         "example: copied from the prompt, not read from the query", res.text, t))
                    tags.append(None)
                else:
                    past_bounds += res.parsed.past_schema_bounds()
                    tags.append(named)
            values.append(tags)
            failures.append(fails)
        from curate.llm.calls import billed_keys, call_usage

        usage = call_usage(results, priced=getattr(self.backend, "price", ()) is not None)  # as a judge's
        counts.chunk_done(sum(1 for f in failures if f), usage)  # as stored: a reply of blank tags failed too
        return StepOutput(values, failures, stats={"turns": len(variables),
                                               "turns_past_schema_bounds": past_bounds, **usage},
                          on_stored=[functools.partial(cache.mark_recorded, billed_keys(results))])

    def __repr__(self) -> str:
        return f"Tagger(prompt={self.prompt.name!r}, column={self.column!r}, model={getattr(self.backend, 'model', None)!r})"
