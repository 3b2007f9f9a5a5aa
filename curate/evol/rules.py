"""Evol's pure rules: operations, elimination of failed rewrites, seeded choices, shuffle/unshuffle, score checks.

A rewrite is dropped when it is empty, holds no content word (only punctuation, function words or numbers),
leaks the rewriter's scaffolding (the generic markers below, the operation's own ``leak_phrases`` declared in
its prompt file's front matter, or a run of words copied from the rewrite prompt), refuses, is a response under 80
words that says "sorry" (WizardLM's sign of a model that could not answer: Evol Quality's rewrites are the only
responses Evol makes), does not change its parent, shrank to under half of it (a rewrite whose prompt keeps all of
its parent and adds to it: it lost its parent's content), goes round in a loop, grows too much, or was cut off at
max_tokens: WizardLM's elimination rules, read without an LLM.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

import regex
from pydantic import BaseModel, Field, conlist, create_model

from curate.defaults import HEURISTICS
from curate.errors import CurateError
from curate.evol.function_words import FUNCTION_WORDS

KINDS = ("complexity", "quality")
#: Evol-Instruct operations: four in-depth rewrites and the in-breadth one (prompt files prompts/evol/<op>.md).
IN_DEPTH_OPERATIONS = ("add_constraint", "deepen", "concretize", "reasoning")
INSTRUCTION_OPERATIONS = (*IN_DEPTH_OPERATIONS, "breadth")
#: Evol-Quality operations: rewrite a response to be more helpful / relevant / in-depth / creative / detailed.
RESPONSE_OPERATIONS = ("response_helpful", "response_relevant", "response_deepen", "response_creative",
                       "response_detailed")
# Operations whose prompt keeps all of the parent and adds to it: a rewrite under half of it lost content. Not
# concretize (a specific word replaces a general phrase), breadth (a new task), response_relevant (cuts what is off
# topic) or response_creative (says it again as an image or a hook): each may rightly come out shorter.
_GROWING_OPERATIONS = frozenset(("add_constraint", "deepen", "reasoning", "response_helpful", "response_deepen",
                                 "response_detailed"))
_SORRY = re.compile(r"\bsorry\b", re.IGNORECASE)
RANK_PROMPTS = {"complexity": "rank_complexity", "quality": "rank_quality"}


class Elimination(StrEnum):
    """Why a rewrite was dropped (recorded on the variant, counted in the provenance)."""
    EMPTY = "empty"
    NO_CONTENT = "no_content"  # only punctuation, function words or numbers (WizardLM's rule 3; a one-digit "rewrite")
    SCAFFOLDING = "scaffolding"
    REFUSAL = "refusal"
    SHORT_SORRY = "short_sorry"  # a response rewrite under 80 words saying "sorry" (WizardLM's rule on responses)
    NO_CHANGE = "no_change"
    SHRANK = "shrank"  # an adding rewrite (_GROWING_OPERATIONS) under half its parent's words: information lost
    REPEATED_TAIL = "repeated_tail"  # the heuristics selector's loop rule, at the end of any line or sentence
    TOO_LONG = "too_long"
    TRUNCATED = "truncated"
    CALL_FAILED = "call_failed"


class RankFailure(StrEnum):
    """Why a variant set has no scores."""
    TOO_FEW_VARIANTS = "too_few_variants"   # every rewrite was eliminated: nothing to compare
    JUDGE_FAILED = "judge_failed"           # the rank call failed (detail: its failure code and message)
    BAD_SCORES = "bad_scores"               # wrong count, non-integer or out of range
    NOT_ANSWERED = "not_answered"           # a call of the chain got no answer (transient, or max_cost reached):
                                            # the chain stops there, and a re-run finishes it from the cache


# -- the rank-and-score reply (its schema is sent with the request: keep its text minimal) --------------
class VariantScores(BaseModel):
    """Rank-and-score reply."""

    scores: list[int]


def rank_model(n_variants: int, scale_max: int) -> type[VariantScores]:
    """`VariantScores` narrowed to exactly ``n_variants`` scores in 1..``scale_max``: the json schema of a rank
    call, so a guided-decoding server can only produce a usable reply (still checked with `check_scores`)."""
    score = Annotated[int, Field(ge=1, le=scale_max)]
    return create_model(f"VariantScores{n_variants}of{scale_max}", __base__=VariantScores,
                        scores=(conlist(score, min_length=n_variants, max_length=n_variants), ...))


# -- elimination ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EliminationRules:
    """Limits for dropping a failed rewrite.

    A child may add at most ``max_added_words + length_tolerance * parent_words`` words to its parent;
    it counts as unchanged when its normalised word sequence matches the parent's with a
    ``difflib`` ratio of at least ``near_equal_ratio``; it loops when a line or sentence of it ends in one block of words
    repeated over more than ``max_loop_words`` words (the heuristics' ``repeated_tail`` rule; None: no check); a
    rewrite whose prompt adds to its parent (add_constraint, deepen, reasoning, response_helpful, response_deepen,
    response_detailed) shrank when it has fewer than ``min_kept_ratio`` times its parent's words (None: no check);
    a response rewrite of fewer than ``short_sorry_words`` words that says "sorry" (and its parent does not) is
    WizardLM's response of a model that could not answer (None: no check).
    """

    max_added_words: int = 20
    length_tolerance: float = 0.1
    near_equal_ratio: float = 0.95
    max_loop_words: int | None = 5
    min_kept_ratio: float | None = 0.5
    short_sorry_words: int | None = 80

    def allowed_words(self, parent_words: int) -> int:
        return int(self.max_added_words + self.length_tolerance * parent_words)


#: Defaults per kind: an instruction step adds ~10-20 words (DEITA); a response rewrite may grow more. An
#: instruction of 10-60 words that says a clause again ("Bran: Ashram" x3) loops; a response loops as the heuristics
#: selector counts it (a list or table repeats its structure, not its words, for that long).
DEFAULT_RULES = {
    "complexity": EliminationRules(max_added_words=20, length_tolerance=0.1, near_equal_ratio=0.95, max_loop_words=5),
    "quality": EliminationRules(max_added_words=150, length_tolerance=0.5, near_equal_ratio=0.98,
                                max_loop_words=HEURISTICS.max_repeated_tail_words),
}

_WORD = regex.compile(r"[\p{L}\p{N}\p{M}]+")  # a letter keeps its combining marks (Hindi, Tamil: re split there)
#: A rewrite that opens by refusing.
REFUSAL = re.compile(
    r"^\W*(i'?m sorry|i am sorry|sorry\b|i apologi[sz]e|"
    # "I can't" opens a user's own question too ("I can't get my script to start"): a refusal names what it won't do
    r"(i cannot|i can'?t|i can not|i won'?t|i will not|i'?m unable to|i am unable to|i'?m not able to|i am not able to)"
    r" (help|assist|do that|do this|comply|fulfil+|provide|complete|rewrite|create|write|answer|generate)\b|"
    r"as an ai\b|as a language model|unfortunately,? i\b)",
    re.IGNORECASE)
# Generic scaffolding of rewrite prompts (WizardLM-style markers, and the task frame all of ours share), for
# every operation; each operation's own wording is its prompt file's ``leak_phrases``. A phrase only counts
# as a leak when the parent does not contain it.
SCAFFOLDING = (
    r"#\s*[a-z ]{0,30}(prompt|instruction|task|response|answer)\s*#",
    r"\b(rewritten|given|original|created|evolved|improved|revised)\s+(prompt|instruction|task|response|answer)\b",
    r"\b(rewritten|evolved|improved|revised)\s+version\b",  # "the original version of the change" is plain prose
    r"\bhere(?:'s| is) (?:the|a|an|my) (?:new|rewritten|revised|improved|modified|updated|better|harder)\b",
    r"\bin-?(depth|breadth) (evolution|operation|step|rewrite)\b",
    r"\bextra requirement\b",
    r"\bevol(ved|ution)?[- _]instruct\b",
    # a rewrite that opens with a label; further down, "**Answer:** 42" is an answer's own formatting
    r"\A\W*(new |rewritten |revised |improved |updated )?(task|instruction|prompt|question|answer|response)\s*\d*\s*:",
    r"\[(version|answer) \d+\]",
)
_FLAGS = re.IGNORECASE | re.MULTILINE
#: A run of this many words shared with the rewrite prompt's own text (and not in the parent) is a leak.
SCAFFOLD_NGRAM = 6


def leak_phrases(prompt: Any) -> tuple[str, ...]:
    """A rewrite prompt's ``leak_phrases`` (regexes in its front matter), checked to compile."""
    phrases = (getattr(prompt, "declaration", None) or {}).get("leak_phrases") or []
    where = getattr(prompt, "where", "prompt")
    if not isinstance(phrases, list) or not all(isinstance(p, str) for p in phrases):
        raise CurateError(f"{where}: leak_phrases must be a list of regular expressions")
    for p in phrases:
        try:
            re.compile(p, _FLAGS)
        except re.error as exc:
            raise CurateError(f"{where}: leak phrase {p!r} is not a regular expression: {exc}") from None
    return tuple(phrases)


@functools.lru_cache(maxsize=32)
def builtin_leak_phrases(operation: str) -> tuple[str, ...]:
    """The ``leak_phrases`` of the built-in prompt of ``operation`` (none for an unknown operation)."""
    from curate.llm.prompts import builtin_prompt_dir, load_prompt

    path = builtin_prompt_dir() / "evol" / f"{operation}.md"  # by path: no user folder (or a stale one) is read
    return leak_phrases(load_prompt(path)) if path.is_file() else ()


def content_words(words: Sequence[str]) -> list[str]:
    """The words of ``words`` (normalised) that are neither English function words (:data:`FUNCTION_WORDS`: no
    content word such as "describe" or "system") nor numbers."""
    return [w for w in words if w not in FUNCTION_WORDS and not w.isnumeric()]


def normalise(text: str) -> list[str]:
    """Lower-cased word tokens (punctuation and spacing dropped): the unit of the no-change and length rules."""
    return _WORD.findall(text.lower())


def clean_rewrite(text: str | None) -> str:
    """Strip spacing and one pair of quotes wrapped around the whole rewrite."""
    out = (text or "").strip()
    if len(out) >= 2 and out[0] == out[-1] and out[0] in "\"'`":
        out = out[1:-1].strip()
    return out


_LINE_OR_SENTENCE_END = re.compile(r"(?<=[^\n])\n|(?<=[.!?;])\s")  # where a loop that went on may have stopped


def looping_line(text: str, max_words: int) -> dict[str, Any] | None:
    """{value, evidence} of the first loop a line or sentence of ``text`` ends in (the text up to each line break
    and each sentence's end, then the whole): the heuristics' ``repeated_tail`` rule
    (:func:`curate.select.heuristics.looping_tail`), which reads only a text's end, applied where a rewrite that
    looped and then went on ("Bran: Ashram" x3, then a request) stopped looping; else None. A run of one symbol
    ("________" to fill in, a "==========" rule) is layout, not a loop."""
    from curate.select.heuristics import looping_tail

    ends = sorted({m.start() for m in _LINE_OR_SENTENCE_END.finditer(text)} | {len(text)})
    for end in ends:
        loop = looping_tail(text[:end], max_words)
        if loop and _WORD.search(loop["evidence"].rsplit(" (x", 1)[0]):
            return loop
    return None


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


@functools.lru_cache(maxsize=64)
def _prompt_ngrams(prompt_text: str) -> frozenset[tuple[str, ...]]:
    # A rewrite prompt is the same for every row of an operation: split it into n-grams once.
    return frozenset(_ngrams(normalise(prompt_text), SCAFFOLD_NGRAM))


def elimination_reason(parent: str, child: str | None, *, operation: str | None = None,
                       rules: EliminationRules = DEFAULT_RULES["complexity"], truncated: bool = False,
                       prompt_text: str | None = None, phrases: Sequence[str] | None = None
                       ) -> tuple[Elimination, str] | None:
    """Why ``child`` (a rewrite of ``parent``) must be dropped, as ``(code, detail)``; None if it survives.

    Codes (:class:`Elimination`): ``empty``, ``no_content`` (only punctuation, function words or numbers, where the
    parent has a content word), ``scaffolding`` (the rewriter leaked a generic marker, one of
    ``phrases`` — default: the built-in ``operation`` prompt's ``leak_phrases`` — or copied a run of
    `SCAFFOLD_NGRAM` words from ``prompt_text``, the rewrite prompt's own wording and examples),
    ``refusal``, ``short_sorry`` (a response ``operation``'s rewrite under ``rules.short_sorry_words`` words that
    says "sorry" where its parent does not), ``no_change`` (normalised text equal or near-equal), ``shrank`` (an
    adding ``operation``'s rewrite under ``rules.min_kept_ratio`` of its parent's words), ``repeated_tail`` (a line or sentence of
    it ends in a loop of more than ``rules.max_loop_words`` words, and none of the parent does: :func:`looping_line`),
    ``too_long`` (more words added than the rules allow), ``truncated`` (the generation stopped at max_tokens: the rewrite is cut off).
    """
    text = clean_rewrite(child)
    child_words = normalise(text)
    if not child_words:
        return (Elimination.EMPTY, "the rewrite has no words")
    parent_words = normalise(parent)
    if not content_words(child_words) and content_words(parent_words):
        return (Elimination.NO_CONTENT, f"only punctuation, function words or numbers: {text[:60]!r}")
    if phrases is None:
        phrases = builtin_leak_phrases(operation) if operation else ()
    for pat in (*SCAFFOLDING, *phrases):
        match = re.search(pat, text, _FLAGS)
        if match and not re.search(pat, parent, _FLAGS):
            return (Elimination.SCAFFOLDING, f"leaked {match.group(0)!r}")
    if prompt_text:
        copied = (_ngrams(child_words, SCAFFOLD_NGRAM) & _prompt_ngrams(prompt_text)) \
            - _ngrams(parent_words, SCAFFOLD_NGRAM)
        if copied:
            return (Elimination.SCAFFOLDING, f"copied from the rewrite prompt: {' '.join(min(copied))!r}")
    if REFUSAL.search(text) and not REFUSAL.search(parent):
        return (Elimination.REFUSAL, f"starts {text[:60]!r}")
    if rules.short_sorry_words is not None and operation in RESPONSE_OPERATIONS \
            and len(child_words) < rules.short_sorry_words and (sorry := _SORRY.search(text)) \
            and not _SORRY.search(parent):
        return (Elimination.SHORT_SORRY, f"a {len(child_words)}-word response (under {rules.short_sorry_words}) "
                                         f"that says {sorry.group(0)!r}: a model that could not answer")
    if parent_words == child_words:
        return (Elimination.NO_CHANGE, "same text as the parent after normalisation")
    ratio = difflib.SequenceMatcher(None, parent_words, child_words, autojunk=False).ratio()
    if ratio >= rules.near_equal_ratio:
        return (Elimination.NO_CHANGE, f"near-equal to the parent (word ratio {ratio:.3f} >= {rules.near_equal_ratio})")
    if rules.min_kept_ratio is not None and operation in _GROWING_OPERATIONS \
            and len(child_words) < rules.min_kept_ratio * len(parent_words):
        return (Elimination.SHRANK, f"{len(child_words)} words where its parent has {len(parent_words)}: "
                                    f"{operation} keeps its parent and adds to it")
    if rules.max_loop_words and (loop := looping_line(text, rules.max_loop_words)) \
            and not looping_line(parent, rules.max_loop_words):
        return (Elimination.REPEATED_TAIL, f"loops: {loop['evidence']}")
    added, allowed = len(child_words) - len(parent_words), rules.allowed_words(len(parent_words))
    if added > allowed:
        return (Elimination.TOO_LONG, f"adds {added} words; {allowed} allowed for a {len(parent_words)}-word parent")
    if truncated:
        return (Elimination.TRUNCATED, "generation stopped at max_tokens; the rewrite is cut off")
    return None


# -- seeded choices, shuffling -------------------------------------------------------------------------
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
