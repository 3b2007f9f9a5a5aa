"""Model signals as steps: ``Perplexity``, ``IFD`` and ``Learnability`` (one value per turn, reducer mean).

- ``perplexity`` = exp(mean NLL of the response tokens given the conversation so far);
- ``ifd`` (Cherry LLM) = s(A|Q) / s(A): mean NLL of the response given its context over the mean NLL of
  the response alone; IFD >= 1 means the instruction does not help (counted in the column's stats, not dropped);
- ``learnability`` (LoBaSS) = L_base − L_ref, per-token mean losses of the response under the base model
  and under the base model LoRA-tuned briefly on a reference set (so normalised per length).

All three run on :class:`~curate.signals.engine.Engine` (cached per model fingerprint and exact token ids;
IFD and perplexity share the conditioned requests). Use them with ``ws.apply(IFD())``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.codes import Failure, FailureCode
from curate.defaults import SIGNAL
from curate.errors import CurateError, OptionError
from curate.rows import as_turns
from curate.signals.cache import json_fingerprint
from curate.signals.engine import Engine
from curate.signals.lora import LoraConfig, adapter_fingerprint, tuned_adapter
from curate.signals.template import Request, TurnPlan, check_model_folder
from curate.storage.step import RowInput, RowProgress, StepContext, StepOutput

VERSION = 1  # bump when a signal's definition changes
LEARNABILITY_CHUNK = 256  # rows per (base, reference) pass, so progress moves during learnability runs


MAX_EXP_ARGUMENT = math.log(np.finfo(np.float64).max)  # ~709.78: math.exp raises OverflowError above it


def _mean_nll(lp: np.ndarray) -> float:
    return float(-np.asarray(lp, dtype=np.float64).mean())


class _SignalStep:
    """What the three steps share: the engine, the per-turn plans and the fingerprint."""
    column = ""
    kind = ""
    granularity = "turn"
    reducer = "mean"
    inputs: tuple[str, ...] = ()
    # each row is scored on its own: ws.apply hands over this many at a time (a row's exact token ids and log-probs
    # take ~90 KB at ~1,300 tokens: a pool's worth would not fit in memory)
    rows_per_call: int | None = SIGNAL.rows_per_call

    def __init__(self, model: Any = None, *, engine: Engine | None = None, column: str | None = None,
                 **engine_options: Any):
        if engine is not None and (model is not None or engine_options):
            raise ValueError("pass either engine= or model/engine options, not both")
        self.engine = engine if engine is not None else Engine(model, **engine_options)
        if column is not None:
            self.column = column

    def _config(self) -> dict[str, Any]:
        e = self.engine
        return {"kind": self.kind, "version": VERSION, "model": e.fingerprint, "max_length": e.max_length,
                "chat_template": e.chat_template, "alone_start": e.prompter.start_token}

    def fingerprint(self) -> str:
        return json_fingerprint(self._config())

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "version": VERSION, **self.engine.describe()}

    def check_column(self, ws: Any) -> None:
        """Refuse to write over a pool field or another producer's column (``ws.apply`` calls this first)."""
        from curate.storage.step import check_column_owner

        check_column_owner(ws, self.column, f"the {self.kind} signal", lambda prov: prov.get("kind") == self.kind)

    def _plans(self, rows: Sequence[RowInput]) -> list[list[TurnPlan]]:
        return [self.engine.prompter.plan(list(row.turns)) for row in rows]

    def _score(self, engine: Engine, plans: list[list[TurnPlan]], which: tuple[str, ...], ctx: StepContext,
               usage: dict[str, int]) -> dict[tuple[int, int, str], np.ndarray]:
        """Log-probabilities of every (row, turn, which) request through ``engine``, with row progress; adds the
        requests and those the on-disk cache answered to ``usage``."""
        reqs: list[Request] = []
        where: list[tuple[int, int, str]] = []
        for r, row in enumerate(plans):
            for t, plan in enumerate(row):
                if plan.failure is None:
                    for w in which:
                        reqs.append(getattr(plan, w))
                        where.append((r, t, w))
        tracker = RowProgress([w[0] for w in where], len(plans), ctx.progress)
        values = engine.logprobs(reqs, ctx.cache_dir, tracker.items_done, cache_use=usage,  # this call's own counts
                                 groups=[w[2] for w in where])  # conditioned and alone: batched apart
        return dict(zip(where, values, strict=True))

    @staticmethod
    def _output(plans: list[list[TurnPlan]], turn_value: Any, extra_keys: tuple[str, ...],
                usage: dict[str, int]) -> StepOutput:
        """Assemble per-turn values: ``turn_value(r, t) -> (value, {extra}) | Failure``; the stats count this call's
        turns and its ``usage`` (requests, and those the on-disk cache answered)."""
        values: list[Any] = []
        failures: list[list[Failure]] = []
        extra: dict[str, list[Any]] = {k: [] for k in (*extra_keys, "truncated")}
        for r, row in enumerate(plans):
            vals, fails, ex = [], [], {k: [] for k in extra}
            for t, plan in enumerate(row):
                got = plan.failure if plan.failure is not None else turn_value(r, t)
                if isinstance(got, Failure):
                    fails.append(got)
                    vals.append(None)
                    for k in extra:
                        ex[k].append(None)
                    continue
                value, more = got
                vals.append(value)
                for k in extra_keys:
                    ex[k].append(more[k])
                ex["truncated"].append(plan.truncated)
            if not row:
                fails.append(Failure(FailureCode.NO_USER_TURN, "the row has no user turn"))
            values.append(vals)
            failures.append(fails)
            for k in extra:
                extra[k].append(ex[k])
        truncated = sum(1 for row in plans for p in row if p.failure is None and p.truncated)
        scored = sum(1 for row in values for v in row if v is not None)
        return StepOutput(values, failures, extra, {"turns_scored": scored, "turns_truncated": truncated, **usage})

    def column_stats(self, values: list[Any], extra: dict[str, list[Any]]) -> dict[str, Any]:
        """What the whole column holds (every run's rows, ``ws.apply`` stores it as the provenance's top-level
        stats): turns with a value, and of those, turns truncated to ``max_length``."""
        flags = extra.get("truncated") or [None] * len(values)
        return {"turns_scored": sum(v is not None for row in values for v in row or ()),
                "turns_truncated": sum(bool(t) for row in flags for t in row or ())}


