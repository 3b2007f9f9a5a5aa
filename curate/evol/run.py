"""Evol runs: Evol-Instruct / Evol-Quality variant chains and rank-and-score labels (DEITA §1).

A *chain* starts at a seed (step 0) and applies M rewrite operations, one per step, each to the last
surviving variant. A rewrite that fails an elimination rule (:mod:`curate.evol.rules`) is recorded with its
reason and dropped; the chain continues from the last survivor. The survivors of a chain form a *variant
set*, which one judge call ranks and scores as a whole (scale 1..M+1); the variants are shown in a shuffled
order (position bias, deita #15) whose seed is recorded, and the scores are un-shuffled before use.

Every LLM call goes through the prompt runner (:func:`curate.llm.runner.run_prompt`) and its response cache,
so a rerun with the same seeds, operations and prompts sends no answered request again; a request that failed for
a permanent reason (HTTP 4xx, context too long, ...) is given back by ``earlier_failures`` (the label set's
``failures.jsonl``) and not sent again either, a transient one (5xx, timeout, max_cost) only with ``retry_failed``.
"""

from __future__ import annotations

import collections
import functools
import html
import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from curate.codes import TRANSIENT_FAILURES, Failure
from curate.defaults import EVOL, JUDGE
from curate.errors import CurateError, OptionError, python_and_cli
from curate.evol.calls import LLMCalls, Usage
from curate.evol.provenance import label_spread_text, labels_dataset, run_provenance
from curate.evol.rules import (
    DEFAULT_RULES,
    INSTRUCTION_OPERATIONS,
    KINDS,
    RANK_PROMPTS,
    RESPONSE_OPERATIONS,
    Elimination,
    EliminationRules,
    RankFailure,
    check_scores,
    choose_operation,
    clean_rewrite,
    derive_seed,
    elimination_reason,
    leak_phrases,
    rank_model,
    shuffle,
    shuffle_order,
    unshuffle,
)
from curate.rows import as_turns
from curate.rows import turns as conversation_turns


@dataclass
class Variant:
    """One rewrite in a chain (step 0 is the seed itself)."""

    seed_id: str
    step: int
    operation: str
    text: str
    parent_step: int | None
    eliminated: Elimination | None = None  # None for survivors
    detail: str | None = None
    raw: str | None = None


@dataclass
class VariantSet:
    """A seed's surviving variants and their rank-and-score result."""

    seed_id: str
    instruction: str  # the seed instruction (for quality: the question all responses answer)
    variants: list[Variant]  # survivors, in step order, seed first
    eliminated: list[Variant] = field(default_factory=list)
    shuffle_seed: int | None = None
    order: list[int] | None = None
    scores: list[int] | None = None  # un-shuffled: scores[i] belongs to variants[i]
    failure: RankFailure | None = None  # why there are no scores
    failure_detail: str | None = None
    raw: str | None = None


def _seed_rows(seeds: Any, kind: str) -> list[dict[str, str]]:
    """Seeds as dicts with id, instruction (and response for quality): the first turn of each seed.

    Accepts plain strings (complexity only), dicts with ``instruction`` (``response``; optional ``id``),
    or pool rows with ``id`` and ``conversation`` (see :func:`curate.rows.as_turns`).
    """
    rows: list[dict[str, str]] = []
    for i, item in enumerate(seeds):
        sid = f"seed-{i}" if isinstance(item, str) else str(item.get("id", f"seed-{i}"))
        turns = as_turns(item)
        if not turns:
            raise CurateError(f"seed {sid}: conversation has no user turn")
        row = {"id": sid, "instruction": turns[0].instruction, "response": turns[0].response}
        if kind == "quality" and not (row["response"] or "").strip():
            raise CurateError(f"seed {row['id']}: quality labels need a response to rewrite, and it has none")
        rows.append(row)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise CurateError("seed ids must be unique")
    return rows


