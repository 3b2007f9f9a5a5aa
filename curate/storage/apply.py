"""``Workspace.apply``: run a Step over the rows that need it and store its columns.

One place owns what every producer used to do by hand: which rows need work (a row computed under the
same fingerprint is skipped, so a re-run or a resumed run costs nothing), the column lock (a second
process applying the same step waits, then finds the work done), subset merge, provenance with a
history of runs, failure columns, and the progress bar.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

from curate.codes import TRANSIENT_FAILURES
from curate.defaults import JUDGE
from curate.errors import KEPT_ON_INTERRUPT, warn
from curate.storage.apply_checks import (
    check_one_run,
    check_output,
    check_replaces_with_something,
    check_side_columns,
)
from curate.storage.apply_result import ApplyResult
from curate.storage.columns import check_ids_in_pool
from curate.storage.damage import DamagedFileError
from curate.storage.failures import failure_arrow_type, failure_reasons, failures_of, rewrite_legacy_failures
from curate.storage.files import check_new_name, read_arrow, schema_meta
from curate.storage.manifest import no_step_input
from curate.storage.pool import no_pool_loaded
from curate.storage.progress import progress_bar, show_failed
from curate.storage.run_records import RUN_HISTORY, fold_runs, with_run
from curate.storage.step import StepContext, StepOutput, check_step, join_outputs

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any

_FAILURES_TOLD_BY_CALLER = contextvars.ContextVar("curate_apply_failures_told_by_caller", default=False)


@contextlib.contextmanager
def failures_told_by_caller() -> Iterator[None]:
    """Within it ``ws.apply`` does not warn of the rows failed in its call: a caller storing one pass in parts (the
    Ray engine's commits) warns once with the pass's total, not once per part."""
    token = _FAILURES_TOLD_BY_CALLER.set(True)
    try:
        yield
    finally:
        _FAILURES_TOLD_BY_CALLER.reset(token)


def applied_fingerprint(ws: Workspace, step: Any) -> str:
    """The fingerprint ``apply`` stores with a step's values and compares on a re-run: the step's own, combined
    with the fingerprint of each derived column it reads (``inputs``), so its values are recomputed when an input
    column was recomputed differently (a pool column never changes under one row id)."""
    own = step.fingerprint()
    derived = [name for name in step.inputs if ws.has_column(name)]
    if not derived:
        return own
    h = hashlib.sha256(own.encode())
    for name in derived:
        prov = ws.column_provenance(name)
        h.update(f"|{name}={prov.get('fingerprint') or json.dumps(prov, sort_keys=True, default=str)}".encode())
    return "sha256:" + h.hexdigest()[:32]


def rows_needing_work(ws: Workspace, step: Any, ids: list[str], *, force: bool = False, retry_failed: bool = False,
                      fingerprint: str | None = None) -> list[str]:
    """The ids among ``ids`` that are not yet computed under ``fingerprint`` (default: the step's
    :func:`applied_fingerprint`); with ``retry_failed`` also those whose last failure was transient."""
    if force or not ws.has_column(step.column):
        return list(ids)
    return work_and_stored(ws, step, ids, retry_failed=retry_failed, fingerprint=fingerprint)[0]


def work_and_stored(ws: Workspace, step: Any, ids: list[str], *, force: bool = False, retry_failed: bool = False,
                    fingerprint: str | None = None) -> tuple[list[str], dict[str, str | None]]:
    """(:func:`rows_needing_work`'s ids, the column's stored fingerprints by row id as read for them: {} without the
    column): ``apply`` counts the rows it computes again and checks the rows outside those asked with the same read
    (it read the column's fingerprints three times an apply)."""
    if not ws.has_column(step.column):
        return list(ids), {}
    stored = ws.column_fingerprints(step.column)
    if force:
        return list(ids), stored
    fingerprint = fingerprint or applied_fingerprint(ws, step)
    done = dict(stored)
    for rid in unrecorded_gaps(ws, step.column, fingerprint, step.granularity):  # a write a kill cut short: again
        done[rid] = None
    todo = [rid for rid in ids if done.get(rid) != fingerprint]
    if retry_failed and ws.has_column(f"{step.column}_failure"):
        have = [rid for rid in ids if done.get(rid) == fingerprint]
        for rid, fails in zip(have, ws.failures(step.column, have), strict=True):
            if any(f.code in TRANSIENT_FAILURES for f in fails):
                todo.append(rid)
    return todo, stored


def unrecorded_gaps(ws: Workspace, column: str, fingerprint: str, granularity: str = "turn") -> list[str]:
    """Rows marked done under ``fingerprint`` whose value (with ``granularity`` turn: a turn's) is missing with no
    failure recorded: a step never stores that (``check_output``), but a process killed between ``_store``'s writes
    does, on a re-run that had cleared a row's earlier failure before its new value was written. A row step's value
    is whatever it returned (a list holding None is a value)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    table = read_arrow(ws._column_path(column))
    if "fingerprint" not in table.column_names or not table.num_rows:
        return []
    values = table.column("value").combine_chunks()
    missing = np.asarray(values.is_null().to_numpy(zero_copy_only=False), bool)
    if granularity == "turn" and (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)):
        parents = pc.list_parent_indices(values).to_numpy()
        holes = np.asarray(pc.is_null(pc.list_flatten(values)).to_numpy(zero_copy_only=False), bool)
        missing |= np.bincount(parents[holes], minlength=len(values)) > 0
    missing &= np.asarray(pc.equal(table.column("fingerprint"), fingerprint).fill_null(False).to_numpy(
        zero_copy_only=False), bool)
    suspects = table.column("id").take(pa.array(np.flatnonzero(missing)))
    if not len(suspects) or not ws.has_column(f"{column}_failure"):
        return suspects.to_pylist()
    failures = read_arrow(ws._column_path(f"{column}_failure"))
    cells = failures.column("value")
    recorded = (pc.greater(pc.fill_null(pc.list_value_length(cells), 0), 0) if pa.types.is_list(cells.type)
                else pc.is_valid(cells))  # the first curate's text cells (None: no failure)
    failed = failures.filter(recorded).column("id")
    return suspects.filter(pc.invert(pc.is_in(suspects, value_set=failed.combine_chunks()))).to_pylist()








def drop_stale_rows(ws: Workspace, step: Any, ids: list[str]) -> int:
    """Remove from ``step``'s column, and from its failure and side columns, the rows outside ``ids`` that it holds
    under other settings; how many. A workspace of an earlier curate, whose ``curate run`` scored rows a filter
    drops today (duplicates), was refused as a column mixing two runs once the step changed. Removed, not computed
    again: no call is paid for a row a filter dropped."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not ws.has_column(step.column):
        return 0
    fingerprint, asked = applied_fingerprint(ws, step), set(ids)
    stale = [rid for rid, fp in ws.column_fingerprints(step.column).items() if rid not in asked and fp != fingerprint]
    if not stale:
        return 0
    gone = pa.array(stale, pa.string())
    with ws.column_lock(step.column):
        # a damaged side column is not listed (no "of" to read): named, as reading it would, not left with the rows.
        # The step's provenance names its side columns; a column stored before it did, by the name's start, less
        # the columns whose own failure column is readable (words_v2, a step beside words)
        sides = ws.column_provenance(step.column).get("side_columns")
        if sides is None:
            steps = {prov.get("of") for prov in ws.columns.values() if prov.get("kind") == "failure"}
            sides = [d.name for d in ws.damaged if d.name.startswith(f"{step.column}_") and d.name not in steps]
        if side := [d for d in ws.damaged if d.kind == "column" and d.name in sides]:
            raise DamagedFileError(side[0])
        for name in [step.column, *(n for n, prov in ws.columns.items()
                                    if prov.get("of") == step.column or failures_of(n, prov) == step.column)]:
            table = read_arrow(ws._column_path(name))
            kept = table.filter(pc.invert(pc.is_in(table.column("id"), value_set=gone)))
            ws.add_column(name, kept.column("value"), schema_meta(ws._column_path(name)), ids=kept.column("id"),
                          fingerprints=kept.column("fingerprint") if "fingerprint" in kept.column_names else None,
                          value_type=kept.schema.field("value").type)
    return len(stale)


def apply_to_rows(ws: Workspace, step: Any, ids: list[str], progress: bool = True) -> ApplyResult:
    """``ws.apply(step, ids)`` for a run that computes only the rows it keeps (``curate run``), after
    :func:`drop_stale_rows`."""
    dropped = drop_stale_rows(ws, step, ids)
    result = ws.apply(step, ids, progress=progress)
    result.stale_dropped = dropped
    return result


def apply_step(ws: Workspace, step: Any, ids: list[str] | None = None, *, force: bool = False,
               retry_failed: bool = JUDGE.retry_failed, progress: bool = True) -> ApplyResult:
    """Run ``step`` on the rows of ``ids`` (default: the whole pool) that need it; see the module doc."""
    check_step(step)
    if not ws.has_pool:  # before the step's own checks: not "no column 'quality'; derived columns [], pool fields []"
        raise no_pool_loaded(ws)
    if not ws.has_column(step.column):  # before the work: not the OS's "File name too long" once it is done
        check_new_name(step.column)
    check_side_columns(ws, step.column)
    started = time.time()
    with contextlib.ExitStack() as locked:
        try:
            locked.enter_context(ws.column_lock(step.column))
        except OSError:  # no lock file can be made (a read-only workspace): fine when nothing needs writing either
            ws.refresh()  # unlocked, each column file read is one whole version (they are replaced, never changed)
            asked, _, todo, _ = _rows_to_do(ws, step, ids, force, retry_failed)
            if todo:
                raise
            return _result(ws, step, asked, todo, started)
        ws.refresh()  # rows another process loaded since this object read the pool are rows to compute too
        asked, fingerprint, todo, stored = _rows_to_do(ws, step, ids, force, retry_failed)
        redone = sum(1 for rid in todo if rid in stored and stored[rid] != fingerprint)
        if todo and ids is not None:
            check_one_run(ws, step, set(asked), fingerprint, stored)
        before: dict[str, Any] = {}  # the column's provenance before this run's write ({}: no write, or no column)
        if todo:
            chunk = getattr(step, "rows_per_call", None) or len(todo)
            if chunk < len(todo):  # parts of rows sorted by id (content hashes): a scorer's batch-mates, and so its
                todo = sorted(todo)  # last digits, follow the rows, not the order the pool file held them in
            for name in step.inputs:  # before the bar: not a 0/300 bar drawn, then the error
                if not ws.has_column(name) and name not in ws.pool.column_names:
                    raise no_step_input(ws.path, name)
            bar = progress_bar(len(todo), step.column, progress)
            outputs = []
            try:
                for start in range(0, len(todo), chunk):
                    rows = ws.row_inputs(todo[start:start + chunk], step.inputs)
                    outputs.append(step.run(rows, StepContext(bar, ws.cache_dir, ws.path)))
                    check_output(step, rows, outputs[-1])
                if any(fails for out in outputs for fails in out.failures):
                    show_failed(bar)
            except KeyboardInterrupt as interrupt:  # in a notebook: a bare KeyboardInterrupt from thread internals
                done = "" if bar.disable else f" after {bar.n:,} of its {len(todo):,} rows"
                interrupt.add_note(f"curate: ws.apply of {step.column!r} stopped{done}, before writing the column (it "
                                   f"is as it was); {KEPT_ON_INTERRUPT}: run the same call again to go on")
                raise
            finally:
                bar.close()
            joined = join_outputs(outputs)
            check_replaces_with_something(ws, step, todo, joined)
            before = ws.column_provenance(step.column) if ws.has_column(step.column) else {}
            _store(ws, step, todo, joined, fingerprint, time.time() - started)
            for on_stored in joined.on_stored:
                on_stored()
        result = _result(ws, step, asked, todo, started, redone)
        if before and before.get("kind") != result.provenance.get("kind"):  # a judge over a scorer's column: said
            result.took_over = before
        if result.failed_now and not _FAILURES_TOLD_BY_CALLER.get():  # rows failed now (not failures reused): a
            warn(result.failed_now_warning())  # notebook's call returned without a word
        return result


def _rows_to_do(ws: Workspace, step: Any, ids: list[str] | None, force: bool,
                retry_failed: bool) -> tuple[list[str], str, list[str], dict[str, str | None]]:
    """(the rows asked for, the step's fingerprint, those of them that need the step, the column's stored
    fingerprints), once the step's own checks of the workspace pass."""
    asked = ws.ids if ids is None else list(dict.fromkeys(ids))
    if ids is not None:
        check_ids_in_pool(ws, asked)
    fingerprint = applied_fingerprint(ws, step)
    check_column = getattr(step, "check_column", None)
    if check_column is not None:  # the step's own rule about the column it would write
        check_column(ws)
    check_inputs = getattr(step, "check_inputs", None)
    if check_inputs is not None:  # the step names its own source (a prompt file) when a column it reads is absent
        check_inputs(ws)
    todo, stored = work_and_stored(ws, step, asked, force=force, retry_failed=retry_failed, fingerprint=fingerprint)
    return asked, fingerprint, todo, stored


def _result(ws: Workspace, step: Any, asked: list[str], todo: list[str], started: float,
            redone: int = 0) -> ApplyResult:
    """What a run that asked for ``asked`` and computed ``todo`` leaves in ``step``'s column."""
    asked, todo, left_pool = _still_in_pool(ws, asked, todo)
    written = ws.has_column(step.column)  # not when no row was asked for and none was computed before
    failures = ws.failures(step.column, asked) if written else []
    failed = sum(1 for fails in failures if fails)
    failures_now = ws.failures(step.column, todo) if written and todo else []
    return ApplyResult(step.column, len(asked), len(todo), len(asked) - len(todo), failed,
                       round(time.time() - started, 2), ws.column_provenance(step.column) if written else {},
                       sum(1 for fails in failures_now if fails), failure_reasons=failure_reasons(failures),
                       left_pool=left_pool, redone=redone, failure_reasons_now=failure_reasons(failures_now))


def _still_in_pool(ws: Workspace, asked: list[str], todo: list[str]) -> tuple[list[str], list[str], int]:
    """(the rows of ``asked``, of ``todo``, the pool holds after the run's writes; how many of ``asked`` it no longer
    holds). Each write reads the pool on disk again under the lock (``merge_column``) and leaves out the rows a load
    by another process, object or thread removed while the step ran: the result counts what was written."""
    if asked is ws.ids:  # the pool the run started on (a load that removes nothing is no reason to look)
        return asked, todo, 0
    index = ws.index
    kept = [rid for rid in asked if rid in index]
    if len(kept) == len(asked):
        return asked, todo, 0
    return kept, [rid for rid in todo if rid in index], len(asked) - len(kept)


def _store(ws: Workspace, step: Any, ids: list[str], out: StepOutput, fingerprint: str, seconds: float) -> None:
    failed = sum(1 for f in out.failures if f)
    run = {"fingerprint": fingerprint, "rows": len(ids), "failed": failed, "seconds": round(seconds, 2),
           "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **out.stats}
    old = ws.column_provenance(step.column) if ws.has_column(step.column) else {}
    runs, earlier = with_run(old.get("runs") or [], run), old.get("earlier_runs")
    if len(runs) > RUN_HISTORY:  # what the dropped runs paid stays counted
        earlier, runs = fold_runs(earlier, runs[:-RUN_HISTORY]), runs[-RUN_HISTORY:]
    failures = [[f.to_dict() for f in fails] or None for fails in out.failures]
    rewrite_legacy_failures(ws, step.column)  # the first curate's text cells: merged into as today's failures
    # The value column goes last: its per-row fingerprints are what marks a row done, so a process killed
    # between these writes leaves rows to recompute, never a row marked done without its failure record.
    ws.merge_column(f"{step.column}_failure", ids, failures,
                    {"kind": "failure", "of": step.column, "fingerprint": fingerprint}, fingerprint,
                    value_type=failure_arrow_type())
    for key, values in out.extra.items():
        ws.merge_column(f"{step.column}_{key}", ids, values,
                        {"kind": "extra", "of": step.column, "fingerprint": fingerprint,
                         "granularity": step.granularity}, fingerprint)
    sides = sorted({*old.get("side_columns", ()), f"{step.column}_failure", *(f"{step.column}_{k}" for k in out.extra)})
    # a part of a pass (the Ray engine stores one as its batches come back): the run's stats are the pass's so far
    stats = {key: runs[-1].get(key, value) for key, value in out.stats.items()} if runs[-1] is not run else out.stats
    provenance = {**step.describe(), "granularity": step.granularity, "reducer": step.reducer,
                  "inputs": list(step.inputs), "fingerprint": fingerprint, "runs": runs, "side_columns": sides,
                  **({"earlier_runs": earlier} if earlier else {}), **_column_stats(ws, step, ids, out, stats)}
    ws.merge_column(step.column, ids, out.values, provenance, fingerprint)


def _column_stats(ws: Workspace, step: Any, ids: list[str], out: StepOutput, stats: dict[str, Any]
                  ) -> dict[str, Any]:
    """The provenance's top-level stats: this run's (``stats``; ``runs`` keeps each run's), except those a step's
    ``column_stats(values, extra)`` counts over the whole column as it will be stored (its earlier rows with this
    run's merged in, pool order; ``extra``: its side columns, already written), named in ``whole_column_stats``:
    they describe the column, not the last run (a run on 17 rows, then one on the rest, said 0 flagged rows of
    a column holding one)."""
    column_stats = getattr(step, "column_stats", None)
    if column_stats is None:
        return stats
    values = ws.column(step.column) if ws.has_column(step.column) else [None] * len(ws)
    index = ws.index
    for rid, value in zip(ids, out.values, strict=True):
        if rid in index:  # not a row a load removed while the step ran (its value is not written)
            values[index[rid]] = value
    extra = {key: ws.column(f"{step.column}_{key}") for key in out.extra}
    whole = column_stats(values, extra)
    return {**stats, **whole, "whole_column_stats": sorted(whole)}  # the rest: the last run's, as runs[-1]


def merge_column(ws: Any, name: str, ids: list[str], values: list[Any], provenance: dict[str, Any],
                 fingerprint: str | None, value_type: Any = None) -> None:
    """``Workspace.merge_column``'s body (caller holds the lock): the column's stored rows with ``values`` for
    ``ids`` over them, rewritten in pool order (rows no longer in the pool left out), merged by id in Arrow."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if len(set(ids)) != len(ids):  # the last value of an id repeated wins
        last = dict(zip(ids, values, strict=True))
        ids, values = list(last), list(last.values())
    new = pa.table({"id": pa.array(ids, pa.string()), "value": pa.array(values, type=value_type),
                    "fingerprint": pa.array([fingerprint] * len(ids), pa.string())})
    tables = [new]
    if ws.has_column(name):
        old = read_arrow(ws._column_path(name))
        if "fingerprint" not in old.column_names:
            old = old.append_column("fingerprint", pa.nulls(len(old), pa.string()))
        old = old.select(["id", "value", "fingerprint"]).replace_schema_metadata(None)
        old = old.filter(pc.invert(pc.is_in(old.column("id"), value_set=new.column("id"))))
        if old.num_rows:  # none left: not merged, so a column stored in an earlier curate's shape (a judge's
            tables.insert(0, old)  # row scores, today per-turn lists) is rewritten in today's by a run on every row
    merged = pa.concat_tables(tables, promote_options="permissive")
    position = pc.index_in(merged.column("id"), value_set=ws.pool.data.table.column("id"))
    merged = merged.append_column("position", position).filter(pc.is_valid(position)).sort_by("position")
    ws.add_column(name, merged.column("value"), provenance, ids=merged.column("id"),
                  fingerprints=merged.column("fingerprint"), value_type=value_type)
