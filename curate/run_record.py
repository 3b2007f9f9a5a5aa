"""``OUT/run.json``: a machine-readable record of one `curate run` for a scheduler (cron, Airflow): its status and
exit code, each finished step's counts and seconds, the output files, what it sent to LLMs, curate's version. Built
from the steps' own results (the ones the CLI prints), also when a step fails (``status``: ``failed``, the steps
that finished, the error). ``RUN_RECORD_VERSION`` is bumped when a key changes meaning."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from curate.errors import ConfigError, CurateError, NoLabelsError, RetryLaterError
from curate.storage.files import atomic_write_bytes, now
from curate.storage.last_run import RUN_RECORD, killed_run  # noqa: F401  (RUN_RECORD: pipeline's)
from curate.storage.processes import command_line

RUN_RECORD_VERSION = 1
log = logging.getLogger("curate")
Step = tuple[str, Callable[[Any], Any]]  # a step's name, and its function of the run (curate.pipeline.Run)


def llm_use(results: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """What the run sent to LLMs, over the judges and the tagger (this run's part of each column's runs), or None
    when no judge or tagger ran: the record's summary (``requests_sent``, None: not counted; ``requests`` and the
    cache's share, ``tokens`` by kind, ``cost_usd``, None: a model without a known price, named in
    ``unpriced_models``) and the runs' folded total (curate.storage.run_records.fold_runs)."""
    from curate.storage.run_records import fold_runs, requests_sent

    applied = [*(results.get("score") or {}).values(), (results.get("tags") or {}).get("tags_raw")]
    used = [a for a in applied if a is not None and a.computed and a.provenance.get("kind") in ("judge", "instag_tags")]
    if not used:
        return None
    runs = [a.provenance["runs"][-1] for a in used]  # runs[-1]: this run's
    total = fold_runs(None, runs)
    return {"requests_sent": requests_sent(total), "requests": total.get("requests"),
            "cached_requests": total.get("cached_requests") or 0, "repeated_requests": total.get("repeated_requests") or 0,
            "requests_paid_by_stopped_run": sum(r.get("requests_paid_by_stopped_run") or 0 for r in runs),
            "tokens": dict(total["tokens"]), "total_tokens": sum(total["tokens"].values()), "cost_usd": total["cost_usd"],
            "unpriced_models": sorted({str(a.provenance.get("model")) for a, r in zip(used, runs, strict=True)
                                       if r.get("cost_usd") is None})}, total


def _applied(applied: Any) -> dict[str, Any]:
    """An ``ApplyResult``'s counts: rows asked, valued now, reused, failed (and by reason code)."""
    return {"rows": applied.rows, "now": applied.valued_now, "reused": applied.skipped, "failed": applied.failed,
            "failed_now": applied.failed_now, "failures_by_reason": {code: n for code, (n, _) in
                                                                      applied.failure_reasons.items()}}


def _selection(selection: Any) -> dict[str, Any]:
    """A filter or admission selection's counts: rows in, rows kept, and each decision's count."""
    return {"rows_in": selection.table.num_rows, "kept": len(selection), "decisions": dict(selection.decisions()),
            "unchanged": bool(getattr(selection, "unchanged", False))}


def step_counts(name: str, result: Any, budget: int) -> dict[str, Any]:
    """The counts of one finished step, from its result (as the CLI prints it)."""
    if name == "load":
        keys = ("rows_read", "rows_added", "already_present", "rejects")
        return {k: result[k] for k in keys if k in result} | {"unchanged": bool(result.get("unchanged"))}
    if name in ("score", "signals"):
        return {"columns": {column: _applied(a) for column, a in result.items()}}
    if name == "tags":
        return {"columns": {result["columns"][0]: _applied(result["tags_raw"])}}
    if name == "embed":
        # on Ray the score step's pass encodes the vectors, and the line says so: ``encoded`` counts that pass's
        return {"rows": result["rows"], "encoded": result["encoded"]} | (
            {"encoded_in": result["encoded_in"]} if result.get("encoded_in") else {})
    if name in ("export", "report"):
        return {"files": {k: str(p) for k, p in result.files.items()}, "unchanged": result.unchanged}
    counts = _selection(result)
    if name.startswith("select"):
        counts |= {"admitted": len(result), "budget": budget}
    return counts


