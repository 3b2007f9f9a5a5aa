"""The failed requests of an Evol label set stored before ``failures.jsonl`` existed, read from its ``sets.jsonl``.

Such a set recorded each failure on the chain it cut, without the request's cache key: a rewrite eliminated as
``call_failed`` (``detail``: ``code: message``) and a rank call whose set failed as ``judge_failed``
(``failure_detail``). Each request is built again from the chain as the run would send it (the parent's text, the
step's sampling seed, the shown order of a rank call), so a re-run with the same seed, steps, prompts and model finds
its key and replays the failure instead of sending it once more; any other run sends it as a new request.
"""

from __future__ import annotations

from typing import Any

from curate.codes import TRANSIENT_FAILURES, Failure, FailureCode
from curate.evol.calls import first_requests
from curate.evol.rules import Elimination, RankFailure, derive_seed, rank_model, shuffle


def recorded_failure(detail: Any) -> Failure | None:
    """The permanent failure a ``code: message`` detail names; None for a transient one or other text."""
    code, _, message = str(detail or "").partition(": ")
    try:
        failure = Failure(FailureCode(code), message)
    except ValueError:
        return None
    return None if failure.code in TRANSIENT_FAILURES else failure


def failures_in_sets(rows: list[dict[str, Any]], plan: Any, backend: Any) -> dict[str, Failure]:
    """By request key, the permanent failures ``sets.jsonl`` rows (of :class:`curate.evol.run.EvolPlan` ``plan``'s
    run, on ``backend``) recorded: their failed rewrites and rank calls."""
    out: dict[str, Failure] = {}
    for row in rows:
        survivors = {v["step"]: v for v in row.get("variants") or []}
        for variant in row.get("eliminated") or []:
            parent, prompt = survivors.get(variant.get("parent_step")), plan.prompts.get(variant.get("operation"))
            failure = recorded_failure(variant.get("detail"))
            if variant.get("eliminated") != Elimination.CALL_FAILED or None in (parent, prompt, failure):
                continue
            inputs = ({"instruction": parent["text"]} if plan.kind == "complexity"
                      else {"instruction": row["instruction"], "response": parent["text"]})
            params = {"seed": derive_seed(plan.seed, "sample", variant["step"]), **(plan.rewrite_params or {})}
            (request,) = first_requests(prompt, [inputs], backend, {"params": params})
            out[request.key] = failure
        failure = recorded_failure(row.get("failure_detail"))
        if row.get("failure") != RankFailure.JUDGE_FAILED or failure is None or not row.get("order"):
            continue
        if failure.raw is None and row.get("raw") not in (None, "{}"):  # the reply it stored: kept on replay
            failure = Failure(failure.code, failure.message, row["raw"], failure.turn)
        scale_max = plan.steps + 1
        item: dict[str, Any] = {"variants": shuffle([v["text"] for v in row["variants"]], row["order"]),
                                "scale_max": scale_max}
        if plan.kind == "quality":
            item["instruction"] = row["instruction"]
        options = {"params": plan.rank_params, "output_model": rank_model(len(row["variants"]), scale_max)}
        (request,) = first_requests(plan.rank_prompt, [item], backend, options)
        out[request.key] = failure
    return out
