"""Judges: a prompt file run over every user turn of the rows through a backend, as a Step.

``ws.apply(Judge("quality", backend))`` writes ``quality`` (one value per turn, a list for every row,
even single-turn ones), ``quality_failure`` (a ``codes.Failure`` per failed turn: no_response,
low_digit_mass, no_logprobs, no_top_logprobs, empty_output, unparsable, invalid_output, http_error, context_too_long, transient, budget; truncated: a text output (or a JSON one, unfinished) that
stopped at max_tokens) and, for digit scores,
``quality_digit_mass``; its provenance says which prompt, model and parameters produced it, and what
each run cost. Digit-score judges declare the reducer ``sum`` (DEITA: a row's score is Σ over its
turns). The calls go through :func:`curate.llm.runner.run_prompt` and the workspace's response cache,
so a re-run or a resumed run sends nothing that already has an answer.

``Judge("quality", backend, response_column="seed_answer")`` judges another reply than the pool's: each
turn's text in a derived column (a model's own answers, written by the ``answer`` prompt; MoDS necessity).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Any

from curate.codes import Failure, FailureCode
from curate.defaults import JUDGE
from curate.errors import CurateError, OptionError
from curate.llm.base import Backend, reply_token_limit, rows_per_call
from curate.llm.cache import response_cache
from curate.llm.calls import CallResult, billed_keys, call_usage, total_cost
from curate.llm.prompt_checks import ROW_VARIABLES
from curate.llm.prompt_layout import check_digit_params
from curate.llm.prompts import Prompt, PromptError, PromptRenderError, load_prompt
from curate.llm.runner import DIGIT_RULE, request_params, run_prompt
from curate.llm.structured import json_mode_fingerprint
from curate.storage.step import RowInput, RowProgress, StepContext, StepOutput, turns_replied_by

BUILTIN_JUDGES = ("complexity", "quality", "alpagasus")
# ROW_VARIABLES (prompt_checks): the template variables a judge fills from the conversation; any other prompt input
# is a pool or derived column. ``history``: the messages before the turn's user message (system messages left out).


def _no_value(value: Any) -> bool:
    """A column value a prompt cannot read: null, or a per-turn list of nulls (every turn failed)."""
    return value is None or isinstance(value, list) and bool(value) and all(v is None for v in value)


class Judge:
    """A prompt file as a Step: ``column`` (default: the prompt's name), one value per turn.

    ``backend`` may be given later with :meth:`with_backend`; ``output`` is the Pydantic model of json
    prompts (default: the prompt's ``output.model``); ``params`` override the prompt's request
    parameters; ``min_digit_mass`` (default ``curate.defaults.JUDGE``) is the probability mass the scale's
    digits need among the top logprobs, all of them listed or not, for a score (below it: ``low_digit_mass``);
    ``response_column``: a derived turn column whose text the prompt reads as ``response`` instead of the
    pool's reply (a turn without text there fails ``no_response``); the column then defaults to
    ``<response_column>_<prompt name>``.
    """

    granularity = "turn"

    def __init__(self, prompt: str | os.PathLike | Prompt, backend: Backend | None = None, *,
                 params: dict[str, Any] | None = None, min_digit_mass: float | None = None,
                 prompt_dirs: list[str | os.PathLike] | None = None, column: str | None = None, output: Any = None,
                 response_column: str | None = None):
        self.prompt = load_prompt(prompt, prompt_dirs)
        if self.prompt.output_kind == "json" and output is None:
            output = self.prompt.model_class()
            if output is None:
                raise PromptError(f"{self.prompt.where}: a json prompt needs output.model (a Pydantic class: "
                                  "'curate.module:Class', or a name given to register_output_model), or "
                                  "Judge(..., output=MyModel)")
        self.output = output
        self.backend = backend
        # a model's answers judged into the judge's own column would pass for judgements of the pool's replies
        self.column = column or (f"{response_column}_{self.prompt.name}" if response_column else self.prompt.name)
        self.params = dict(params or {})
        if self.prompt.scale is not None:  # refused here, not by every row's failure once the calls are paid for
            check_digit_params(self.params, self.prompt.scale, f"{self.prompt.where} (the params given with it)")
        self.min_digit_mass = JUDGE.min_digit_mass if min_digit_mass is None else float(min_digit_mass)
        if not 0.0 <= self.min_digit_mass <= 1.0:  # nan or -1 turned the guard off, 1.5 failed every row
            raise OptionError(f"min_digit_mass is a probability mass in [0, 1] (got {min_digit_mass})")
        self.reducer = "sum" if self.prompt.output_kind == "digit_score" else None
        self.inputs = tuple(v for v in self.prompt.inputs if v not in ROW_VARIABLES)
        self.response_column = response_column
        if response_column is not None:
            if "response" not in self.prompt.inputs:
                raise CurateError(f"judge {self.column!r}: response_column={response_column!r}, but prompt "
                                  f"{self.prompt.name!r} reads no response")
            if response_column == self.column:
                raise CurateError(f"judge {self.column!r} cannot read its replies from the column it writes")
            self.inputs = tuple(dict.fromkeys((*self.inputs, response_column)))

    @property
    def name(self) -> str:
        """The prompt's name (``quality``, ``complexity``, or a prompt file's)."""
        return self.prompt.name

    @property
    def rows_per_call(self) -> int | None:
        """Rows ``ws.apply`` hands :meth:`run` at a time (``curate.llm.base.rows_per_call``)."""
        return rows_per_call(self.backend)

    def with_backend(self, backend: Backend) -> Judge:
        """The same judge sending its calls to ``backend``."""
        judge = copy.copy(self)
        judge.backend = backend
        return judge

    def _backend(self) -> Backend:
        if self.backend is None:
            raise CurateError(f"judge {self.column!r} has no backend: Judge({self.prompt.name!r}, backend) or "
                              f"judge.with_backend(backend) (OpenAIBackend, VLLMBackend, LocalServer().backend())")
        return self.backend

    def request_params(self) -> dict[str, Any]:
        """The generation parameters every call of this judge sends."""
        return request_params(self.prompt, self._backend(), self.params)

    # -- the Step contract --------------------------------------------------------------------------
    def check_column(self, ws: Any) -> None:
        """Refuse to write over values another producer wrote (``ws.apply`` calls this first): this judge may take
        over its own column, or one a trained scorer filled (cheap predictions a judge replaces), nothing else."""
        from curate.storage.step import check_column_owner

        def owns(prov: dict[str, Any]) -> bool:
            return prov.get("kind") == "scorer" or (prov.get("kind") == "judge" and prov.get("prompt") == self.prompt.name
                                                     and prov.get("response_column") == self.response_column)

        check_column_owner(ws, self.column, f"the {self.prompt.name} judge", owns)
        if ws.has_column(self.column):
            self._check_prompt_file(ws, ws.column_provenance(self.column))

    def _check_prompt_file(self, ws: Any, provenance: dict[str, Any]) -> None:
        """Refuse a judge whose prompt file is another than the one that scored its column: a second file declaring
        the same ``name:`` replaced the column's labels, said only as rows "stored under other settings". An edit of
        the same file re-scores as ever."""
        from curate.errors import python_and_cli

        stored = provenance.get("prompt_path") or ""
        if provenance.get("kind") != "judge" or not stored or self.prompt.path is None or \
                provenance.get("prompt_fingerprint") == self.prompt.fingerprint or \
                _same_prompt_file(stored, self.prompt.path):
            return  # the same text (a clone or a folder moved elsewhere: its path changed), or the same file edited
        raise OptionError(f"{ws.path}: column {self.column!r} was scored by the prompt file {stored}; "
                          f"{self.prompt.path} declares the same name: {self.prompt.name}, and would replace its "
                          f"labels: pass {python_and_cli('column=NEW', '--column NEW')} to keep both, or remove or "
                          f"rename the column first (or give this prompt another name:; curate run: another --out)")

    def check_inputs(self, ws: Any) -> None:
        """Refuse a prompt that reads a column the workspace lacks, naming the prompt file (``ws.apply`` and a dry
        run call this before reading rows): the workspace's own error named the column alone."""
        for name in (v for v in self.prompt.inputs if v not in ROW_VARIABLES):
            if not ws.has_column(name) and name not in ws.pool.column_names:
                raise PromptError(f"{self.prompt.where}: reads column {name!r}, which {ws.path} has neither in the "
                                  "pool nor derived")

    def fingerprint(self) -> str:
        """Prompt fingerprint, backend kind and model, request parameters, digit-mass floor, output schema (and the
        JSON-mode schema message's template, where the backend gets one)."""
        backend = self._backend()
        schema = self.output.model_json_schema() if hasattr(self.output, "model_json_schema") else None
        json_mode = json_mode_fingerprint(backend) if schema is not None else None  # the schema message sent
        blob = json.dumps({"prompt": self.prompt.fingerprint, "backend": backend.kind, "model": backend.model,
                           "params": self.request_params(), "schema": schema,
                           "min_digit_mass": self.min_digit_mass if self.reducer else None,
                           "digit_rule": DIGIT_RULE if self.reducer else None,
                           **({"json_mode_message": json_mode} if json_mode else {}),
                           **({"response_column": self.response_column} if self.response_column else {})},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """The judge's provenance, stored with its column: prompt (version, fingerprint), backend, request params."""
        backend = self._backend()
        output_model = f"{self.output.__module__}:{self.output.__qualname__}" if self.output is not None else None
        return {"kind": "judge", "judge": self.column, "prompt": self.prompt.name,
                "prompt_version": self.prompt.version, "prompt_fingerprint": self.prompt.fingerprint,
                "prompt_path": str(self.prompt.path.resolve()) if self.prompt.path else "", "output_kind": self.prompt.output_kind,
                "output_model": output_model, "scale": list(self.prompt.scale) if self.prompt.scale else None,
                **backend.describe(), "params": self.request_params(), "min_digit_mass": self.min_digit_mass,
                # the row texts this judge reads: what a scorer trained on its labels must read too
                "reads": [v for v in ("instruction", "response") if v in self.prompt.inputs],
                **({"response_column": self.response_column} if self.response_column else {})}

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        """Score every user turn of ``rows``; a turn without a value gets a Failure naming it."""
        from curate.storage.progress import call_counts  # tqdm loads with a bar, not with judges

        backend = self._backend()
        if ctx.keep_outputs:
            keep_prompt_text(self.prompt, ctx.cache_dir)
        items, item_rows, pre_failures = self._items(rows)
        progress = RowProgress(item_rows, len(rows), ctx.progress)  # a row counts once all its turns are done
        counts = call_counts(ctx.progress)  # failed=, cached= on the row bar, live
        cache = response_cache(ctx.cache_dir)
        try:
            results = run_prompt(self.prompt, [item for item, _ in items], backend, cache,
                                 progress=False, params=self.params, output_model=self.output,
                                 min_digit_mass=self.min_digit_mass, on_items_done=progress.items_done,
                                 on_counts=counts.listener(item_rows, [r for r, f in enumerate(pre_failures) if f]))
        except PromptRenderError as exc:  # a prompt/config mistake: stop with the file and the first row it hit
            row_id = next((rows[item_rows[i]].id for i, (item, _) in enumerate(items) if item is exc.variables), None)
            if row_id is None:
                raise
            raise PromptRenderError(f"{exc} (row id {row_id})") from exc
        out = self._output(rows, items, item_rows, pre_failures, results)
        counts.chunk_done(sum(1 for f in out.failures if f), out.stats)  # as stored: a cut-off text failed too
        out.on_stored.append(functools.partial(cache.mark_recorded, billed_keys(results)))
        return out

    def call_variables(self, rows: Sequence[RowInput]) -> list[dict[str, Any]]:
        """The variables of every call :meth:`run` makes for ``rows`` (what a dry run renders)."""
        return [item for item, _ in self._items(rows)[0]]

    # -- helpers ------------------------------------------------------------------------------------
    def _items(self, rows: Sequence[RowInput]):
        """The calls to make: (variables, turn) per item, the row of each item, and failures found before
        any call (a turn without the response the prompt reads, a row without a user turn)."""
        needs_response = "response" in self.prompt.inputs
        needs_history = "history" in self.prompt.inputs  # built per turn only for a prompt that reads it
        items: list[tuple[dict[str, Any], int]] = []
        item_rows: list[int] = []
        pre: list[list[Failure]] = []
        for r, row in enumerate(rows):
            fails: list[Failure] = []
            if not row.turns:
                fails.append(Failure(FailureCode.NO_USER_TURN, "row has no user turn"))
            unset = [k for k in self.inputs if k != self.response_column and _no_value(row.columns[k])]
            for t, turn in enumerate(turns_replied_by(row, self.response_column), start=1):
                if needs_response and not turn.has_response:
                    where = (f"no text in column {self.response_column!r}" if self.response_column
                             else "no assistant response")
                    fails.append(Failure(FailureCode.NO_RESPONSE, f"turn {t} has {where} (none, or only whitespace)",
                                         turn=t))
                    continue
                item = {"instruction": turn.instruction, "response": turn.response or "", "system": turn.system,
                        "turn": t, "conversation": row.conversation,
                        **({"history": _history(row.conversation, t)} if needs_history else {}),
                        **{k: row.columns[k] for k in self.inputs}}
                if unset and self.prompt.prints_none(unset, **item):  # a field the prompt prints unguarded has no value:
                    fails.append(Failure(FailureCode.NO_INPUT_VALUE, f"{', '.join(unset)}: no value in this row, "
                                         "and the prompt prints it (it would be sent as the text 'None'); guard it "
                                         "with {% if ... %} to send the row without it", turn=t))
                    continue  # not sent, not paid
                items.append((item, t))
                item_rows.append(r)
            pre.append(fails)
        return items, item_rows, pre

    def _cut_off(self, res: CallResult) -> Failure | None:
        """A text that stopped at max_tokens is no answer to judge or keep (a digit score stops there by design)."""
        if self.prompt.output_kind != "text" or (res.raw or {}).get("finish_reason") != "length":
            return None
        params = self.request_params()
        name = "max_completion_tokens" if params.get("max_completion_tokens") and not params.get("max_tokens") \
            else "max_tokens"
        return Failure(FailureCode.TRUNCATED, f"the generation stopped at {name} ({reply_token_limit(params)}): the "
                       f"text is cut off; raise {name} (params) to keep it", res.text)

    def _value(self, res: CallResult) -> Any:
        if self.prompt.output_kind == "json":
            return res.parsed.model_dump_json() if hasattr(res.parsed, "model_dump_json") else json.dumps(res.parsed)
        return res.parsed

    def _output(self, rows, items, item_rows, pre_failures, results: list[CallResult]) -> StepOutput:
        values: list[Any] = [None if not row.turns else [None] * len(row.turns) for row in rows]
        masses: list[Any] = [None if not row.turns else [None] * len(row.turns) for row in rows]
        failures = [list(f) for f in pre_failures]
        methods = {"logprobs": 0, "parsed": 0, "renormalised_missing_digits": 0}
        for (_, turn), r, res in zip(items, item_rows, results, strict=True):
            masses[r][turn - 1] = res.digit_mass
            f = res.failure or self._cut_off(res)
            if f is None:
                values[r][turn - 1] = self._value(res)
                if res.score_method:
                    methods[res.score_method] += 1
                    methods["renormalised_missing_digits"] += bool(res.raw.get("missing_digits"))
            else:
                failures[r].append(Failure(f.code, f.message, f.raw, turn))
        for fails in failures:
            fails.sort(key=lambda f: f.turn or 0)
        failed_rows = sum(1 for f in failures if f)
        stats = {
            **call_usage(results, priced=getattr(self.backend, "price", ()) is not None), "scored_rows": len(rows) - failed_rows, "failed_rows": failed_rows,
            "rows_not_sent_max_cost": sum(any(f.code is FailureCode.BUDGET for f in fails) for fails in failures),
            "cost_usd_including_cached": total_cost(results),
        }
        if self.reducer:
            stats["score_methods"] = methods
        extra = {"digit_mass": masses} if self.prompt.output_kind == "digit_score" else {}
        return StepOutput(values, failures, extra, stats)

    def __repr__(self) -> str:
        return f"Judge({self.prompt.name!r}, column={self.column!r}, kind={self.prompt.output_kind}, backend={self.backend!r})"

    def _repr_html_(self) -> str:
        return self.prompt._repr_html_()


def _history(conversation: Sequence[dict[str, str]], turn: int) -> list[dict[str, str]]:
    """The user and assistant messages before the ``turn``-th (1-based) user message."""
    before: list[dict[str, str]] = []
    users = 0
    for message in conversation:
        if message["role"] == "user":
            users += 1
            if users == turn:
                break
        if message["role"] in ("user", "assistant"):
            before.append({"role": message["role"], "content": message["content"]})
    return before


def __getattr__(name: str) -> Judge:
    # built-in judges as module attributes (curate.llm.judges.complexity ...), loaded on first use
    if name in BUILTIN_JUDGES:
        return Judge(name)
    raise AttributeError(name)


__all__ = ["BUILTIN_JUDGES", "Judge", "ROW_VARIABLES", "total_cost"]


PROMPTS_KEPT = "prompts"  # under the workspace's cache folder: <fingerprint>.json, each prompt text that scored


def keep_prompt_text(prompt: Prompt, cache_dir: os.PathLike) -> None:
    """Keep ``prompt``'s text (declaration and body, what its fingerprint hashes) in the workspace's cache by its
    fingerprint, once: a column's provenance names the fingerprint and the file, and the file may be edited or gone
    by the time someone asks which text produced the labels."""
    from pathlib import Path

    from curate.storage.files import atomic_write_bytes

    kept = Path(cache_dir) / PROMPTS_KEPT / f"{prompt.fingerprint}.json"
    if kept.exists():
        return
    kept.parent.mkdir(parents=True, exist_ok=True)
    text = {"name": prompt.name, "version": prompt.version, "fingerprint": prompt.fingerprint,
            "path": str(prompt.path.resolve()) if prompt.path else "", "declaration": prompt.declaration,
            "body": prompt.body}
    atomic_write_bytes(kept, json.dumps(text, indent=1, sort_keys=True, default=str).encode())


def _same_prompt_file(stored: str, path: os.PathLike) -> bool:
    """Whether a column's stored ``prompt_path`` names the file ``path``: the same file resolved, or the same built-in
    prompt (curate's own ``prompts/`` folder, wherever this install keeps it)."""
    from pathlib import Path

    from curate.llm.prompts import builtin_prompt_dir

    here, there = Path(path).resolve(), Path(stored).resolve()
    if here == there:
        return True
    builtins = builtin_prompt_dir().resolve()
    if not here.is_relative_to(builtins):
        return False
    own = here.relative_to(builtins).parts
    return there.parts[-len(own) - 1:] == ("prompts", *own)  # the built-in of another install (a wheel, a clone)
