"""The scores and signals of a Ray pass, stored in the workspace's columns as the actors' batches come back.

:class:`ColumnCommits` stores the rows of the batches come back through ``ws.apply`` with
:class:`~curate.scale.infer.Precomputed` (the one path every step's values take: per-row fingerprints, failure and
side columns, provenance, the column lock), at most every ``curate.embed.cache.PART_EVERY_S`` seconds (the cadence of
the vectors, :class:`~curate.scale.collect.VectorCommits`) and when the pass ends or fails. A run killed part way
keeps those rows: the next run finds them stored under the same fingerprint (``rows_needing_work``) and its actors
compute only the rest. :func:`store_rest` stores what the pass's commits did not, and counts the rows they stored as
computed by this run.

Each write rewrites the columns (``ws.merge_column``), so on a large pool the writes are spaced out to take at most
``WRITE_SHARE`` of the pass's time (the writing itself, not a wait for another writer's column lock), but never
more than ``SCALE.commit_wait_max_s`` apart. Each column is written under its own lock, and no lock is held while waiting for
another: a column another writer holds is left for later while the others are written (part way its rows stay pending
for a later batch, the driver going on pulling the actors' batches; when the pass ends the commit then waits for each
such lock in turn). A writer holding one of the pass's columns and waiting for another of them (a second run storing
other scores) then gets it: the commit held every lock while it waited for the last one, so the two stalled each other.

A column holding rows of the pool under other settings (a scorer changed since) is stored when the pass ends, as
before: a part stored beside them would mix two runs' values in one column (``check_one_run`` refuses that).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from curate.defaults import SCALE
from curate.errors import warn
from curate.scale.infer import Precomputed
from curate.storage.apply import (
    applied_fingerprint,
    apply_to_rows,
    drop_stale_rows,
    failures_told_by_caller,
    rows_needing_work,
)
from curate.storage.apply_result import ApplyResult
from curate.storage.failures import failure_reasons

WRITE_SHARE = 0.1  # at most this share of a pass goes to writing columns: a write of s seconds, then 9s without


class _Busy(Exception):
    """Another writer holds a column lock (a commit part way is put off)."""


def _busy() -> None:
    raise _Busy


def turns_scored(results: dict[str, tuple[Any, list]]) -> int:
    """Turns given a value in ``results`` (row id -> (per-turn values, failures)): a scorer run's ``turns_scored``."""
    return sum(v is not None for value, _ in results.values() for v in (value or []))