def run_record(out: Path, budget: int | None, results: dict[str, Any], timings: dict[str, float],
               outputs: dict[str, Path], started: float, error: BaseException | None = None, *,
               running: bool = False) -> dict[str, Any]:
    """The record of a run (finished, stopped by ``error``, or ``running``: its steps under way) as ``OUT/run.json``
    holds it."""
    from curate import __version__
    from curate.exit_codes import exit_code

    llm = (llm_use(results) or (None, None))[0]
    status = ("running" if running else "ok" if error is None
              else "interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
    return {"record_version": RUN_RECORD_VERSION, "curate_version": __version__, "status": status,
            "exit_code": None if running else 0 if error is None else exit_code(error),
            "error": None if error is None else {"type": type(error).__name__, "message": str(error)},
            "started_at": _iso(started), "finished_at": None if running else now(),
            "pid": os.getpid(), "hostname": socket.gethostname(),  # a running record left by kill -9: whose
            "command": command_line(),  # what curate info shows of the workspace's last run
            "out": str(out), "budget": budget, "seconds": round(time.time() - started, 3),
            "steps_finished": list(results),
            "steps": {name: {"seconds": round(timings[name], 3), **step_counts(name, result, budget)}
                      for name, result in results.items()},
            "outputs": {kind: str(path) for kind, path in outputs.items()}, "llm": llm}


def _iso(seconds: float) -> str:
    """``seconds`` since the epoch as :func:`curate.storage.files.now` writes a time (UTC, ISO 8601)."""
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat(timespec="microseconds")


def _earlier_run(out: Path) -> None:
    """Warn when ``OUT/run.json`` is a run that was killed: this run takes its folder over."""
    try:
        record = json.loads((Path(out) / RUN_RECORD).read_text())
    except (OSError, ValueError):
        return
    if isinstance(record, dict) and (said := killed_run(record)):
        log.warning("%s: the run before this one was %s; this run goes on from what its workspace kept",
                    Path(out) / RUN_RECORD, said)


def failed_run_record(out: Path, budget: int | None, error: BaseException) -> dict[str, Any]:
    """The record of a run stopped before its first step (an option refused, the backend not built): no step's."""
    return run_record(out, budget, {}, {}, {}, time.time(), error)


def backend_error(backend: Any) -> type[CurateError] | None:
    """The error a step stopped by ``backend`` raises: ConfigError when it says its settings were refused (key,
    access, model, endpoint: a re-run fails alike until fixed), RetryLaterError when its server did not answer,
    else None."""
    refused, unreachable = getattr(backend, "refused", None), _unanswered(backend)
    return ConfigError if refused else RetryLaterError if unreachable else None


def _unanswered(backend: Any) -> str | None:
    """Why ``backend``'s server gives no answers: never answered (``unreachable``), or answered and then stopped
    (``stopped_answering``: its run's last attempts all failed to connect); None when it answers."""
    return getattr(backend, "unreachable", None) or getattr(backend, "stopped_answering", None)


def apply_in_turn(backend: Any, steps: list[Any], apply: Callable[[Any], Any]) -> dict[str, Any]:
    """Each step's :func:`applied` ``apply(step)``, in order, by column; none starts after the backend's server
    stopped answering (the next judge sent every row to a dead endpoint, each retried: 24 s for 500 rows)."""
    results: dict[str, Any] = {}
    for step in steps:
        results[step.column] = applied(backend, lambda step=step: apply(step))
        if _unanswered(backend):
            break
    return results


def applied(backend: Any, apply: Callable[[], Any]) -> Any:
    """``apply()``; an error it raises because rows got no answer (a plain CurateError: a judge taking a column over
    and failing every row; a RetryLaterError or NoLabelsError: evol's chains left unfinished, no label made) as
    :func:`backend_error`'s when the backend says why it stopped sending (a refused key is 78, not 75)."""
    try:
        return apply()
    except CurateError as exc:
        error = backend_error(backend)
        unanswered = type(exc) is CurateError or isinstance(exc, RetryLaterError | NoLabelsError)
        if error is None or isinstance(exc, error) or not unanswered:
            raise
        raise error(f"{exc} ({getattr(backend, 'refused', None) or _unanswered(backend)})") from exc


def check_answered(backend: Any, failures: list[list[Any]], done: str, kept: Path) -> None:
    """Refuse to go on when the LLM did not answer some rows (``failures``: each row's): settings refused or a server
    that did not answer (:func:`backend_error`); selecting then would silently leave those rows out."""
    from curate.codes import unreached_rows

    unreached, error = unreached_rows(failures), backend_error(backend)
    if not unreached and error is None:
        return
    reason = getattr(backend, "refused", None) or _unanswered(backend) or unreached[0].message
    rows = len(unreached) or sum(bool(fails) for fails in failures)
    raise (error or RetryLaterError)(f"{rows} rows not {done}: the judge did not answer ({reason}); the {done} rows "
                                     f"are kept in {kept}: re-run to send the rest")


def write_run_record(out: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` whole to ``OUT/run.json`` (a rename: a reader never sees half of it)."""
    path = Path(out) / RUN_RECORD
    atomic_write_bytes(path, (json.dumps(record, indent=1, default=str) + "\n").encode())
    return path


def run_steps(run: Any, plan: list[Step], on_start: Callable[[str], None] | None,
              on_done: Callable[[str, Any, float], None] | None) -> tuple[dict[str, float], dict[str, Any], dict]:
    """Run ``plan``'s steps in order, calling ``on_start``/``on_done`` around each; write ``OUT/run.json`` (status
    ``running`` first, in a new folder too, replacing an earlier run's; again, with the steps finished so far, as
    each step finishes) when they finish, or when one fails (the
    exception carries the record as ``run_record``, written unless a failed load removed the workspace it made: its
    ``running`` record goes too, the out folder is then as it was). Returns timings, results and the record."""
    timings: dict[str, float] = {}
    results: dict[str, Any] = {}
    began = time.time()
    _earlier_run(run.out)
    # as the run takes the folder, a new one's too (a scheduler reads running; a run killed -9 leaves this record);
    # a folder without a workspace holds no run.json to write over (curate.storage.export.check_run_folder)
    write_run_record(run.out, run_record(run.out, run.budget, results, timings, run.outputs, began, running=True))
    try:
        for name, step in plan:
            if on_start is not None:
                on_start(name)
            started = time.perf_counter()
            results[name] = step(run)
            timings[name] = time.perf_counter() - started
            # each finished step's counts as the final record's, before its line is printed: a run killed -9 says
            # how far it got (the record said steps_finished [] until the run's end)
            write_run_record(run.out, run_record(run.out, run.budget, results, timings, run.outputs, began,
                                                 running=True))
            if on_done is not None:
                on_done(name, results[name], timings[name])
    except BaseException as exc:
        exc.run_record = run_record(run.out, run.budget, results, timings, run.outputs, began, exc)  # type: ignore[attr-defined]
        try:
            if (Path(run.out) / "workspace").is_dir():
                write_run_record(run.out, exc.run_record)  # type: ignore[attr-defined]
            else:  # a load that failed removed the workspace it made (and out, if made): its record goes, out as it was
                (Path(run.out) / RUN_RECORD).unlink(missing_ok=True)
        except Exception as failed:  # noqa: BLE001  (the run's own error is the one to report)
            log.warning("%s: not written: %s", Path(run.out) / RUN_RECORD, failed)
        raise
    record = run_record(run.out, run.budget, results, timings, run.outputs, began)
    write_run_record(run.out, record)
    return timings, results, record
