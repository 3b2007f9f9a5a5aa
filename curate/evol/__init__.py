"""Evol: Evol-Instruct / Evol-Quality variant chains and rank-and-score labels (DEITA §1).

A *chain* starts at a seed (step 0) and applies M rewrite operations, one per step, each to the last
surviving variant. A rewrite that fails an elimination rule is recorded with its reason and dropped;
the chain continues from the last survivor. The survivors of a chain form a *variant set*, which one
judge call ranks and scores as a whole (scale 1..M+1); the variants are shown in a shuffled order
(position bias, deita #15) whose seed is recorded, and the scores are un-shuffled before use.

Every LLM call goes through the judge engine (`curate.llm.judges.run_prompt`) and its cache, so a rerun
with the same seeds, operations and prompts makes no new requests.
"""

from __future__ import annotations

import collections
import difflib
import functools
import hashlib
import html
import json
import os
import random
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from curate.errors import CurateError

KINDS = ("complexity", "quality")
#: Evol-Instruct operations: four in-depth rewrites and the in-breadth one (prompt files prompts/evol/<op>.md).
IN_DEPTH_OPERATIONS = ("add_constraint", "deepen", "concretize", "reasoning")
INSTRUCTION_OPERATIONS = (*IN_DEPTH_OPERATIONS, "breadth")
#: Evol-Quality operations: rewrite a response to be more helpful / relevant / in-depth / creative / detailed.
RESPONSE_OPERATIONS = ("response_helpful", "response_relevant", "response_deepen", "response_creative",
                       "response_detailed")
RANK_PROMPTS = {"complexity": "rank_complexity", "quality": "rank_quality"}


class VariantScores(BaseModel):
    """The rank-and-score reply: one integer score per variant, in the order the variants were shown."""

    scores: list[int]


def rank_model(n_variants: int, scale_max: int) -> type[VariantScores]:
    """`VariantScores` narrowed to exactly ``n_variants`` scores in 1..``scale_max``.

    Sent as the json schema of a rank call, so a guided-decoding server (vLLM) can only produce a
    usable reply; the reply is still checked with `check_scores` (other servers may not enforce it).
    """
    from typing import Annotated

    from pydantic import Field, conlist, create_model

    score = Annotated[int, Field(ge=1, le=scale_max)]
    return create_model(f"VariantScores{n_variants}of{scale_max}", __base__=VariantScores,
                        scores=(conlist(score, min_length=n_variants, max_length=n_variants), ...))


# ----------------------------------------------------------------------------------------------
# Elimination rules (pure)
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EliminationRules:
    """Limits for dropping a failed rewrite.

    A child may add at most ``max_added_words + length_tolerance * parent_words`` words to its parent;
    it counts as unchanged when its normalised word sequence matches the parent's with a
    ``difflib`` ratio of at least ``near_equal_ratio``.
    """

    max_added_words: int = 20
    length_tolerance: float = 0.1
    near_equal_ratio: float = 0.95

    def allowed_words(self, parent_words: int) -> int:
        return int(self.max_added_words + self.length_tolerance * parent_words)


#: Defaults per kind: an instruction step adds ~10-20 words (DEITA); a response rewrite may grow more.
DEFAULT_RULES = {
    "complexity": EliminationRules(max_added_words=20, length_tolerance=0.1, near_equal_ratio=0.95),
    "quality": EliminationRules(max_added_words=150, length_tolerance=0.5, near_equal_ratio=0.98),
}

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry\b|i apologi[sz]e|i cannot\b|i can'?t\b|i can not\b|i'?m unable|i am unable|"
    r"i'?m not able|i am not able|i won'?t\b|i will not\b|as an ai\b|as a language model|unfortunately,? i\b)",
    re.IGNORECASE)
