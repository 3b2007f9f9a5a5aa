"""A column's run records: what each run of a step that wrote it did and paid (requests, cached and repeated ones,
tokens, USD), the history a column keeps of them, sums over it for the CLI's usage lines and the report, and the
words the CLI and ``ApplyResult`` say its request counts in."""

from __future__ import annotations

from typing import Any

RUN_HISTORY = 50  # runs kept in a column's provenance; older ones are summed into one record (fold_runs)
USAGE_KEYS = ("requests", "cached_requests", "repeated_requests", "requests_not_sent_max_cost",
              "requests_not_sent_refused", "cost_usd")  # summed when folded
# what a run recorded before the key was counted had: none (its cached_requests counted repeated requests too)
NEWER_KEYS = {"requests_not_sent_refused": 0, "repeated_requests": 0}


def requests_sent(run: dict[str, Any]) -> int | None:
    """Requests a judge or tagger run (a run record, or a fold of them) sent: its requests less those the cache
    answered, those repeating another of the run (sent once), those max_cost held back and those a refused API key
    held back (None: a run without the count)."""
    if run.get("requests") is None:
        return None
    return (run["requests"] - (run.get("cached_requests") or 0) - (run.get("repeated_requests") or 0)
            - (run.get("requests_not_sent_max_cost") or 0) - (run.get("requests_not_sent_refused") or 0))


def fold_runs(earlier: dict[str, Any] | None, dropped: list[dict[str, Any]]) -> dict[str, Any]:
    """One record shaped like a run that sums the usage (``USAGE_KEYS``, ``tokens``) of ``dropped`` runs onto
    ``earlier`` (an earlier fold, or None); ``folded_runs`` counts them. A sum one run does not know is None; a run
    that called no LLM (a scorer's, before a judge took its column over: no ``requests``) adds nothing."""
    out: dict[str, Any] = {**NEWER_KEYS, **(earlier or {"folded_runs": 0, "tokens": {}, **dict.fromkeys(USAGE_KEYS, 0)})}
    for run in dropped:
        out["folded_runs"] += 1
        if not any(key in run for key in (*USAGE_KEYS, "tokens", "folded_runs")):
            continue
        for key in USAGE_KEYS:
            value = run.get(key, NEWER_KEYS.get(key))
            out[key] = None if out.get(key) is None or value is None else out[key] + value
        tokens = run.get("tokens")
        out["tokens"] = None if out["tokens"] is None or not isinstance(tokens, dict) else {
            k: out["tokens"].get(k, 0) + tokens.get(k, 0) for k in {*out["tokens"], *tokens}}
    return out


def with_run(runs: list[dict[str, Any]], run: dict[str, Any]) -> list[dict[str, Any]]:
    """``runs`` with ``run`` added: a new record, or the last one's counts with ``run``'s summed in when both are parts
    of one pass (the Ray engine stores a pass's rows as its batches come back: the same ``engine.pass`` and
    fingerprint), so a pass is one record however many writes it took."""
    last = runs[-1] if runs else {}
    part = (run.get("engine") or {}).get("pass") if isinstance(run.get("engine"), dict) else None
    if part is None or not isinstance(last.get("engine"), dict) or last["engine"].get("pass") != part or (
            last.get("fingerprint") != run.get("fingerprint")):
        return [*runs, run]
    joined = {**last, **run}
    for key, value in run.items():
        old = last.get(key)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (old, value)):
            joined[key] = round(old + value, 2) if key == "seconds" else old + value
    return [*runs[:-1], joined]


def column_runs(provenance: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run that wrote a column, for sums over them: the record folding the runs dropped from its history (if
    any), then the runs kept; count them with :func:`run_count`. A column written before runs were recorded: one."""
    kept = provenance.get("runs") or [provenance]
    return ([provenance["earlier_runs"]] if provenance.get("earlier_runs") else []) + kept


def run_count(runs: list[dict[str, Any]]) -> int:
    """How many runs :func:`column_runs` stands for (a folded record counts its ``folded_runs``)."""
    return sum(int(r.get("folded_runs", 1)) for r in runs)


REPEATED_WORDS = "repeat another request of this run (same prompt, sent once)"


def answered_text(cached: int, repeated: int) -> str:
    """``cached`` requests the on-disk cache answered (an earlier run's answers) and ``repeated`` ones that repeated
    another the run sent: ``"8 answered by the on-disk cache, 3 repeat another request of this run (...)"``."""
    return f"{cached:,} answered by the on-disk cache, {repeated:,} {REPEATED_WORDS}"


def requests_answered_text(run: dict) -> str:
    """:func:`answered_text` of a judge or tagger run record (or a fold of them)."""
    return answered_text(run.get("cached_requests") or 0, run.get("repeated_requests") or 0)


def requests_text(run: dict, sent_over: str = "") -> str:
    """How many new requests a judge or tagger run record counts (each call and each JSON re-ask once; transport
    retries not), then :func:`answered_text`: ``"2 new (5 sent over HTTP), 8 answered by the on-disk cache, ..."``.
    Answers a stopped run paid for and never recorded came from the on-disk cache, and are counted there, not as new
    (:func:`stopped_run_text` says how many; the record counts them in ``requests_sent`` as this run's spending).
    ``sent_over``: what the backend's own counter saw (retries included), as ``evol``'s summary says it
    (``curate.cli.evol.sent_text``); a record without the count says only what answered."""
    sent = requests_sent(run)
    paid = run.get("requests_paid_by_stopped_run") or 0
    answered = answered_text((run.get("cached_requests") or 0) + paid, run.get("repeated_requests") or 0)
    return ("" if sent is None else f"{sent - paid:,} new{sent_over}, ") + answered


def stopped_run_text(run: dict) -> str:
    """What a judge or tagger run record says of the answers a stopped run paid for and never recorded (the on-disk
    cache answered them; their tokens and cost count in this run's, as no record holds them), or nothing."""
    paid = run.get("requests_paid_by_stopped_run") or 0
    return (f" (of those the on-disk cache answered, {paid:,} a stopped run paid for and never recorded: their tokens "
            "and cost count in this run)") if paid else ""
