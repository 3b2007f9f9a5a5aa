"""Evol label sets in a workspace: a run's (text, score) rows stored with ``ws.add_labels``.

A label set holds one row per scored variant (text, score, seed_id, step, operation[, instruction]), the run's
provenance, and the side files ``sets.jsonl`` (every variant set, eliminated rewrites and rank failures
included) and ``failures.jsonl`` (every failed request by cache key: a re-run does not send those failed for a
permanent reason again). Read it back with ``ws.labels(name)`` (a ``datasets.Dataset``) and ``ws.label_sets[name]``
(the provenance); train a scorer on it with ``Scorer.fit``.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from curate.codes import Failure
from curate.defaults import EVOL
from curate.errors import CurateError, NoLabelsError, RetryLaterError
from curate.evol.run import EvolRun, run_evol
from curate.storage.files import check_name, check_new_name, now
from curate.storage.label_sets import stored_provenance

log = logging.getLogger("curate")


def label_set_name(kind: str) -> str:
    """The default name of a kind's label set."""
    return f"evol_{kind}"


def labels_lock(ws: Any, name: str) -> Any:
    """Held while a run makes label set ``name``: a second process making it waits, then finds its calls in the
    response cache (without it, two concurrent runs each paid for every call)."""
    check_name(name) if (ws.path / "labels" / name).exists() else check_new_name(name)  # before the paid work
    return ws.column_lock(f"labels-{name}", on_wait=lambda: log.warning(
        "waiting for another process making label set %r in %s", name, ws.path))


USAGE_FIELDS = ("requests", "cached", "repeated", "failed_before", "not_sent_max_cost", "paid_by_stopped_run", "prompt_tokens",
                "completion_tokens", "cost_usd")


def save_labels(ws: Any, name: str, run: EvolRun) -> Path:
    """Store a run's labels as label set ``name`` of ``ws`` (provenance + ``sets.jsonl``); returns its folder.

    The provenance's ``runs`` lists the LLM usage of every run stored under ``name`` (the calls the earlier runs
    paid for are what this one's cache answered): the cost table sums them."""
    sets = "".join(json.dumps(asdict(vs), ensure_ascii=False) + "\n" for vs in run.sets)
    failures = "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in run.failures)
    old = stored_provenance(ws.path / "labels" / check_name(name))  # of a damaged set too: its runs stay counted
    earlier = (old.get("runs") or [{k: old.get(k) for k in (*USAGE_FIELDS, "created")}]) if old else []
    this = {k: run.provenance.get(k) for k in USAGE_FIELDS} | {"created": now()}
    provenance = {**run.provenance, "runs": earlier + [this]}
    folder = ws.add_labels(name, run.labels.to_list(), provenance, files={"sets.jsonl": sets.encode("utf-8"),
                                                                                   FAILURES_FILE: failures.encode("utf-8")})
    run.recorded()
    return folder


FAILURES_FILE = "failures.jsonl"


def stored_failures(ws: Any, name: str) -> dict[str, Failure]:
    """The failed requests label set ``name`` recorded (its ``failures.jsonl``), by request key: what ``run_evol``'s
    ``earlier_failures`` takes. None for a new set or one stored before failures were recorded."""
    path = ws.path / "labels" / check_name(name) / FAILURES_FILE
    if not path.exists():
        return {}
    out: dict[str, Failure] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            out[record["key"]] = Failure.from_dict(record)
        except (ValueError, KeyError, TypeError) as exc:
            raise CurateError(f"{path}:{number}: not a failed-request record ({type(exc).__name__}: {exc}); "
                              "remove the file to send its requests again") from exc
    return out


def legacy_sets(ws: Any, name: str) -> list[dict[str, Any]]:
    """The ``sets.jsonl`` rows of label set ``name`` if it was stored before failures were recorded (no
    ``failures.jsonl``, and no ``failed_requests`` in its provenance): what ``run_evol``'s ``earlier_sets`` takes, to
    replay the permanent failures they record. None for a new set or a later one (whose ``failures.jsonl``, once
    removed, sends every failure again)."""
    folder = ws.path / "labels" / check_name(name)
    path = folder / "sets.jsonl"
    if (folder / FAILURES_FILE).exists() or not path.exists() or "failed_requests" in (stored_provenance(folder) or {}):
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line) if line.strip() else None
        except ValueError as exc:
            raise CurateError(f"{path}:{number}: not a variant set record ({exc})") from exc
        if row is not None and not isinstance(row, dict):
            raise CurateError(f"{path}:{number}: not a variant set record (a JSON {type(row).__name__})")
        rows += [row] if row else []
    return rows


def earlier(ws: Any, name: str) -> dict[str, Any]:
    """``run_evol``'s record of label set ``name``'s earlier runs: ``earlier_failures`` and ``earlier_sets``."""
    return {"earlier_failures": stored_failures(ws, name), "earlier_sets": legacy_sets(ws, name)}