class EvolRun:
    """The outcome of `run_evol`: variant sets, eliminations, labels and provenance."""

    def __init__(self, kind: str, sets: list[VariantSet], labels, provenance: dict[str, Any],
                 recorded: Any = None, failures: list[dict[str, Any]] | None = None):
        self.kind = kind
        self.sets = sets
        self.labels = labels
        self.provenance = provenance
        self.failures = failures or []  # every failed request (key, call, code, message, raw): failures.jsonl
        self._recorded = recorded

    def recorded(self) -> None:
        """Its provenance (what it paid) is now stored: the responses it paid for are cached answers from now on."""
        if self._recorded is not None:
            self._recorded()
            self._recorded = None

    @property
    def eliminated(self) -> list[Variant]:
        return [v for s in self.sets for v in s.eliminated]

    @property
    def rank_failures(self) -> list[VariantSet]:
        return [s for s in self.sets if s.failure]

    def summary(self) -> dict[str, Any]:
        p = self.provenance
        return {k: p[k] for k in ("kind", "seeds", "steps", "rewrites", "eliminated", "eliminated_by_reason",
                                  "sets_scored", "rank_failures", "labels", "score_distribution", "tied_sets",
                                  "label_warning", "requests", "cached", "repeated", "failed_before", "prompt_tokens",
                                  "completion_tokens", "cost_usd")} | {"label_spread": label_spread_text(p)}

    def __repr__(self) -> str:
        s = self.summary()
        return (f"EvolRun(kind={self.kind!r}, seeds={s['seeds']}, steps={s['steps']}, labels={len(self.labels)}, "
                f"eliminated={s['eliminated']}/{s['rewrites']}, rank_failures={s['rank_failures']}, "
                f"requests={s['requests']}, label_spread={s['label_spread']!r}"
                + (f", label_warning={s['label_warning']!r}" if s["label_warning"] else "") + ")")

    def _repr_html_(self) -> str:
        s = self.summary()
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                       for k, v in s.items())
        return f"<b>Evol {html.escape(self.kind)} run</b><table>{rows}</table>"


def _failure_text(failure: Failure) -> str:
    return f"{failure.code}: {failure.message}"


def _evolve_step(ctx: LLMCalls, sets: list[VariantSet], step: int, kind: str, seed: int, operations: Sequence[str],
                 prompts: dict[str, Any], rules: EliminationRules, prompt_texts: dict[str, str],
                 phrases: dict[str, tuple[str, ...]], rewrite_params: dict[str, Any] | None) -> None:
    """One rewrite per chain, each with its seeded operation; eliminated rewrites are recorded and dropped."""
    by_op: dict[str, list[VariantSet]] = collections.defaultdict(list)
    for vs in (vs for vs in sets if vs.failure is None):  # a chain left unanswered waits for a re-run
        by_op[choose_operation(operations, seed, vs.seed_id, step)].append(vs)
    groups = [(op, by_op[op]) for op in operations if by_op.get(op)]  # fixed order: deterministic request order
    # A per-step sampling seed: a step that retries an op on the same parent (after an
    # elimination) gets a fresh sample instead of the cached answer of the earlier step.
    params = {"seed": derive_seed(seed, "sample", step), **(rewrite_params or {})}
    calls = []
    for op, group in groups:
        if kind == "complexity":
            variables = [{"instruction": vs.variants[-1].text} for vs in group]
        else:
            variables = [{"instruction": vs.instruction, "response": vs.variants[-1].text} for vs in group]
        calls.append((prompts[op], variables, {"params": params}))
    answers = ctx.run(calls, f"evol step {step}")
    for (op, group), results in zip(groups, answers, strict=True):
        for vs, res in zip(group, results, strict=True):
            parent = vs.variants[-1]
            variant = Variant(vs.seed_id, step, op, clean_rewrite(res.text), parent.step, raw=res.text)
            if res.failure and res.failure.code in TRANSIENT_FAILURES:  # not the rewrite's fault: no elimination
                vs.failure, vs.failure_detail = RankFailure.NOT_ANSWERED, _failure_text(res.failure)
                continue
            if res.failure:
                variant.eliminated, variant.detail = Elimination.CALL_FAILED, _failure_text(res.failure)
            else:
                truncated = (res.raw or {}).get("finish_reason") == "length"
                # the operation decides whether shrank and short_sorry apply: without it neither ever did in a run
                reason = elimination_reason(parent.text, res.text, operation=op, rules=rules, truncated=truncated,
                                            prompt_text=prompt_texts[op], phrases=phrases[op])
                if reason:
                    variant.eliminated, variant.detail = reason
            (vs.eliminated if variant.eliminated else vs.variants).append(variant)


