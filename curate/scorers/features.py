"""What a scorer reads: the texts of a turn, and the features computed from them.

A scorer reads one or two texts of a turn (``inputs``: the instruction, and for quality also the
response; see :class:`curate.rows.Turn`) and turns them into features: MiniLM embeddings, their
element-wise product, log lengths, and cheap text statistics (:func:`text_stats`) of the judged text;
optionally numeric workspace columns of the turn (``columns``: e.g. the token signals ``ifd``,
``ifd_loss_conditioned``), which ``ws.apply`` hands the scorer as the step's declared inputs.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from curate.errors import ScorerError
from curate.rows import Turn, as_turns

INPUTS = ("instruction", "response")
FEATURES = ("embeddings", "product", "length", "stats", "requirements")

# What a user may hand ``fit``/``predict``: a Turn, a plain instruction, a dict (an instruction/response
# record, a label record with ``text``, or ``{"conversation": ...}``), or a one-turn conversation.
Row = str | Turn | Mapping[str, Any] | Sequence[Mapping[str, str]]


# -- the texts of a turn -----------------------------------------------------------------------------
def to_turn(row: Row) -> Turn:
    """The one turn a row holds.

    A label record (a ``text`` column, as Evol labels have) reads ``text`` as the judged text: the
    response when the record also has ``instruction`` (quality labels), else the instruction
    (complexity labels, optionally with a ``response``). Anything else goes through
    :func:`curate.rows.as_turns`. A row of several turns is an error: score conversations per turn
    with ``ws.apply(scorer)``, or pass their turns (``curate.rows.turns(conversation)``).
    """
    if isinstance(row, Mapping) and "text" in row and "conversation" not in row:
        if row.get("instruction") is not None:
            return Turn(row["instruction"], row["text"])
        return Turn(row["text"], row.get("response"))
    turns = as_turns(row)
    if len(turns) != 1:
        raise ScorerError(f"a row with {len(turns)} user turns; a scorer scores one turn: pass the turns "
                          "(curate.rows.turns(conversation)) or score a workspace with ws.apply(scorer)")
    return turns[0]


def turn_text(turn: Turn, name: str) -> str | None:
    if name not in INPUTS:
        raise ScorerError(f"unknown input {name!r}; a scorer reads {list(INPUTS)}")
    return turn.instruction if name == "instruction" else turn.response


def missing_inputs(turn: Turn, inputs: Sequence[str]) -> list[str]:
    """The inputs a turn lacks (None, empty or only whitespace): such a turn gets a failure, never a score."""
    return [name for name in inputs if not (turn_text(turn, name) or "").strip()]


def unreadable(turn: Turn, inputs: Sequence[str], numbers: dict[str, float | None]) -> str | None:
    """Why a scorer reading ``inputs`` and columns ``numbers`` (name -> this turn's number) cannot read ``turn``
    (a text absent, a column without a number), or None when it can."""
    missing = missing_inputs(turn, inputs)
    if missing:
        return f"no {' or '.join(missing)}"
    absent = [name for name, value in numbers.items() if value is None]
    return f"no number in column {', '.join(absent)}" if absent else None


def input_texts(rows: Sequence[Row], inputs: Sequence[str]) -> dict[str, list[str]]:
    """The texts a scorer reads, one list per input name, aligned to ``rows`` (see :func:`to_turn`)."""
    rows = list(rows)
    if rows and isinstance(rows[0], str) and len(inputs) != 1:
        raise ScorerError(f"this scorer reads {list(inputs)}; pass rows (dicts or conversations), not strings")
    out: dict[str, list[str]] = {name: [] for name in inputs}
    for i, row in enumerate(rows):
        turn = to_turn(row)
        for name in inputs:
            text = turn_text(turn, name)
            if not (text or "").strip():
                raise ScorerError(f"row {i} has no {name} (none, or only whitespace); this scorer reads {list(inputs)}")
            out[name].append(text)
    return out


def column_values(rows: Sequence[Row], columns: Sequence[str]) -> np.ndarray:
    """The numeric column features of each row (one per name in ``columns``), from dict rows that carry them
    (``{"instruction": ..., "response": ..., "ifd": 0.8}``); a row without a finite number is an error, never
    a default (``ws.apply(scorer)`` records a failure for such a turn before it gets here)."""
    out = np.zeros((len(rows), len(columns)), dtype=np.float64)
    for i, row in enumerate(rows):
        for j, name in enumerate(columns):
            value = finite_number(row.get(name) if isinstance(row, Mapping) else None)
            if value is None:
                raise ScorerError(f"row {i} has no number in column {name!r}; this scorer reads columns "
                                  f"{list(columns)}: pass dict rows that carry them")
            out[i, j] = value
    return out


def with_columns(turn: Turn, numbers: Mapping[str, float | None]) -> Row:
    """A turn as the row a scorer reads: the turn itself, or with ``numbers`` (its columns' values) the dict row
    that carries them (:func:`column_values`)."""
    return {"instruction": turn.instruction, "response": turn.response, **numbers} if numbers else turn


def finite_number(value: Any) -> float | None:
    """``value`` as a float when it is a finite number (not a bool), else None."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    return float(value)


def label_values(rows: Sequence[Row], scores: Sequence[Any] | None) -> list[float]:
    """The labels a ``fit(rows, scores)`` learns from, as floats (``scores`` None: the rows' ``score`` fields); refused
    unless every one is a finite number, one per row, and two of them differ (checked before any text is read)."""
    if scores is None:
        if not all(isinstance(r, Mapping) and "score" in r for r in rows):
            raise ScorerError("fit(rows) without scores needs label records with a 'score' column "
                              "(e.g. ws.labels(name)); or pass fit(rows, scores)")
        scores = [r["score"] for r in rows]
    bad = next((i for i, s in enumerate(scores) if finite_number(s) is None), None)
    if bad is not None:
        raise ScorerError(f"score {bad} is {scores[bad]!r}: every score must be a finite number")
    if len(rows) != len(scores):
        raise ScorerError(f"{len(rows)} rows but {len(scores)} scores")
    if len({float(s) for s in scores}) < 2:  # no rows, one row, or one score
        raise ScorerError(f"fitting needs at least two rows with different scores, got {len(rows)} row(s)")
    return [float(s) for s in scores]


def turn_number(value: Any, t: int) -> float | None:
    """Turn ``t``'s number in a column's value for a row: a per-turn list (a turn step's column) or one row
    value; None when there is no finite number."""
    if isinstance(value, list):
        value = value[t] if t < len(value) else None
    return finite_number(value)


# -- cheap text statistics ---------------------------------------------------------------------------
_REFUSAL = re.compile(r"as an ai|language model|i'm sorry|i am sorry|i cannot|i can't|i apologi[sz]e")
_LIST_ITEM = re.compile(r"\s*([-*\u2022]|\d+[.)])\s")
_NUMBERED = re.compile(r"(?m)^\s*\d+[.)]")
_SENTENCE_END = re.compile(r"[.!?](\s|$)")
_PARAGRAPH = re.compile(r"\n\s*\n")
_WRAP_UP = re.compile(r"\b(in summary|in conclusion|overall|to summarize)\b")
_EXAMPLE = re.compile(r"\b(for example|for instance|such as|e\.g\.)\b")
_HEDGE = re.compile(r"\b(however|although|depends|note that)\b")
STAT_NAMES = ("log_lines", "list_items", "code_fence", "refusal", "distinct_words", "non_ascii", "ends_cleanly",
              "digits", "headings", "mean_word_len", "log_words_per_sentence", "paragraphs", "bold", "numbered_items",
              "sentences", "log_words", "mean_line_len", "log_max_line_len", "wrap_up", "hedge", "example")
PAIR_STAT_NAMES = ("log_length_ratio", "instruction_word_overlap", "cosine")
# Words that state a requirement (obligation, limits, exclusions, additions) in English prompts generally; an
# Evol rewrite adds them, politeness and context do not. Counted by :func:`requirement_stats`.
_REQUIREMENT_CUE = re.compile(
    r"\b(must|should|need to|needs to|make sure|ensure|be sure|required?|requirements?|has to|have to|at least|at most|"
    r"no more than|no fewer than|exactly|within|limit|limited|maximum|minimum|only|do not|don't|avoid|without|never|also|"
    r"additionally|furthermore|moreover|in addition|as well as|include|including|each|every|specific|specifically|"
    r"step by step|format|constraints?)\b")
_NUMBER = re.compile(r"\d+")
REQUIREMENT_NAMES = ("log_requirement_cues", "log_clause_marks", "log_numbers")


def text_stats(text: str) -> list[float]:
    """Surface statistics of one text (structure, refusals, repetition), in ``STAT_NAMES`` order.

    GPT-4 quality ratings follow structure (paragraphs, lists, sentences) more than raw length; these
    cheap counts carry that signal, which sentence embeddings of the first 256 tokens miss.
    """
    words = text.split()
    lines = text.splitlines()
    filled = [line for line in lines if line.strip()]
    lower = text.lower()
    n_chars = max(1, len(text))
    return [math.log1p(len(lines)), math.log1p(sum(bool(_LIST_ITEM.match(line)) for line in lines)),
            float("```" in text), float(bool(_REFUSAL.search(lower))),
            len(set(words)) / max(1, len(words)), sum(ord(c) > 127 for c in text) / n_chars,
            float(text.strip()[-1:] in ".!?)`\"'"), sum(c.isdigit() for c in text) / n_chars,
            math.log1p(sum(line.strip().startswith("#") or line.strip().endswith(":") for line in lines)),
            float(np.mean([len(w) for w in words])) if words else 0.0,
            math.log1p(len(words) / max(1, len(re.findall(r"[.!?]", text)))),
            math.log1p(len(_PARAGRAPH.findall(text))), math.log1p(text.count("**")), math.log1p(len(_NUMBERED.findall(text))),
            math.log1p(len(_SENTENCE_END.findall(text))), math.log1p(len(words)),
            float(np.mean([len(line) for line in filled])) / 100 if filled else 0.0,
            math.log1p(max((len(line) for line in filled), default=0)),
            float(bool(_WRAP_UP.search(lower))), float(bool(_HEDGE.search(lower))), float(bool(_EXAMPLE.search(lower)))]


def requirement_stats(text: str) -> list[float]:
    """How much a text asks for, in ``REQUIREMENT_NAMES`` order: requirement words, clause marks
    (commas, semicolons, colons, list lines) and numbers, each as log(1 + count)."""
    lower = text.lower()
    clauses = len(re.findall(r"[,;:]", text)) + sum(bool(_LIST_ITEM.match(line)) for line in text.splitlines())
    return [math.log1p(len(_REQUIREMENT_CUE.findall(lower))), math.log1p(clauses), math.log1p(len(_NUMBER.findall(text)))]


def word_overlap(instruction: str, response: str) -> float:
    asked = set(instruction.lower().split())
    return len(asked & set(response.lower().split())) / max(1, len(asked))


# -- measurements and the feature matrix -------------------------------------------------------------
def measure_texts(texts: dict[str, list[str]], embeddings: dict[str, np.ndarray], inputs: Sequence[str],
            on_rows: Callable[[int], Any] | None = None, every: int = 1000,
            features: Sequence[str] = FEATURES) -> dict[str, np.ndarray]:
    """Embeddings plus the cheap per-text measurements (lengths, text statistics, word overlap, and the
    requirement counts when ``features`` asks for them).

    ``on_rows(k)`` is called as the statistics of ``k`` more rows are done (a progress bar's update).
    """
    out = dict(embeddings)
    for name in inputs:
        out[f"_chars_{name}"] = np.array([len(t) for t in texts[name]], dtype=np.float32)
    last = inputs[-1]
    stats = []
    for i, text in enumerate(texts[last], start=1):
        stats.append(text_stats(text))
        if on_rows is not None and i % every == 0:
            on_rows(every)
    if on_rows is not None and len(stats) % every:
        on_rows(len(stats) % every)
    out[f"_stats_{last}"] = np.array(stats, dtype=np.float32).reshape(-1, len(STAT_NAMES))
    if "requirements" in features:  # only the rewritten-chains complexity recipe reads them
        out[f"_requirements_{last}"] = np.array([requirement_stats(t) for t in texts[last]],
                                                dtype=np.float32).reshape(-1, len(REQUIREMENT_NAMES))
    if len(inputs) >= 2:
        a, b = inputs[:2]
        out["_overlap"] = np.array([word_overlap(x, z) for x, z in zip(texts[a], texts[b], strict=True)], dtype=np.float32)
    return out


def embedding_parts(emb: dict[str, np.ndarray], inputs: Sequence[str], embed_inputs: Sequence[str],
                    features: Sequence[str]) -> list[np.ndarray]:
    parts: list[np.ndarray] = []
    if "embeddings" in features:
        parts += [emb[name] for name in embed_inputs]
    if "product" in features:
        parts.append(emb[inputs[0]] * emb[inputs[1]])
    return parts


def stat_parts(emb: dict[str, np.ndarray], inputs: Sequence[str], embed_inputs: Sequence[str],
               features: Sequence[str]) -> list[np.ndarray]:
    parts: list[np.ndarray] = []
    if "length" in features:
        parts += [np.log1p(emb[f"_chars_{name}"])[:, None] for name in inputs]
    if "stats" in features:
        parts.append(emb[f"_stats_{inputs[-1]}"])  # the judged text: the response when there is one
        if len(inputs) >= 2:
            a, b = inputs[:2]
            parts += [(np.log1p(emb[f"_chars_{b}"]) - np.log1p(emb[f"_chars_{a}"]))[:, None], emb["_overlap"][:, None]]
            if a in embed_inputs and b in embed_inputs:  # cosine of the two texts, when both are embedded
                parts.append((emb[a] * emb[b]).sum(axis=1)[:, None])
    if "requirements" in features:
        parts.append(emb[f"_requirements_{inputs[-1]}"])
    if "_columns" in emb:  # numeric workspace columns (e.g. token signals), penalised as the statistics are
        parts.append(emb["_columns"])
    return parts


def feature_matrix(emb: dict[str, np.ndarray], inputs: Sequence[str], embed_inputs: Sequence[str],
                   features: Sequence[str]) -> np.ndarray:
    """The matrix a head reads: embedding columns first, then the statistics columns."""
    parts = embedding_parts(emb, inputs, embed_inputs, features) + stat_parts(emb, inputs, embed_inputs, features)
    return np.concatenate(parts, axis=1).astype(np.float64)


def n_stat_columns(inputs: Sequence[str], embed_inputs: Sequence[str], features: Sequence[str],
                   n_columns: int = 0) -> int:
    """How many of the last feature columns are statistics (the rest are embedding columns); ``n_columns``:
    the numeric workspace columns read beside them."""
    pair_stats = 0
    if len(inputs) >= 2:  # the cosine is there only when both texts are embedded
        pair_stats = len(PAIR_STAT_NAMES) - (not set(inputs[:2]) <= set(embed_inputs))
    return (len(inputs) * ("length" in features) + ("stats" in features) * (len(STAT_NAMES) + pair_stats)
            + ("requirements" in features) * len(REQUIREMENT_NAMES) + n_columns)


def training_fingerprint(texts: dict[str, list[str]], scores: Sequence[float]) -> str:
    """Hash of the training texts and labels (stored with a fitted scorer)."""
    h = hashlib.sha256()
    for name in sorted(texts):
        h.update(name.encode())
        for t in texts[name]:
            h.update(hashlib.sha256(t.encode()).digest())
    h.update(np.asarray(scores, dtype=np.float64).tobytes())
    return "sha256:" + h.hexdigest()[:32]
