"""Decisions and failures as data: small enums plus details, rendered to text for people here only.

Selectors store ``(decision, reason code, detail)`` per row and steps store ``(code, message, raw)``
per failed turn; the report and the notebook group by code and call :func:`describe` for the words.
Nothing parses prose back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from textwrap import shorten
from typing import Any


class Decision(StrEnum):
    """What a selector did with one row: kept it; refused it (``rejected``: too similar, failed a rule, below a
    threshold...; ``duplicate``: a copy of a kept row); left it because its budget filled first (``not_reached``,
    whatever the selector: the walk stopped, the draw or the cluster's quota was full); or could not rank it."""
    KEPT = "kept"
    REJECTED = "rejected"
    DUPLICATE = "duplicate"
    NOT_REACHED = "not_reached"
    UNSCORED = "unscored"


REFUSED = frozenset({Decision.REJECTED, Decision.DUPLICATE})  # turned away for what the row is, not for the budget


class Reason(StrEnum):
    """Why a selector decided what it did about one row (details in the row's ``detail`` dict)."""
    SELECTED = "selected"                  # kept; detail: score, rank
    TOO_SIMILAR = "too_similar"            # detail: similarity, witness (id of the kept row), max_cosine_similarity
    EXACT_DUPLICATE = "exact_duplicate"    # detail: witness
    NEAR_DUPLICATE = "near_duplicate"      # minhash/semantic; detail: witness, similarity
    BUDGET_FILLED = "budget_filled"        # not_reached: the budget filled first (walk, ranking or draw); detail: budget
    BELOW_THRESHOLD = "below_threshold"    # detail: score, min_score
    NO_SCORE = "no_score"                  # the sort key is missing; detail: column(s), failure code
    NO_TAGS = "no_tags"                    # InsTag: the row has no tags
    NO_NEW_TAG = "no_new_tag"              # InsTag: adds no tag in any sweep before the budget
    QUOTA_FILLED = "quota_filled"          # not_reached, k-means: the cluster's quota is full; detail: cluster, quota
    NOT_SAMPLED = "not_sampled"            # stored before 2026-12 (random, dsir, kcenter, lift, necessity): read as
                                           # budget_filled (:func:`settled`); no selector writes it
    NOT_IN_INPUT = "not_in_input"          # outside the input selection
    IFD_AT_LEAST_ONE = "ifd_at_least_one"  # IFD >= max_ifd: the instruction does not help; detail: score, max_ifd
    OUTSIDE_BAND = "outside_band"          # perplexity outside the kept quantile band; detail: score, low, high
    PRUNED_EASY = "pruned_easy"            # EL2N / GraNd: among the easiest rows (lowest score); detail: score, keep
    HARD_TO_LEARN = "hard_to_learn"        # Cartography hard region / the hardest EL2N rows (often label noise)
    CONTAMINATED = "contaminated"          # holds an evaluation text; detail: target, shared_words or similarity
    FAILS_HEURISTIC = "fails_heuristic"    # breaks a text rule; detail: rule, turn, evidence, rules_failed
    ANSWERED_WELL = "answered_well"        # MoDS: the seed model already answers it; detail: answer_score, limit
    BUDGET_COVERS_ALL = "budget_covers_all"  # kept: the budget (or fraction) keeps every eligible row, so the model
                                           # work that ranks them (LESS, Instruction Mining, training) was not run;
                                           # detail: keep, eligible
    LEGACY_REASON = "legacy_reason"        # stored by a curate before reason codes (2026-11); detail: text (its words)


class FailureCode(StrEnum):
    """Why a step has no value for a row or turn."""
    NO_USER_TURN = "no_user_turn"
    NO_RESPONSE = "no_response"            # the turn has no (or an empty) assistant reply
    LOW_DIGIT_MASS = "low_digit_mass"      # the scale's digits carry too little probability; detail in message
    NO_LOGPROBS = "no_logprobs"            # logprobs were asked for and the reply has none (a proxy dropped them)
    NO_TOP_LOGPROBS = "no_top_logprobs"    # top logprobs were asked for and the reply has the sampled token's alone
    UNPARSABLE = "unparsable"              # no score/JSON could be read from the reply
    INVALID_OUTPUT = "invalid_output"      # JSON that fails its schema after the re-asks
    HTTP_ERROR = "http_error"              # a permanent HTTP status (4xx other than 408/409/429)
    CONTEXT_TOO_LONG = "context_too_long"  # the server's 400: the row (prompt + max_tokens) exceeds its context
    TRANSIENT = "transient"                # 429 / 5xx / timeout / connection / malformed body, retries spent
    BUDGET = "budget"                      # not sent: max_cost reached
    EMPTY_INPUT = "empty_input"            # nothing to read (empty text)
    MODEL_ERROR = "model_error"            # the local model / engine failed on this input
    NO_INPUT_VALUE = "no_input_value"      # a column the step reads has no number for this turn
    TRUNCATED = "truncated"                # an output stopped at max_tokens: cut off text or unfinished JSON (raw: it)
    REFUSED = "refused"                    # the model declined (the API's refusal) or a content filter stopped it
    EMPTY_OUTPUT = "empty_output"          # a text prompt (or a digit judge: no logprobs either) answered with no text
    ECHOED_EXAMPLE = "echoed_example"      # tags equal to a few-shot example's of the prompt, for another query (raw: reply)
    NOT_FINITE = "not_finite"              # the step gave NaN or an infinity, kept as no value (raw: what it gave)
    LEGACY_FAILURE = "legacy_failure"      # recorded by a curate before reason codes (2026-11): its text, no code


class DamageCode(StrEnum):
    """Why a workspace file (a derived column's, a selection's, a label set's) cannot be read
    (:mod:`curate.storage.damage`)."""
    NOT_ARROW = "not_arrow"                # cut short or overwritten: no readable Arrow file; detail: pyarrow's words
    BAD_METADATA = "bad_metadata"          # its curate metadata (the provenance) is not JSON; detail: the file, if not it
    MISSING_FILES = "missing_files"        # a label set's data files are gone; detail: those missing
    NOT_A_SELECTION = "not_a_selection"    # in selections/ without a selection's columns; detail: those missing
    WRONG_ROWS = "wrong_rows"              # a selection holding other rows than its metadata records; detail: counts
    NOT_WRITTEN = "not_written"            # its bytes differ from those written (overwritten in place); detail: checksums


def settled(decision: Decision | str, reason: Reason | str) -> tuple[Decision, Reason]:
    """The one code of a row's situation: a row left because the budget filled first is ``not_reached`` /
    ``budget_filled`` under every selector (``top_k`` said ``rejected`` / ``budget_filled``, ``kcenter``, ``random``,
    ``lift``, ``dsir`` and ``necessity`` ``rejected`` / ``not_sampled``) and one left by a full cluster quota is
    ``not_reached`` / ``quota_filled`` (it was ``rejected``). Every selector's result and every stored selection,
    those written before (2026-12) too, are read through this."""
    decision, reason = Decision(decision), Reason(reason)
    if decision is Decision.KEPT:
        return decision, reason
    if reason in (Reason.BUDGET_FILLED, Reason.NOT_SAMPLED):
        return Decision.NOT_REACHED, Reason.BUDGET_FILLED
    if reason is Reason.QUOTA_FILLED:
        return Decision.NOT_REACHED, reason
    return decision, reason


TRANSIENT_FAILURES = frozenset({FailureCode.TRANSIENT, FailureCode.BUDGET})


def unreached_rows(failures: list[list[Any]]) -> list[Any]:
    """The first ``transient`` failure of each row that has one (retries spent on 429/5xx/timeouts/connection
    errors): rows the judge never answered, which a re-run may still score."""
    return [next(f for f in fails if f.code is FailureCode.TRANSIENT)
            for fails in failures if any(f.code is FailureCode.TRANSIENT for f in fails)]


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis, closing the parentheses the cut left open (a failure
    message cut inside its ``(output 'The' ...)`` read as an unclosed parenthesis before the text after it)."""
    if len(text) <= limit:
        return text
    cut = text[:limit].rstrip() + "…"
    return cut + ")" * max(0, cut.count("(") - cut.count(")"))


def unknown_cost(models: list[Any]) -> str:
    """``cost unknown``, naming the models without a known price (none named: a run without one)."""
    named = ", ".join(sorted({str(m) for m in models if m}))
    return f"cost unknown (no price known for {named})" if named else "cost unknown (a run without a price)"


@dataclass(frozen=True)
class Failure:
    code: FailureCode
    message: str
    raw: str | None = None
    turn: int | None = None  # 1-based; None for row-level steps

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["code"] = self.code.value
        if d["raw"] is not None and not isinstance(d["raw"], str):  # the column stores raw output as text
            d["raw"] = json.dumps(d["raw"], ensure_ascii=False, default=str)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Failure:
        return cls(FailureCode(d["code"]), d.get("message") or "", d.get("raw"), d.get("turn"))

    def __str__(self) -> str:
        where = f"turn {self.turn}: " if self.turn is not None else ""
        return f"{where}{self.message}"


_REASON_TEXT = {
    Reason.SELECTED: "selected",
    Reason.TOO_SIMILAR: "too similar to a kept row",
    Reason.EXACT_DUPLICATE: "exact duplicate of a kept row",
    Reason.NEAR_DUPLICATE: "near-duplicate of a kept row",
    Reason.BUDGET_FILLED: "budget filled before this row",
    Reason.BELOW_THRESHOLD: "score below the threshold",
    Reason.NO_SCORE: "no score",
    Reason.NO_TAGS: "no tags",
    Reason.NO_NEW_TAG: "adds no new tag before the budget",
    Reason.QUOTA_FILLED: "its cluster's quota is full",
    Reason.NOT_SAMPLED: "not sampled",
    Reason.NOT_IN_INPUT: "not in the input selection",
    Reason.IFD_AT_LEAST_ONE: "IFD at or above the limit: the instruction does not help",
    Reason.OUTSIDE_BAND: "outside the kept band",
    Reason.PRUNED_EASY: "pruned: among the easiest rows to learn",
    Reason.HARD_TO_LEARN: "hard to learn (low confidence): often a noisy label",
    Reason.CONTAMINATED: "matches an evaluation text",
    Reason.FAILS_HEURISTIC: "fails a text rule",
    Reason.ANSWERED_WELL: "the seed model already answers it well",
    Reason.BUDGET_COVERS_ALL: "kept: the budget covers every eligible row (no model run to rank them)",
    Reason.LEGACY_REASON: "recorded in words by a curate before reason codes (2026-11)",
}


def _apart(value: float, bound: Any) -> tuple[str, str]:
    """Two numbers as text, 4 significant digits, or as many as it takes for the text to show they differ."""
    if not isinstance(bound, int | float):
        return f"{value:.4g}", str(bound)
    for digits in (4, 6, 8, 17):
        a, b = f"{value:.{digits}g}", f"{bound:.{digits}g}"
        if a != b:
            break
    return a, b


OUTCOME_WORDS = {"refused": "refused", "not_reached": "not reached (budget filled first)", "unscored": "unscored"}


def outcomes_text(outcomes: dict[str, int]) -> str:
    """'61 refused, 1,894 not reached (budget filled first)': a selection's rows not kept (``Selection.outcomes``),
    refused apart from those its budget never reached, in the words curate select and the report both print."""
    return ", ".join(f"{outcomes[key]:,} {words}" for key, words in OUTCOME_WORDS.items() if outcomes.get(key))


def reason_text(code: Reason | str) -> str:
    """The group label of a reason code, for tables."""
    return _REASON_TEXT[Reason(code)]


def describe(code: Reason | str, detail: dict[str, Any] | None = None) -> str:
    """One row's reason in words, from its code and details (for the notebook and the report); a row an earlier
    step of a chain dropped names that step."""
    d = detail or {}
    text = _describe(Reason(code), d)
    return f"{text}, at step {d['step']}" if d.get("step") else text


def _describe(code: Reason, d: dict[str, Any]) -> str:
    text = _REASON_TEXT[code]
    if code is Reason.TOO_SIMILAR and "similarity" in d:
        return f"{text} ({str(d.get('witness', ''))[:12]}, cosine {d['similarity']:.4f} > {d.get('max_cosine_similarity', '')})"
    if code in (Reason.EXACT_DUPLICATE, Reason.NEAR_DUPLICATE) and d.get("witness"):
        sim = f", similarity {d['similarity']:.3f}" if "similarity" in d else ""
        return f"{text} ({str(d['witness'])[:12]}{sim})"
    if code is Reason.BELOW_THRESHOLD and "score" in d:
        score, bound = _apart(d["score"], d.get("min_score"))
        return f"{text} ({score} < {bound})"
    if code is Reason.QUOTA_FILLED and "cluster" in d:
        return f"{text} (cluster {d['cluster']}, quota {d.get('quota')})"
    if code is Reason.IFD_AT_LEAST_ONE and "score" in d:
        return f"{text} (IFD {d['score']:.3f} >= {d.get('max_ifd')})"
    if code is Reason.OUTSIDE_BAND and "score" in d:
        return f"{text} ({d['score']:.4g} not in [{d.get('low', float('nan')):.4g}, {d.get('high', float('nan')):.4g}])"
    if code is Reason.CONTAMINATED and "similarity" in d:
        return f"{text} (target {d.get('target')}: cosine {d['similarity']:.4f} > {d.get('max_cosine_similarity')})"
    if code is Reason.CONTAMINATED and "target" in d:
        return f"{text} (target {d['target']}: \"{shorten(str(d.get('shared_words', '')), 60, placeholder=' …')}\")"
    if code is Reason.FAILS_HEURISTIC and "rule" in d:
        where = f", turn {d['turn']}" if "turn" in d else ""
        said = f": {shorten(str(d['evidence']), 60, placeholder=' …')}" if d.get("evidence") else ""
        return f"{text} ({d['rule'].replace('_', ' ')}{where}{said})"
    if code is Reason.ANSWERED_WELL and "answer_score" in d:
        return f"{text} (its answer scored {d['answer_score']:.3f} >= {d.get('max_answer_score')})"
    if code is Reason.LEGACY_REASON and d.get("text"):
        return str(d["text"])
    if code is Reason.NO_SCORE and d.get("failure"):
        return f"{text}: {d['failure']}"
    if code is Reason.BUDGET_FILLED and "distance" in d:  # k-center (MoDS' too): picked farthest first, not by score
        near = f" {str(d['witness'])[:12]}" if d.get("witness") else ""
        return (f"budget filled by farthest-first picks before this row (cosine distance {d['distance']:.3f} to its "
                f"nearest centre{near})")
    if code in (Reason.SELECTED, Reason.NOT_SAMPLED, Reason.BUDGET_FILLED) and d.get("score") is not None:
        return f"{text} (score {d['score']:.3f})"
    return text