# The rewriter's own scaffolding: markers and labels from rewrite prompts (ours and the common
# WizardLM-style ones). A phrase only counts as a leak when the parent does not contain it.
_SCAFFOLDING_COMMON = (
    r"#\s*[a-z ]{0,30}(prompt|instruction|task|response|answer)\s*#",
    r"\b(rewritten|given|original|created|evolved|improved|revised)\s+(prompt|instruction|task|response|answer|version)\b",
    r"\bhere(?:'s| is) (?:the|a|an|my) (?:new|rewritten|revised|improved|modified|updated|better|harder)\b",
    r"\bin-?(depth|breadth) (evolution|operation|step|rewrite)\b",
    r"\bextra requirement\b",
    r"\bevol(ved|ution)?[- _]instruct\b",
    r"^\W*(new |rewritten |revised |improved |updated )?(task|instruction|prompt|question|answer|response)\s*\d*\s*:",
    r"\[(version|answer) \d+\]",
)
_OPERATION_LABELS = {
    "add_constraint": (r"\badd[_ ]constraint\b",),
    "deepen": (r"\bdeepen(ed)? (the )?(inquiry|task|question)\b",),
    "concretize": (r"\bconcreti[sz]",),
    "reasoning": (r"\bmulti-?step reasoning (step|operation)\b",),
    "breadth": (r"\bin-?breadth\b", r"\bsame (field|domain)\b"),
    "response_helpful": (r"\bmore helpful\b",),
    "response_relevant": (r"\bmore relevant\b",),
    "response_deepen": (r"\bmore depth\b", r"\bmore in-depth\b"),
    "response_creative": (r"\bmore creative\b",),
    "response_detailed": (r"\bmore (useful )?detail(ed)?\b",),
}