def _rank(ctx: LLMCalls, sets: list[VariantSet], kind: str, seed: int, scale_max: int, rank_prompt: Any,
          rank_params: dict[str, Any] | None) -> None:
    """Rank-and-score each set of two or more survivors in one call, shown in a seeded shuffled order."""
    to_rank = []
    for vs in sets:
        if vs.failure is not None:
            continue
        if len(vs.variants) < 2:
            vs.failure, vs.failure_detail = RankFailure.TOO_FEW_VARIANTS, "every rewrite was eliminated"
            continue
        vs.shuffle_seed = derive_seed(seed, "shuffle", kind, vs.seed_id)
        vs.order = shuffle_order(len(vs.variants), vs.shuffle_seed)
        to_rank.append(vs)
    by_size: dict[int, list[VariantSet]] = collections.defaultdict(list)
    for vs in to_rank:  # one schema per set size: exactly n scores in 1..M+1
        by_size[len(vs.variants)].append(vs)
    groups, calls = sorted(by_size.items()), []
    for n, group in groups:
        variables = []
        for vs in group:
            item: dict[str, Any] = {"variants": [v.text for v in shuffle(vs.variants, vs.order)],
                                    "scale_max": scale_max}
            if kind == "quality":
                item["instruction"] = vs.instruction
            variables.append(item)
        calls.append((rank_prompt, variables, {"params": rank_params, "output_model": rank_model(n, scale_max)}))
    answers = ctx.run(calls, "evol rank")
    for (n, group), results in zip(groups, answers, strict=True):
        for vs, res in zip(group, results, strict=True):
            vs.raw = (res.text if res.text is not None else res.failure.raw if res.failure and res.failure.raw
                      else json.dumps(res.raw, default=str))  # a replayed failure's reply is its record's raw
            if res.failure:
                unanswered = res.failure.code in TRANSIENT_FAILURES
                vs.failure = RankFailure.NOT_ANSWERED if unanswered else RankFailure.JUDGE_FAILED
                vs.failure_detail = _failure_text(res.failure)
                continue
            shown_scores = getattr(res.parsed, "scores", None)
            problem = check_scores(shown_scores, n, scale_max)
            if problem:
                vs.failure, vs.failure_detail = RankFailure.BAD_SCORES, problem
                continue
            vs.scores = unshuffle(list(shown_scores), vs.order)


@dataclass
class EvolPlan:
    """What a run of ``run_evol``'s arguments asks: seeds, operations, rules and loaded prompts (a dry run too)."""

    kind: str
    steps: int
    seed: int
    operations: tuple[str, ...]
    rules: EliminationRules
    rows: list[dict[str, str]]
    prompts: dict[str, Any]
    rank_prompt: Any
    rewrite_params: dict[str, Any] | None = None
    rank_params: dict[str, Any] | None = None

    @property
    def field_name(self) -> str:
        return "instruction" if self.kind == "complexity" else "response"


def plan_evol(seeds: Iterable[Any], *, kind: str, steps: int, seed: int, operations: Sequence[str] | None,
              rules: EliminationRules | None, rewrite_params: dict[str, Any] | None,
              rank_params: dict[str, Any] | None, prompt_dirs: list[str | os.PathLike] | None) -> EvolPlan:
    """The checked arguments of ``run_evol`` and its prompts, loaded by name."""
    from curate.llm.prompts import load_prompt

    if kind not in KINDS:
        raise OptionError(f"{python_and_cli('kind=', '--kind')} must be one of {KINDS}, not {kind!r}")
    if steps < 1:
        raise CurateError("steps must be at least 1")
    operations = tuple(operations or (INSTRUCTION_OPERATIONS if kind == "complexity" else RESPONSE_OPERATIONS))
    return EvolPlan(kind, steps, seed, operations, rules or DEFAULT_RULES[kind], _seed_rows(seeds, kind),
                    {op: load_prompt(f"evol/{op}", prompt_dirs) for op in operations},
                    load_prompt(f"evol/{RANK_PROMPTS[kind]}", prompt_dirs), rewrite_params, rank_params)


def run_chains(ctx: LLMCalls, plan: EvolPlan) -> list[VariantSet]:
    """Every seed's chain, step by step, then the rank calls: the variant sets."""
    # The prompts' own wording and few-shot examples, rendered with empty inputs (for the copy rule).
    prompt_texts = {op: "\n".join(m["content"] for m in p.render(instruction="", response=""))
                    for op, p in plan.prompts.items()}
    phrases = {op: leak_phrases(p) for op, p in plan.prompts.items()}
    sets = [VariantSet(seed_id=r["id"], instruction=r["instruction"],
                       variants=[Variant(r["id"], 0, "seed", r[plan.field_name], None)]) for r in plan.rows]
    for step in range(1, plan.steps + 1):
        _evolve_step(ctx, sets, step, plan.kind, plan.seed, plan.operations, plan.prompts, plan.rules, prompt_texts,
                     phrases, plan.rewrite_params)
    _rank(ctx, sets, plan.kind, plan.seed, plan.steps + 1, plan.rank_prompt, plan.rank_params)
    return sets