class Perplexity(_SignalStep):
    """``perplexity`` per turn: exp(mean NLL of the response given the conversation so far)."""
    column = "perplexity"
    kind = "perplexity"

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        plans, usage = self._plans(rows), {}
        lps = self._score(self.engine, plans, ("conditioned",), ctx, usage)

        def value(r: int, t: int) -> Any:
            loss = _mean_nll(lps[(r, t, "conditioned")])
            if not loss < MAX_EXP_ARGUMENT:  # also NaN: a diverged model's logprobs give no perplexity
                return Failure(FailureCode.MODEL_ERROR, f"perplexity out of range: mean NLL {loss} nats per token "
                               f"(exp overflows above {MAX_EXP_ARGUMENT:.0f})", turn=t + 1)
            return math.exp(loss), {"loss": loss, "tokens": len(lps[(r, t, "conditioned")])}

        return self._output(plans, value, ("loss", "tokens"), usage)


class IFD(_SignalStep):
    """``ifd`` per turn (Cherry LLM): loss(A|Q) / loss(A); extra columns ``loss_conditioned``, ``loss_alone``.

    Turns with IFD >= ``SIGNAL.ifd_max`` (the instruction does not help) are counted, over the whole column, in its
    provenance (``ifd_at_least_one``, ``rows_with_ifd_at_least_one``; each run's own in ``runs``) and kept: the
    ``ifd`` selector drops them.
    """
    column = "ifd"
    kind = "ifd"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "flag": f"IFD >= {SIGNAL.ifd_max:g}: the response is likelier without the "
                "instruction (flagged, not dropped; the ifd selector drops these)"}

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        plans, usage = self._plans(rows), {}
        lps = self._score(self.engine, plans, ("conditioned", "alone"), ctx, usage)

        def value(r: int, t: int) -> Any:
            cond, alone = _mean_nll(lps[(r, t, "conditioned")]), _mean_nll(lps[(r, t, "alone")])
            if alone <= 0.0:
                return Failure(FailureCode.MODEL_ERROR, "the response alone has zero loss: IFD is undefined", turn=t + 1)
            return cond / alone, {"loss_conditioned": cond, "loss_alone": alone}

        out = self._output(plans, value, ("loss_conditioned", "loss_alone"), usage)
        out.stats.update(_flagged(out.values))
        return out

    def column_stats(self, values: list[Any], extra: dict[str, list[Any]]) -> dict[str, Any]:
        """:meth:`_SignalStep.column_stats` with the column's turns and rows at IFD >= ``SIGNAL.ifd_max``."""
        return {**super().column_stats(values, extra), **_flagged(values)}


def _flagged(values: list[Any]) -> dict[str, int]:
    """Turns, and rows with a turn, at IFD >= ``SIGNAL.ifd_max`` among per-turn ``values`` (None: no value)."""
    high = [sum(v is not None and v >= SIGNAL.ifd_max for v in row or ()) for row in values]
    return {"ifd_at_least_one": sum(high), "rows_with_ifd_at_least_one": sum(n > 0 for n in high)}


def reference_turns(reference: Sequence[Any]) -> list[list[Any]]:
    """The turns of each reference row (a conversation, or any row shape :func:`curate.rows.as_turns` reads)."""
    return [as_turns(row) for row in reference]