def raise_unfinished(run: EvolRun) -> None:
    """A :class:`CurateError` when a chain stopped because the LLM did not answer one of its calls (a transient
    failure, or max_cost reached): its labels are left out, and a re-run finishes it from the cache. A
    :class:`~curate.errors.RetryLaterError` (exit 75) unless max_cost alone left the calls unsent, or
    ``retry_failed=False`` keeps them unsent (exit 1)."""
    from curate.codes import FailureCode
    from curate.evol.rules import RankFailure

    unanswered = [vs for vs in run.sets if vs.failure is RankFailure.NOT_ANSWERED]
    budget = all((vs.failure_detail or "").startswith(f"{FailureCode.BUDGET.value}:") for vs in unanswered)
    if unanswered:  # labels of chains cut short would teach the wrong scale: say so, and how to finish
        # retry_failed=False (--keep-failed) never sends them again: "retry later" (75) would repeat forever
        error = CurateError if budget or not run.provenance.get("retry_failed", True) else RetryLaterError
        raise error(f"{len(unanswered):,} of {len(run.sets):,} seeds not finished: the LLM did not answer "
                    f"a call of their chain ({unanswered[0].failure_detail[:160]}); their labels are left out. "
                    + ("Re-run to finish them (answered calls come from the cache)." if run.provenance.get(
                       "retry_failed", True) else "Re-run without --keep-failed (retry_failed=False) to send "
                       "them again and finish them (answered calls come from the cache)."))


def _counts(by_reason: dict[str, int]) -> str:
    return ", ".join(f"{n:,} x {reason}" for reason, n in by_reason.items())


def raise_no_labels(run: EvolRun) -> None:
    """A :class:`~curate.errors.NoLabelsError` when a run on some seeds made no label (nothing to train on: a
    failure, not a finished run), naming what happened with its counts: every rewrite call failed, every rewrite
    was eliminated (no rank call made), or the rank calls gave nothing usable."""
    from curate.evol.rules import Elimination, RankFailure

    p = run.provenance
    if not run.sets or len(run.labels):
        return
    eliminated, unscored = p["eliminated_by_reason"], p["rank_failures_by_reason"]
    data = {"seeds": len(run.sets), "eliminated_by_reason": eliminated, "rank_failures_by_reason": unscored}
    first_eliminated = next((v.detail for vs in run.sets for v in vs.eliminated if v.detail), "")
    if p["rewrites"] and eliminated.get(Elimination.CALL_FAILED.value, 0) == p["rewrites"]:
        raise NoLabelsError(f"no labels: every rewrite call failed ({p['rewrites']:,}; first: {first_eliminated}); "
                            "the backend refused them. A re-run does not send them again (they are stored in the label set's "
                            f"{FAILURES_FILE}): fix the cause (model, prompts, max_tokens, the server) and re-run, with a "
                            "new name (--name) or that file removed if the requests stay the same.",
                            calls_failed=True, **data)
    ranked = next((vs for vs in run.sets if vs.failure not in (None, RankFailure.TOO_FEW_VARIANTS)), None)
    if ranked is None:  # no rank call was made: blame the rewrites, by reason
        raise NoLabelsError(f"no labels: every rewrite of the {len(run.sets):,} seeds was eliminated "
                            f"({_counts(eliminated)}; first: {first_eliminated[:160]}), so no variant set had two "
                            "variants to rank and no rank call was made", **data)
    raise NoLabelsError(f"no labels: none of the {len(run.sets):,} seeds' variant sets was ranked (first: "
                        f"{ranked.failure.value}: {(ranked.failure_detail or '')[:160]}); variant sets: "
                        f"{_counts(unscored)}; rewrites eliminated: {_counts(eliminated) or 'none'} (a model too small "
                        "for the rank prompt answers nothing it can read)", **data)


def build_labels(seeds: Iterable[Any], backend: Any, kind: str = EVOL.kind, steps: int = EVOL.steps, seed: int = EVOL.seed,
                 cache_path: str | os.PathLike | Any = None, workspace: Any = None, name: str | None = None,
                 progress: bool = True, **kwargs: Any):
    """Evol labels for training a small scorer: a ``datasets.Dataset`` of (text, score, seed_id, step,
    operation[, instruction]).

    With ``workspace`` the set is also stored as its label set ``name`` (default ``evol_<kind>``) and the LLM
    responses are cached in the workspace's cache folder unless ``cache_path`` says otherwise. ``progress`` shows a
    bar per step and for the rank calls (on by default, as ``ws.apply``'s); the requests its
    earlier run failed (:func:`stored_failures`) are not sent again, but for transient failures with
    ``retry_failed`` (the default, ``JUDGE.retry_failed``). Other keyword
    arguments go to :func:`curate.evol.run.run_evol`. Seeds whose chain the LLM left unanswered raise
    :func:`raise_unfinished`'s error (after the finished ones are stored), and a run that made no label raises
    :func:`raise_no_labels`'s :class:`~curate.errors.NoLabelsError` (after it is stored: what it paid for and why
    each rewrite was dropped are in the label set's provenance and ``sets.jsonl``), as ``curate evol`` does.
    """
    if cache_path is None:
        if workspace is None:
            raise CurateError("build_labels needs cache_path or a workspace (whose cache folder is used)")
        cache_path = workspace.cache_dir
    if workspace is None:
        run = run_evol(seeds, backend, kind=kind, steps=steps, seed=seed, cache_path=cache_path, progress=progress,
                           **kwargs)
        run.recorded()  # the returned provenance is its record
    else:
        name = name or label_set_name(kind)
        with labels_lock(workspace, name):
            kwargs = {**earlier(workspace, name), **kwargs}
            run = run_evol(seeds, backend, kind=kind, steps=steps, seed=seed, cache_path=cache_path, progress=progress,
                           **kwargs)
            save_labels(workspace, name, run)
    raise_unfinished(run)
    raise_no_labels(run)
    return run.labels