def run_evol(seeds: Iterable[Any], backend: Any, *, kind: str = EVOL.kind, steps: int = EVOL.steps,
             seed: int = EVOL.seed, cache_path: str | os.PathLike | Any, operations: Sequence[str] | None = None,
             rules: EliminationRules | None = None, rewrite_params: dict[str, Any] | None = None,
             rank_params: dict[str, Any] | None = None, prompt_dirs: list[str | os.PathLike] | None = None,
             progress: bool = True, earlier_failures: dict[str, Failure] | None = None,
             retry_failed: bool = JUDGE.retry_failed, earlier_sets: list[dict[str, Any]] | None = None) -> EvolRun:
    """Evolve every seed ``steps`` times, rank-and-score each variant set, and build the label set.

    ``kind="complexity"`` evolves instructions (Evol-Instruct); ``kind="quality"`` rewrites responses
    to the seed instruction (Evol-Quality). The operation of each step is drawn with
    `choose_operation` (seeded by ``seed``, the seed id and the step) and recorded on the variant.
    Prompts are loaded by name (``evol/<operation>``, ``evol/rank_<kind>``), so a file of the same
    name in ``prompt_dirs`` overrides the built-in one. ``earlier_failures`` (by request key, e.g.
    :func:`curate.evol.labels.stored_failures`) are the failed requests of an earlier run: those failed for a
    permanent reason are not sent again (their failure is replayed), nor, unless ``retry_failed``, transient ones.
    ``earlier_sets``: the ``sets.jsonl`` rows of a label set stored before failures were recorded
    (:func:`curate.evol.labels.legacy_sets`): the permanent failures they record are replayed too.
    ``progress``: a bar per step and for the rank calls (on by default, as ``ws.apply``'s).
    """
    from curate.llm.cache import response_cache

    plan = plan_evol(seeds, kind=kind, steps=steps, seed=seed, operations=operations, rules=rules,
                     rewrite_params=rewrite_params, rank_params=rank_params, prompt_dirs=prompt_dirs)
    cache = response_cache(cache_path)
    usage = Usage()
    counters = ("requests_sent", "submitted_batches", "prompt_tokens", "completion_tokens")
    before = {c: getattr(backend, c) for c in counters if isinstance(getattr(backend, c, None), int)}
    known = replayed_failures(earlier_failures, retry_failed) | earlier_set_failures(earlier_sets, plan, backend)
    ctx = LLMCalls(backend, cache, usage, progress, known_failures=known)
    sets = run_chains(ctx, plan)

    labels = labels_dataset(sets, kind)
    provenance = run_provenance(kind, steps, seed, plan.operations, plan.rules, plan.prompts, plan.rank_prompt, backend,
                             sets, usage, labels, rewrite_params, rank_params)
    provenance.update(retry_failed=retry_failed, failed_requests=len(ctx.failures))
    # The backend's own counters also see transport retries and validation re-asks.
    provenance.update({f"backend_{c}": getattr(backend, c) - v for c, v in before.items()})
    return EvolRun(kind, sets, labels, provenance, functools.partial(cache.mark_recorded, usage.billed_keys),
                   list(ctx.failures.values()))


def replayed_failures(earlier: dict[str, Failure] | None, retry_failed: bool) -> dict[str, Failure]:
    """Of an earlier run's failed requests, those a run does not send again: failed for a permanent reason, and
    unless ``retry_failed`` the transient ones too."""
    return {key: f for key, f in (earlier or {}).items() if not (retry_failed and f.code in TRANSIENT_FAILURES)}


def earlier_set_failures(rows: list[dict[str, Any]] | None, plan: EvolPlan, backend: Any) -> dict[str, Failure]:
    """The permanent failures an old label set's ``sets.jsonl`` rows record, by request key (none without rows)."""
    from curate.evol.legacy import failures_in_sets

    return failures_in_sets(rows, plan, backend) if rows else {}


def sample_seeds(ws: Any, n: int, *, kind: str = EVOL.kind, seed: int = EVOL.seed) -> list[dict[str, Any]]:
    """A seeded random sample of ``n`` pool rows (``id``, ``conversation``) to evolve; for quality labels only rows
    whose first user turn has a non-empty response are candidates."""
    if kind not in KINDS:
        raise OptionError(f"{python_and_cli('kind=', '--kind')} must be one of {KINDS}, not {kind!r}")
    conversations = ws.conversations()
    candidates = list(range(len(conversations)))
    if kind == "quality":
        candidates = [i for i in candidates
                      if (turns := conversation_turns(conversations[i])) and (turns[0].response or "").strip()]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise OptionError(f"the seeds to sample, {python_and_cli('n=', '--seeds')}, must be a whole number >= 1, "
                          f"not {n!r}")
    if n > len(candidates):
        raise CurateError(f"{ws.path}: asked for {n} seeds, the pool has {len(candidates)} usable rows")
    picked = sorted(random.Random(derive_seed(seed, "seeds")).sample(candidates, n))
    ids = ws.ids
    return [{"id": ids[i], "conversation": conversations[i]} for i in picked]