class Learnability(_SignalStep):
    """``learnability`` per turn (LoBaSS): mean response loss under the base model minus under the base model
    LoRA-tuned briefly on ``reference`` (conversations or rows); extra ``loss_base``, ``loss_reference``.

    The tuning is cached under ``ctx.cache_dir`` by (base model files, reference token ids, LoRA settings); each
    call (``rows_per_call`` rows) loads the tuned model again from that cache.
    """
    column = "learnability"
    kind = "learnability"

    def __init__(self, reference: Sequence[Any], model: Any = None, *, lora: LoraConfig | None = None,
                 engine: Engine | None = None, column: str | None = None, **engine_options: Any):
        super().__init__(model, engine=engine, column=column, **engine_options)
        if type(self.engine) is not Engine:
            raise CurateError("learnability runs on the transformers Engine: the base and the LoRA-tuned reference "
                              "model must share its kernels (the reference is merged in-process)")
        self.lora = lora or LoraConfig()
        self.reference_requests = [p.conditioned for turns in reference_turns(reference)
                                   for p in self.engine.prompter.plan(turns) if p.failure is None]
        self.adapter_fingerprint = adapter_fingerprint(self.engine.model_dir, self.reference_requests, self.lora)
        self.adapter: Any = None  # the tuned adapter, once a run has it (its description joins the provenance)

    @classmethod
    def from_selection(cls, ws: Any, selection: str, **kwargs: Any) -> Learnability:
        """The reference set is the kept rows of a workspace selection."""
        return cls(ws.conversations(ws.selection(selection).ids), **kwargs)

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "adapter": self.adapter_fingerprint}

    def describe(self) -> dict[str, Any]:
        lora = (self.adapter.describe() if self.adapter is not None
                else {"fingerprint": self.adapter_fingerprint, **self.lora.__dict__})
        return {**super().describe(), "reference_turns": len(self.reference_requests), "lora": lora}

    def reference_engine(self, cache_dir: Any, progress: bool = False) -> Engine:
        """The base model with the (cached or freshly tuned) LoRA merged in; ``progress``: a bar over the tuning."""
        e = self.engine
        adapter = tuned_adapter(e.model_dir, self.reference_requests, self.lora, cache_dir, device=e.device,
                                pad_id=e.tokenizer.pad_token_id or 0, progress=progress)
        return Engine(e.model_dir, device=e.device, dtype=e.dtype, max_length=e.max_length,
                      batch_tokens=e.batch_tokens, max_batch=e.max_batch, chat_template=e.chat_template,
                      alone_start=e.alone_start, adapter=adapter)

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        plans = self._plans(rows)
        ref = self.reference_engine(ctx.cache_dir, progress=not getattr(ctx.progress, "disable", True))
        base_lp: dict[tuple[int, int, str], np.ndarray] = {}
        ref_lp: dict[tuple[int, int, str], np.ndarray] = {}
        usage: dict[str, int] = {}

        class _Silent:
            def update(self, n: int = 1) -> None:
                return None

        for start in range(0, len(plans), LEARNABILITY_CHUNK):
            chunk = plans[start:start + LEARNABILITY_CHUNK]
            silent = StepContext(_Silent(), ctx.cache_dir, ctx.workspace)
            for (r, t, w), v in self._score(self.engine, chunk, ("conditioned",), silent, usage).items():
                base_lp[(start + r, t, w)] = v
            for (r, t, w), v in self._score(ref, chunk, ("conditioned",), ctx, usage).items():
                ref_lp[(start + r, t, w)] = v
        ref.release()

        def value(r: int, t: int) -> Any:
            base, tuned = _mean_nll(base_lp[(r, t, "conditioned")]), _mean_nll(ref_lp[(r, t, "conditioned")])
            return base - tuned, {"loss_base": base, "loss_reference": tuned}

        self.adapter = ref.adapter
        return self._output(plans, value, ("loss_base", "loss_reference"), usage)


RUN_SIGNALS = ("ifd", "perplexity")  # the signals `curate run` computes (learnability needs a reference set)


def check_run_signals(kinds: Sequence[str], model: Any = None) -> None:
    """An error naming the first of ``kinds`` that `curate run` cannot compute, or ``model`` (a causal LM folder; None:
    the packaged one) when it is no model folder: checked before any step pays."""
    unknown = [k for k in kinds if k not in RUN_SIGNALS]
    if unknown:
        raise OptionError(f"curate run computes the signals {', '.join(RUN_SIGNALS)}; not {unknown[0]!r} "
                          "(learnability needs a reference selection: use curate signal)")
    if model is not None:
        check_model_folder(model)


def signal_steps(kinds: Sequence[str], model: Any = None) -> list[_SignalStep]:
    """The steps for ``kinds`` (``ifd``, ``perplexity``) from the causal LM folder ``model`` (None: packaged)."""
    check_run_signals(kinds)
    return [(IFD if kind == "ifd" else Perplexity)(model) for kind in kinds]
