"""MoDS augmented data (Du et al. 2023): the rows a model fine-tuned on a seed set still answers badly.

MoDS selects in three stages: a quality filter, a diverse seed (k-center greedy), then *necessity*: fine-tune
the model on the seed, let it answer every candidate instruction, judge those answers, and add the rows whose
answers score below a limit: what the seed did not teach. curate makes each stage from parts it has::

    ws.select(method="threshold", name="good", sort_by="quality", min_score=4)
    ws.select(method="kcenter", name="seed", input_selection="good", budget=1000)
    model = ws.fine_tune("seed", out="seed-model")                      # LoRA merged: a plain HF folder
    ws.apply(Judge("answer", VLLMBackend(model), column="seed_answer"))  # the seed model's own replies
    ws.apply(Judge("quality", judge_backend, column="seed_answer_quality", response_column="seed_answer"))
    ws.select(method="necessity", name="mods", input_selection="good", seed="seed",
              answer_score="seed_answer_quality", max_answer_score=3.5, answers="seed_answer")

The selection keeps the seed rows and every necessary row (MoDS' released code adds them all), or with
``budget`` the ``budget`` necessary rows k-center greedy picks, the seed rows counting as centres already
chosen (so an added row is also far from the seed).
"""

from __future__ import annotations

import math

import numpy as np

from curate.codes import Decision, FailureCode, Reason
from curate.defaults import EMBED, HEURISTICS
from curate.errors import CurateError, OptionError
from curate.select.diversity import kcenter_greedy
from curate.select.heuristics import looping_tail
from curate.select.inputs import in_id_order, vectors
from curate.select.registry import SelectorResult, register
from curate.select.sort_key import score_rows
from curate.storage.pool import selection_positions


def lowest_turn_scores(ws, column: str, ids: list[str]) -> np.ndarray:
    """Each row's lowest turn value of ``column`` (a row is needed if its seed model fails any turn); NaN
    where a turn has none."""
    out = np.full(len(ids), np.nan)
    for k, turns in enumerate(ws.turn_values(column, ids)):
        if turns and all(t is not None for t in turns):
            out[k] = min(float(t) for t in turns)
    return out


@register("necessity")
def necessity(ws, rows: np.ndarray, seed: str, answer_score: str, max_answer_score: float,
              budget: int | None = None, embeddings: str = EMBED.name, answers: str | None = None) -> SelectorResult:
    """MoDS: keep selection ``seed``'s rows and add the rows whose answer by the model fine-tuned on the seed
    scores below ``max_answer_score`` (``answer_score``: a judge column of those answers; a row's lowest turn
    counts). ``budget``: add only that many, picked by k-center greedy from the seed outward (else all).
    ``answers``: the column of the answers themselves; a row whose answer ran past max_tokens (failure
    ``truncated``: a small model that loops or rambles), or ends in a loop (the heuristics' ``repeated_tail``
    rule), is then a failed answer, so necessary, whatever its score."""
    if isinstance(max_answer_score, float) and math.isnan(max_answer_score):
        raise OptionError("necessity: max_answer_score is NaN")
    seed_ids, seed_positions = selection_positions(ws, seed)
    candidates = set(rows.tolist())
    outside = [rid for rid, p in zip(seed_ids, seed_positions, strict=True) if p not in candidates]
    if outside:
        raise CurateError(f"necessity: seed selection {seed!r} keeps {len(outside):,} rows outside this selection's "
                          f"input (first: {outside[0]!r}); make the seed from the same input")
    in_seed = set(seed_positions)
    rest = in_id_order(ws, np.asarray([p for p in rows.tolist() if p not in in_seed], np.int64))  # ties by row id
    pool_ids = ws.ids
    rest_ids = [pool_ids[p] for p in rest.tolist()]
    scores = lowest_turn_scores(ws, answer_score, rest_ids)
    failed: dict[int, str] = {}  # an unfinished or looping answer ranks below every judged one
    if answers is not None:
        texts = ws.column(answers, rest_ids)
        for k, fails in enumerate(ws.failures(answers, rest_ids)):
            if np.isnan(scores[k]) and any(f.code is FailureCode.TRUNCATED for f in fails):
                failed[k] = "truncated"
            elif any(t and looping_tail(t, HEURISTICS.max_repeated_tail_words) for t in texts[k] or []):
                failed[k] = "looping"  # it stopped, but after going round in circles
    scores[list(failed)] = -math.inf
    missing = np.isnan(scores)
    why = score_rows(ws, answer_score, [rest_ids[k] for k in np.flatnonzero(missing)]) if missing.any() else None
    needed = np.flatnonzero(~missing & (scores < max_answer_score))
    needed = needed[np.argsort(scores[needed], kind="stable")]  # the worst answered first
    out = SelectorResult(info={"seed": seed, "seed_rows": len(seed_positions), "answer_score": answer_score,
                               "max_answer_score": max_answer_score, "necessary_rows": len(needed),
                               "unfinished_answers": sum(v == "truncated" for v in failed.values()),
                               "looping_answers": sum(v == "looping" for v in failed.values()), "answers": answers,
                               "turns": "a row's lowest turn score", "budget": budget})

    def answer(k: int) -> dict:
        return {"answer": failed[k]} if k in failed else {"answer_score": float(scores[k])}

    for p in seed_positions:
        out.add(p, Decision.KEPT, Reason.SELECTED, {"part": "seed"})
    not_picked: list[tuple[int, dict]] = []
    if budget is None or budget >= len(needed):
        picked = needed.tolist()
    else:
        x_needed = vectors(ws, embeddings, rest[needed])
        x_seed = vectors(ws, embeddings, np.asarray(seed_positions, np.int64)) if seed_positions else x_needed[:0]
        order, _, dist = kcenter_greedy(x_needed, budget, first=0, chosen=x_seed)  # first: the worst answered
        picked = [int(needed[j]) for j in order]
        chosen = set(order.tolist())
        not_picked = [(int(needed[j]), {"distance": float(dist[j])}) for j in range(len(needed)) if j not in chosen]
        out.info["radius"] = float(dist.max()) if len(dist) else None
    for k in picked:
        out.add(rest[k], Decision.KEPT, Reason.SELECTED, {"part": "necessity", **answer(k)})
    for k, detail in not_picked:
        out.add(rest[k], Decision.NOT_REACHED, Reason.BUDGET_FILLED, {**answer(k), **detail, "budget": budget})
    for k in np.flatnonzero(~missing & (scores >= max_answer_score)).tolist():
        out.add(rest[k], Decision.REJECTED, Reason.ANSWERED_WELL,
                {"answer_score": float(scores[k]), "max_answer_score": max_answer_score})
    for j, k in enumerate(np.flatnonzero(missing).tolist()):
        out.add(rest[k], Decision.UNSCORED, Reason.NO_SCORE, why.detail(j))
    return out
