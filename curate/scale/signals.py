"""Token-level model signals on Ray actors: `curate run --engine ray --signal ifd`.

Each actor loads one causal LM beside its other models (:class:`curate.scale.infer.Inference`) and runs the
signal steps' own ``run`` on its batches. When the score pass runs, the signals ride along in it (one round
of actors loads every model); otherwise the ``signals`` step makes a pass of its own. The driver stores the
values, failures and side columns through ``ws.apply`` with :class:`~curate.scale.infer.Precomputed` as the
actors' batches come back (:mod:`.commits`), so the columns are what ``ws.signal`` writes (same fingerprint and
provenance, plus the engine) and a killed run's rerun computes only the rows not stored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curate.scale.commits import store_rest
from curate.storage.apply import apply_to_rows


def signals_to_compute(run: Any, ids: list[str]) -> tuple[list, list[str]]:
    """The signal steps of ``run`` with rows of ``ids`` (``run.scored_ids()``) left to compute, and those rows
    (none when the run asks for no signals or they are all stored)."""
    if not run.signals:
        return [], []
    from curate.signals.steps import signal_steps

    steps = signal_steps(run.signals, run.signal_model)
    todo = needing_work(run.ws, steps, ids)
    return (steps if todo else []), todo


def needing_work(ws: Any, steps: list, ids: list[str]) -> list[str]:
    """The ids of ``ids`` (in order) that one of ``steps`` has still to compute: the rows the actors' scorers and
    language model run on. Every kept row was passed through them before, so an edited source cost a full pass."""
    from curate.storage.apply import rows_needing_work

    need = {rid for s in steps for rid in rows_needing_work(ws, s, ids)}
    return [rid for rid in ids if rid in need]


def signals_on_ray(engine: Any, run: Any, fallback: Callable[[Any], Any] | None) -> dict[str, Any]:
    """The token-level signals ``run.signals`` on the actor pool (one causal LM per actor), stored through
    ``ws.apply`` under the signal steps' own fingerprints and provenance, for the rows the score step scores (as on
    the single engine, a duplicate costs no forward pass)."""
    if not engine._whole_pool:  # other sources in the workspace: the single-process step sees the whole pool
        return fallback(run)
    from curate.signals.steps import signal_steps

    steps = signal_steps(run.signals, run.signal_model)
    ids = run.scored_ids()  # read once: each call reads the filter selection and walks the pool's ids
    if not all(s.column in engine._results for s in steps):  # they did not ride along in the score pass
        if not (todo := needing_work(run.ws, steps, ids)):
            return {s.column: apply_to_rows(run.ws, s, ids, run.progress) for s in steps}
        engine._infer([], signal_steps=steps, signal_model=run.signal_model, embed=False, only=todo,
                      progress=run.progress, ws=run.ws, ids=ids)  # the rows computed are stored as batches come back
    return {s.column: store_rest(run.ws, s, engine._results.get(s.column, {}), engine._extra.get(s.column, {}),
                                 engine._inference_info, ids, run.progress, engine._stored.get(s.column),
                                 engine._counts.get(s.column))
            for s in steps}