def normalise(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation and spacing dropped): the unit of the no-change and length rules."""
    return _WORD.findall(text.lower())


def clean_rewrite(text: str | None) -> str:
    """Strip spacing and one pair of quotes wrapped around the whole rewrite."""
    out = (text or "").strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'`":
        out = out[1:-1].strip()
    return out


#: A run of this many words shared with the rewrite prompt's own text (and not in the parent) is a leak.
SCAFFOLD_NGRAM = 6


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@functools.lru_cache(maxsize=64)
def _prompt_ngrams(prompt_text: str) -> frozenset[tuple[str, ...]]:
    # A rewrite prompt is the same for every row of an operation: split it into n-grams once.
    return frozenset(_ngrams(normalise(prompt_text), SCAFFOLD_NGRAM))


def elimination_reason(parent: str, child: str | None, *, operation: str | None = None,
                       rules: EliminationRules = DEFAULT_RULES["complexity"], truncated: bool = False,
                       prompt_text: str | None = None) -> tuple[str, str] | None:
    """Why ``child`` (a rewrite of ``parent``) must be dropped, as ``(code, detail)``; None if it survives.

    Codes: ``empty``, ``scaffolding`` (the rewriter leaked its own labels, or copied a run of
    `SCAFFOLD_NGRAM` words from ``prompt_text``, the rewrite prompt's own wording and examples),
    ``refusal``, ``no_change`` (normalised text equal or near-equal), ``too_long`` (more words added
    than the rules allow), ``truncated`` (the generation stopped at max_tokens: the rewrite is cut off).
    """
    text = clean_rewrite(child)
    child_words = normalise(text)
    if not child_words:
        return ("empty", "the rewrite has no words")
    patterns = _SCAFFOLDING_COMMON + _OPERATION_LABELS.get(operation or "", ())
    for pat in patterns:
        flags = re.IGNORECASE | re.MULTILINE
        match = re.search(pat, text, flags)
        if match and not re.search(pat, parent, flags):
            return ("scaffolding", f"leaked {match.group(0)!r}")
    parent_words = normalise(parent)
    if prompt_text:
        copied = (_ngrams(child_words, SCAFFOLD_NGRAM) & _prompt_ngrams(prompt_text)) \
            - _ngrams(parent_words, SCAFFOLD_NGRAM)
        if copied:
            return ("scaffolding", f"copied from the rewrite prompt: {' '.join(min(copied))!r}")
    if _REFUSAL.search(text) and not _REFUSAL.search(parent):
        return ("refusal", f"starts {text[:60]!r}")
    if parent_words == child_words:
        return ("no_change", "same text as the parent after normalisation")
    ratio = difflib.SequenceMatcher(None, parent_words, child_words, autojunk=False).ratio()
    if ratio >= rules.near_equal_ratio:
        return ("no_change", f"near-equal to the parent (word ratio {ratio:.3f} >= {rules.near_equal_ratio})")
    added, allowed = len(child_words) - len(parent_words), rules.allowed_words(len(parent_words))
    if added > allowed:
        return ("too_long", f"adds {added} words; {allowed} allowed for a {len(parent_words)}-word parent")
    if truncated:
        return ("truncated", "generation stopped at max_tokens; the rewrite is cut off")
    return None


# ----------------------------------------------------------------------------------------------
# Seeded choices, shuffling (pure)
# ----------------------------------------------------------------------------------------------


def derive_seed(*parts: Any) -> int:
    """A stable 31-bit seed from the given parts (independent of PYTHONHASHSEED and call order)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def choose_operation(operations: Sequence[str], seed: int, seed_id: str, step: int) -> str:
    """The operation for one step of one chain: seeded by (run seed, seed id, step)."""
    return operations[random.Random(derive_seed(seed, "operation", seed_id, step)).randrange(len(operations))]


def shuffle_order(n: int, shuffle_seed: int) -> list[int]:
    """A permutation: position ``i`` of the shown list holds variant ``order[i]``."""
    order = list(range(n))
    random.Random(shuffle_seed).shuffle(order)
    return order


def shuffle(items: Sequence[Any], order: Sequence[int]) -> list[Any]:
    """The items in shown order."""
    return [items[i] for i in order]


def unshuffle(shown_scores: Sequence[Any], order: Sequence[int]) -> list[Any]:
    """Scores given in shown order, back in the variants' own order."""
    out: list[Any] = [None] * len(order)
    for position, variant in enumerate(order):
        out[variant] = shown_scores[position]
    return out


def check_scores(scores: Sequence[Any] | None, n: int, scale_max: int) -> str | None:
    """Why a rank-and-score reply is unusable (wrong count, non-integer, out of 1..scale_max), or None."""
    if scores is None:
        return "no scores in the reply"
    if len(scores) != n:
        return f"expected {n} scores, got {len(scores)}"
    for s in scores:
        if isinstance(s, bool) or not isinstance(s, int):
            return f"score {s!r} is not an integer"
        if not 1 <= s <= scale_max:
            return f"score {s} out of range 1..{scale_max}"
    return None


# ----------------------------------------------------------------------------------------------
# Chains and variant sets
# ----------------------------------------------------------------------------------------------


@dataclass
class Variant:
    """One rewrite in a chain (step 0 is the seed itself)."""

    seed_id: str
    step: int
    operation: str
    text: str
    parent_step: int | None
    eliminated: str | None = None  # reason code; None for survivors
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
    failure: str | None = None
    raw: str | None = None


def _seed_rows(seeds: Any, kind: str) -> list[dict[str, str]]:
    """Seeds as dicts with id, instruction (and response for quality).

    Accepts plain strings (complexity only), dicts with ``instruction`` (``response``; optional ``id``),
    or pool rows with ``id`` and ``conversation`` (first user turn).
    """
    from curate.pools import user_turns

    rows: list[dict[str, str]] = []
    for i, item in enumerate(seeds):
        if isinstance(item, str):
            row = {"id": f"seed-{i}", "instruction": item, "response": None}
        elif "conversation" in item:
            turns = user_turns(item["conversation"])
            if not turns:
                raise CurateError(f"seed {item.get('id', i)}: conversation has no user turn")
            row = {"id": str(item.get("id", f"seed-{i}")), "instruction": turns[0][0], "response": turns[0][1]}
        else:
            row = {"id": str(item.get("id", f"seed-{i}")), "instruction": item["instruction"],
                   "response": item.get("response")}
        if kind == "quality" and not (row["response"] or "").strip():
            raise CurateError(f"seed {row['id']}: quality labels need a response to rewrite, and it has none")
        rows.append(row)
    ids = [r["id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise CurateError("seed ids must be unique")
    return rows


@dataclass
class _Usage:
    requests: int = 0  # new (uncached) calls
    cached: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, result: Any) -> None:
        """Count one CallResult of the judge engine (cached calls cost nothing now)."""
        if result.cached:
            self.cached += 1
            return
        self.requests += 1
        self.prompt_tokens += int(result.usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(result.usage.get("completion_tokens") or 0)
        self.cost_usd += float(result.cost_usd)


class EvolRun:
    """The outcome of `run_evol`: variant sets, eliminations, labels and provenance."""

    def __init__(self, kind: str, sets: list[VariantSet], labels, provenance: dict[str, Any]):
        self.kind = kind
        self.sets = sets
        self.labels = labels
        self.provenance = provenance

    @property
    def eliminated(self) -> list[Variant]:
        return [v for s in self.sets for v in s.eliminated]

    @property
    def rank_failures(self) -> list[VariantSet]:
        return [s for s in self.sets if s.failure]

    def summary(self) -> dict[str, Any]:
        p = self.provenance
        return {k: p[k] for k in ("kind", "seeds", "steps", "rewrites", "eliminated", "eliminated_by_reason",
                                  "sets_scored", "rank_failures", "score_distribution", "requests", "cached",
                                  "prompt_tokens", "completion_tokens", "cost_usd")}

    def __repr__(self) -> str:
        s = self.summary()
        return (f"EvolRun(kind={self.kind!r}, seeds={s['seeds']}, steps={s['steps']}, labels={len(self.labels)}, "
                f"eliminated={s['eliminated']}/{s['rewrites']}, rank_failures={s['rank_failures']}, "
                f"requests={s['requests']})")

    def _repr_html_(self) -> str:
        s = self.summary()
        rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                       for k, v in s.items())
        return f"<b>Evol {html.escape(self.kind)} run</b><table>{rows}</table>"


def run_evol(seeds: Iterable[Any], backend: Any, *, kind: str = "complexity", steps: int = 5, seed: int = 0,
             cache_path: str | os.PathLike | Any, operations: Sequence[str] | None = None,
             rules: EliminationRules | None = None, rewrite_params: dict[str, Any] | None = None,
             rank_params: dict[str, Any] | None = None, prompt_dirs: list[str | os.PathLike] | None = None,
             progress: bool = False) -> EvolRun:
    """Evolve every seed ``steps`` times, rank-and-score each variant set, and build the label set.

    ``kind="complexity"`` evolves instructions (Evol-Instruct); ``kind="quality"`` rewrites responses
    to the seed instruction (Evol-Quality). The operation of each step is drawn with
    `choose_operation` (seeded by ``seed``, the seed id and the step) and recorded on the variant.
    Prompts are loaded by name (``evol/<operation>``, ``evol/rank_<kind>``), so a file of the same
    name in ``prompt_dirs`` overrides the built-in one.
    """
    from curate.llm.judges import resolve_cache, run_prompt
    from curate.llm.prompts import load_prompt

    if kind not in KINDS:
        raise CurateError(f"kind must be one of {KINDS}, not {kind!r}")
    if steps < 1:
        raise CurateError("steps must be at least 1")
    operations = tuple(operations or (INSTRUCTION_OPERATIONS if kind == "complexity" else RESPONSE_OPERATIONS))
    rules = rules or DEFAULT_RULES[kind]
    rows = _seed_rows(seeds, kind)
    cache_path = resolve_cache(cache_path)
    prompts = {op: load_prompt(f"evol/{op}", prompt_dirs) for op in operations}
    rank_prompt = load_prompt(f"evol/{RANK_PROMPTS[kind]}", prompt_dirs)
    # The prompts' own wording and few-shot examples, rendered with empty inputs (for the copy rule).
    prompt_texts = {op: "\n".join(m["content"] for m in p.render(instruction="", response=""))
                    for op, p in prompts.items()}
    usage = _Usage()
    counters = ("requests_sent", "prompt_tokens", "completion_tokens")
    before = {c: getattr(backend, c) for c in counters if isinstance(getattr(backend, c, None), int)}
    field_name = "instruction" if kind == "complexity" else "response"

    sets = [VariantSet(seed_id=r["id"], instruction=r["instruction"],
                       variants=[Variant(r["id"], 0, "seed", r[field_name], None)]) for r in rows]
    for step in range(1, steps + 1):
        by_op: dict[str, list[VariantSet]] = collections.defaultdict(list)
        for vs in sets:
            by_op[choose_operation(operations, seed, vs.seed_id, step)].append(vs)
        for op in operations:  # fixed order: deterministic request order
            group = by_op.get(op)
            if not group:
                continue
            if kind == "complexity":
                variables = [{"instruction": vs.variants[-1].text} for vs in group]
            else:
                variables = [{"instruction": vs.instruction, "response": vs.variants[-1].text} for vs in group]
            # A per-step sampling seed: a step that retries an op on the same parent (after an
            # elimination) gets a fresh sample instead of the cached answer of the earlier step.
            params = {"seed": derive_seed(seed, "sample", step), **(rewrite_params or {})}
            results = run_prompt(prompts[op], variables, backend, cache_path, progress=progress, params=params)
            for vs, res in zip(group, results, strict=True):
                usage.add(res)
                parent = vs.variants[-1]
                variant = Variant(vs.seed_id, step, op, clean_rewrite(res.text), parent.step, raw=res.text)
                if res.failure:
                    variant.eliminated, variant.detail = "call_failed", str(res.failure)
                else:
                    truncated = (res.raw or {}).get("finish_reason") == "length"
                    reason = elimination_reason(parent.text, res.text, operation=op, rules=rules,
                                                truncated=truncated, prompt_text=prompt_texts[op])
                    if reason:
                        variant.eliminated, variant.detail = reason
                if variant.eliminated:
                    vs.eliminated.append(variant)
                else:
                    vs.variants.append(variant)

    scale_max = steps + 1
    to_rank = []
    for vs in sets:
        if len(vs.variants) < 2:
            vs.failure = "too_few_variants: every rewrite was eliminated; nothing to compare"
            continue
        vs.shuffle_seed = derive_seed(seed, "shuffle", kind, vs.seed_id)
        vs.order = shuffle_order(len(vs.variants), vs.shuffle_seed)
        to_rank.append(vs)
    by_size: dict[int, list[VariantSet]] = collections.defaultdict(list)
    for vs in to_rank:  # one schema per set size: exactly n scores in 1..M+1
        by_size[len(vs.variants)].append(vs)
    for n, group in sorted(by_size.items()):
        variables = []
        for vs in group:
            item: dict[str, Any] = {"variants": [v.text for v in shuffle(vs.variants, vs.order)],
                                    "scale_max": scale_max}
            if kind == "quality":
                item["instruction"] = vs.instruction
            variables.append(item)
        results = run_prompt(rank_prompt, variables, backend, cache_path, progress=progress, params=rank_params,
                             output_model=rank_model(n, scale_max))
        for vs, res in zip(group, results, strict=True):
            usage.add(res)
            vs.raw = res.text if res.text is not None else json.dumps(res.raw, default=str)
            if res.failure:
                vs.failure = f"judge_failed: {res.failure}"
                continue
            shown_scores = getattr(res.parsed, "scores", None)
            problem = check_scores(shown_scores, n, scale_max)
            if problem:
                vs.failure = f"bad_scores: {problem}"
                continue
            vs.scores = unshuffle(list(shown_scores), vs.order)

    labels = _labels_dataset(sets, kind)
    provenance = _provenance(kind, steps, seed, operations, rules, prompts, rank_prompt, backend, sets,
                             usage, labels, rewrite_params, rank_params)
    # The backend's own counters also see transport retries and validation re-asks.
    provenance.update({f"backend_{c}": getattr(backend, c) - v for c, v in before.items()})
    return EvolRun(kind, sets, labels, provenance)


def _labels_dataset(sets: list[VariantSet], kind: str):
    import datasets

    cols: dict[str, list[Any]] = {"text": [], "score": [], "seed_id": [], "step": [], "operation": []}
    if kind == "quality":
        cols["instruction"] = []
    for vs in sets:
        if vs.scores is None:
            continue
        for v, s in zip(vs.variants, vs.scores, strict=True):
            cols["text"].append(v.text)
            cols["score"].append(float(s))
            cols["seed_id"].append(vs.seed_id)
            cols["step"].append(v.step)
            cols["operation"].append(v.operation)
            if kind == "quality":
                cols["instruction"].append(vs.instruction)
    features = datasets.Features({"text": datasets.Value("string"), "score": datasets.Value("float64"),
                                  "seed_id": datasets.Value("string"), "step": datasets.Value("int32"),
                                  "operation": datasets.Value("string"),
                                  **({"instruction": datasets.Value("string")} if kind == "quality" else {})})
    return datasets.Dataset.from_dict(cols, features=features)


def _prompt_info(p: Any) -> dict[str, Any]:
    return {"name": p.name, "version": p.version, "fingerprint": p.fingerprint}


def _backend_info(backend: Any) -> dict[str, Any]:
    info = backend.describe() if hasattr(backend, "describe") else {}
    return {"class": type(backend).__name__, "model": getattr(backend, "model", None), **info}


def _provenance(kind, steps, seed, operations, rules, prompts, rank_prompt, backend, sets, usage, labels,
                rewrite_params, rank_params) -> dict[str, Any]:
    eliminated = [v for s in sets for v in s.eliminated]
    rewrites = sum(len(s.variants) - 1 + len(s.eliminated) for s in sets)
    failures = collections.Counter(s.failure.split(":", 1)[0] for s in sets if s.failure)
    return {
        "method": "evol", "kind": kind, "seeds": len(sets), "steps": steps, "seed": seed,
        "operations": list(operations), "operation_choice": "choose_operation(seed, seed_id, step)",
        "sampling_seed": "derive_seed(seed, 'sample', step)",
        "elimination_rules": asdict(rules),
        "prompts": {op: _prompt_info(p) for op, p in prompts.items()} | {"rank": _prompt_info(rank_prompt)},
        "backend": _backend_info(backend), "rewrite_params": rewrite_params, "rank_params": rank_params,
        "scale": [1, steps + 1], "rank_output": "curate.evol:rank_model(n_variants, steps + 1)",
        "rewrites": rewrites, "eliminated": len(eliminated),
        "eliminated_by_reason": dict(collections.Counter(v.eliminated for v in eliminated).most_common()),
        "sets_scored": sum(s.scores is not None for s in sets),
        "rank_failures": sum(failures.values()), "rank_failures_by_reason": dict(failures),
        "shuffle_seeds": {s.seed_id: s.shuffle_seed for s in sets if s.shuffle_seed is not None},
        "score_distribution": {str(k): v for k, v in sorted(collections.Counter(
            int(x) for x in labels["score"]).items())},
        "labels": len(labels),
        "requests": usage.requests, "cached": usage.cached, "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens, "cost_usd": round(usage.cost_usd, 6),
    }


# ----------------------------------------------------------------------------------------------
# Label sets in a workspace
# ----------------------------------------------------------------------------------------------


def save_labels(ws: Any, name: str, run: EvolRun) -> Path:
    """Store a run's labels at ``ws.path/labels/<name>`` (datasets folder + provenance.json + sets.jsonl).

    Written to a temporary folder first and renamed into place, so a crash never leaves half a label set.
    """
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.startswith("."):
        raise CurateError(f"label set name {name!r}: use letters, digits, '_', '-', '.'")
    folder = Path(ws.path) / "labels"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.{uuid.uuid4().hex}.tmp"
    run.labels.save_to_disk(str(tmp))
    (tmp / "provenance.json").write_text(json.dumps(run.provenance, indent=2))
    with open(tmp / "sets.jsonl", "w", encoding="utf-8") as fh:  # every variant, eliminated ones included
        for vs in run.sets:
            fh.write(json.dumps(asdict(vs), ensure_ascii=False) + "\n")
    trash = None
    if final.exists():
        trash = folder / f".{name}.old.{uuid.uuid4().hex}"
        os.replace(final, trash)
    os.replace(tmp, final)
    if trash is not None:
        shutil.rmtree(trash)
    return final


def load_labels(ws: Any, name: str):
    """A stored label set: ``(datasets.Dataset, provenance dict)``."""
    import datasets

    final = Path(ws.path) / "labels" / name
    if not final.exists():
        have = sorted(p.name for p in (Path(ws.path) / "labels").glob("[!.]*")) if (Path(ws.path) / "labels").exists() else []
        raise CurateError(f"{ws.path}: no label set {name!r}; have {have}")
    return datasets.load_from_disk(str(final)), json.loads((final / "provenance.json").read_text())


def build_labels(seeds: Iterable[Any], backend: Any, kind: str = "complexity", steps: int = 5, seed: int = 0,
                 cache_path: str | os.PathLike | None = None, workspace: Any = None, name: str | None = None,
                 **kwargs: Any):
    """Evol labels for training a small scorer: a ``datasets.Dataset`` of (text, score, seed_id, step,
    operation[, instruction]).

    With ``workspace`` the set is also stored under ``workspace.path/labels/<name>`` (default
    ``evol_<kind>``) with its provenance, and the LLM cache defaults to the workspace's cache folder.
    Other keyword arguments go to `run_evol`.
    """
    if cache_path is None:
        if workspace is None:
            raise CurateError("build_labels needs cache_path or a workspace (whose cache folder is used)")
        cache_path = default_cache_path(workspace)
    run = run_evol(seeds, backend, kind=kind, steps=steps, seed=seed, cache_path=cache_path, **kwargs)
    if workspace is not None:
        save_labels(workspace, name or f"evol_{kind}", run)
    return run.labels


def default_cache_path(ws: Any) -> Path:
    """The LLM response cache of a workspace (the one `curate.llm.judges.score` uses too)."""
    from curate.llm.judges import workspace_cache_path

    return workspace_cache_path(ws)


def sample_seeds(ws: Any, n: int, *, kind: str = "complexity", seed: int = 0) -> list[dict[str, Any]]:
    """A seeded random sample of ``n`` pool rows (``id``, ``conversation``) to evolve.

    For quality labels only rows whose first user turn has a non-empty response are candidates.
    """
    from curate.pools import user_turns

    if kind not in KINDS:
        raise CurateError(f"kind must be one of {KINDS}, not {kind!r}")
    pool = ws.pool
    conversations = pool["conversation"]
    candidates = list(range(len(pool)))
    if kind == "quality":
        candidates = [i for i in candidates
                      if (turns := user_turns(conversations[i])) and (turns[0][1] or "").strip()]
    if n > len(candidates):
        raise CurateError(f"{ws.path}: asked for {n} seeds, the pool has {len(candidates)} usable rows")
    picked = sorted(random.Random(derive_seed(seed, "seeds")).sample(candidates, n))
    ids = pool["id"]
    return [{"id": ids[i], "conversation": conversations[i]} for i in picked]


def print_run_summary(run: EvolRun, console: Any) -> None:
    """Requests, tokens, eliminated share by reason and the score distribution, for the CLI."""
    p = run.provenance
    http = f" ({p['backend_requests_sent']:,} HTTP)" if "backend_requests_sent" in p else ""
    console.print(f"evol {p['kind']}: {p['seeds']} seeds x {p['steps']} steps; "
                  f"requests {p['requests']:,} new{http}, {p['cached']:,} cached; tokens {p['prompt_tokens']:,} prompt + "
                  f"{p['completion_tokens']:,} completion; cost ${p['cost_usd']:.4f}")
    rewrites = p["rewrites"] or 1
    console.print(f"eliminated {p['eliminated']}/{p['rewrites']} rewrites ({p['eliminated'] / rewrites:.0%})")
    for reason, count in p["eliminated_by_reason"].items():
        console.print(f"  {reason:<12} {count:>5}  {count / rewrites:6.1%}")
    console.print(f"variant sets scored {p['sets_scored']}/{p['seeds']}; rank failures {p['rank_failures']}"
                  + (f" {p['rank_failures_by_reason']}" if p["rank_failures"] else ""))
    dist = p["score_distribution"]
    console.print("score distribution: " + (", ".join(f"{k}: {v}" for k, v in dist.items()) or "no scores"))