def run_stats(info: dict[str, Any], results: dict[str, tuple[Any, list]], scorer: bool,
              pass_rows: int | None = None, counts: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run record's stats over ``results``: the actor pool (``info``: ``engine``; its ``pass_started`` is when the
    pass began: the record's ``seconds`` are its writes' time, the pass ran until its ``finished``); a ``scorer``'s
    also the turns it scored (a signal step's run records its own counts). ``pass_rows``: the rows the pass stores in
    the column when it writes them part by part (``engine.pass_rows``): a record with fewer ``rows`` is of a pass that
    did not finish (killed). ``counts``: the step's own run counts the actors' batches of these rows returned (a
    signal's ``turns_truncated``, ``requests`` and ``cached_requests``, a scorer's ``texts_encoded``...), summed."""
    engine = {**info, **({"pass_rows": pass_rows} if pass_rows is not None else {})}
    if not scorer:
        return {**(counts or {}), "engine": engine}
    return {**(counts or {}), "engine": engine or {"name": "ray"}, "turns_scored": turns_scored(results)}


def stored_part_way(ws: Any, step: Any, ids: Sequence[str]) -> bool:
    """Whether ``step``'s column may take the pass's rows part by part: once the rows outside ``ids`` it holds under
    other settings are dropped (as ``apply_to_rows`` drops them), every row it holds is under the step's settings."""
    drop_stale_rows(ws, step, list(ids))
    if not ws.has_column(step.column):
        return True
    fingerprint, index = applied_fingerprint(ws, step), ws.index
    return all(fp == fingerprint for rid, fp in ws.column_fingerprints(step.column).items() if rid in index)


class ColumnCommits:
    """The rows of a pass's batches, stored in ``ws``'s columns of ``steps`` (the scorers and signal steps run on the
    actors) as they come back; ``ids``: the rows the run stores values for (``run.scored_ids()``); ``info``: the actor
    pool (the run record's ``engine``). ``stored[column]``: (rows stored, rows of them with a failure)."""

    def __init__(self, ws: Any, steps: Sequence[Any], ids: Sequence[str], info: dict[str, Any]):
        self.ws, self.info = ws, info
        self.steps = [s for s in steps if stored_part_way(ws, s, ids)]
        # the pass computes the rows any of the steps needs: each column takes only those it lacks (one it already
        # holds under these settings is skipped, as the single-process step skips it)
        self.needed = {s.column: set(rows_needing_work(ws, s, list(ids))) for s in self.steps}
        self.pending: list[str] = []
        self.results: dict[str, dict[str, tuple[Any, list]]] = {}
        self.extra: dict[str, dict[str, dict[str, Any]]] = {}
        self.counts: dict[str, dict[str, Any]] = {}
        self.stored: dict[str, tuple[set[str], int]] = {s.column: (set(), 0) for s in self.steps}
        self.last = time.monotonic()
        self.wait = 0.0  # after a write, the next waits this long too (see WRITE_SHARE)

    def add(self, rows: list[str], results: dict[str, dict[str, tuple[Any, list]]],
            extra: dict[str, dict[str, dict[str, Any]]], counts: dict[str, dict[str, Any]] | None = None) -> None:
        """``rows``: a batch's rows the actors computed, their values in ``results`` / ``extra`` (the pass's own,
        filled as batches come back; ``counts``: column -> the run counts of the batches not stored yet, which a
        write of the column takes into its run record and empties); stored once ``PART_EVERY_S`` seconds have passed since the last commit, and
        ``wait`` (each write rewrites the columns: on a large pool the writes must not hold up the pass)."""
        from curate.embed import cache

        self.results, self.extra, self.counts = results, extra, counts if counts is not None else self.counts
        self.pending.extend(rows)
        if time.monotonic() - self.last >= max(cache.PART_EVERY_S, self.wait):
            self.commit(wait=False)

    def commit(self, wait: bool = True) -> bool:
        """Store the pending rows in each column (one ``ws.apply`` per step; a row a kill left stored for some steps
        only is computed again, and stored for the others), under that column's lock. A column whose lock another
        writer holds is left for later, holding no lock while the others are written: ``wait`` True (the end of a
        pass) then waits for each such lock in turn, holding none of the others (a writer holding one of them waits
        for nothing of ours); ``wait`` False (part way) leaves its rows pending for the next commit and returns False.
        The next commit part way waits ``WRITE_SHARE`` of the time the writing took (at most
        ``SCALE.commit_wait_max_s``)."""
        columns = sorted({s.column for s in self.steps if self._rows_for(s)})
        busy: list[str] = []
        writing: float | None = None  # the writing's own time, not the waits for the locks (None: nothing written)
        while columns:
            for column in columns:
                try:
                    writing = (writing or 0.0) + self._store_column(column, on_wait=_busy)
                except _Busy:
                    busy.append(column)
            if not busy or not wait:
                break
            # every lock left is held by another writer: wait for the first, holding none, then try the rest again
            writing = (writing or 0.0) + self._store_column(busy.pop(0), on_wait=None)
            columns, busy = busy, []
        left = set().union(*(self._rows_for(s) for s in self.steps))
        self.pending = [rid for rid in self.pending if rid in left]
        if writing is not None:
            self.wait = min(SCALE.commit_wait_max_s, writing * (1 / WRITE_SHARE - 1))
        if writing is not None or not busy:  # nothing written, a column put off: tried again with the next batch
            self.last = time.monotonic()
        return not busy

    def _rows_for(self, step: Any) -> set[str]:
        """The pending rows ``step``'s column needs and has not stored yet."""
        done = self.stored[step.column][0]
        return {rid for rid in self.pending if rid in self.needed[step.column] and rid not in done}

    def _store_column(self, column: str, on_wait: Callable[[], None] | None) -> float:
        """Store the pending rows of ``column``'s steps holding its lock (``on_wait``: ``ws.column_lock``'s, called
        if another writer holds it); the seconds the writing took."""
        with self.ws.column_lock(column, on_wait=on_wait):
            started = time.monotonic()
            for step in [s for s in self.steps if s.column == column]:
                rows = self._rows_for(step)
                mine = [rid for rid in self.pending if rid in rows]
                if not mine:
                    continue
                part = {rid: self.results[step.column][rid] for rid in mine}
                sides = self.extra.get(step.column)  # a signal step's side values (a scorer has none)
                stats = run_stats(self.info, part, sides is None, pass_rows=len(self.needed[step.column]),
                                  counts=self.counts.get(step.column))
                with failures_told_by_caller():  # the pass's total, once, by store_rest: not a warning a part
                    result = self.ws.apply(Precomputed(step, part, stats, {rid: sides[rid] for rid in mine}
                                                       if sides is not None else None), mine, progress=False)
                done, failed = self.stored[step.column]
                self.stored[step.column] = (done | set(mine), failed + result.failed_now)
                self.counts.get(step.column, {}).clear()  # in this write's run record: the next write counts the rest
            return time.monotonic() - started


def store_rest(ws: Any, step: Any, results: dict[str, tuple[Any, list]], extra: dict[str, dict[str, Any]] | None,
               info: dict[str, Any], ids: list[str], progress: bool,
               stored: tuple[set[str], int] | None = None, counts: dict[str, Any] | None = None) -> ApplyResult:
    """``apply_to_rows`` of ``step`` on ``ids`` with the actors' ``results`` (and a signal step's side values
    ``extra``; None for a scorer) the pass's commits did not store (``stored``: rows stored, of them failed); the result counts those as computed now.
    Warns once of the rows failed in the whole pass (its commits and this write), with their reason codes."""
    done, failed = stored or (set(), 0)
    need = set(rows_needing_work(ws, step, ids))  # the pass computed rows other steps needed too: not counted here
    rest = {rid: value for rid, value in results.items() if rid not in done and rid in need}
    sides = {rid: value for rid, value in (extra or {}).items() if rid not in done}
    counted = len(done.intersection(ids))
    stats = run_stats(info, rest, extra is None, pass_rows=counted + len(rest) if stored is not None else None,
                      counts=counts if rest else None)  # the batches' counts no write of the pass took
    with failures_told_by_caller():
        result = apply_to_rows(ws, Precomputed(step, rest, stats, sides if extra is not None else None), ids, progress)
    if done:
        result.computed, result.skipped = result.computed + counted, result.skipped - counted
        result.failed_now += failed
        if failed:  # the reasons of the rows failed in the commits too, not only in this write
            now = [rid for rid in ids if rid in done or rid in rest]
            result.failure_reasons_now = failure_reasons(ws.failures(step.column, now))
    if result.failed_now:
        warn(result.failed_now_warning())
    return result
