"""The checks ``Workspace.apply`` makes of a step and its output before anything is stored (curate.storage.apply):
the output's shape, NaN and infinities as failures, one run per column, no run that values nothing wiping a column
that holds values, a step column that is no other step's side column."""

from __future__ import annotations

import math
import numbers
from typing import Any

from curate.codes import Failure, FailureCode
from curate.errors import CurateError, OptionError, WorkspaceError
from curate.storage.failures import failure_reasons, failures_of
from curate.storage.files import read_arrow
from curate.storage.step import RowInput, StepOutput

Workspace = Any  # a curate.storage.workspace.Workspace (not imported: it imports curate.storage.apply)


def check_output(step: Any, rows: list[RowInput], out: StepOutput) -> None:
    n = len(rows)
    if len(out.values) != n or len(out.failures) != n:
        raise CurateError(f"step {step.column!r} returned {len(out.values)} values and {len(out.failures)} failure "
                          f"lists for {n} rows")
    for key, col in out.extra.items():
        if len(col) != n:
            raise CurateError(f"step {step.column!r}: extra column {key!r} has {len(col)} values for {n} rows")
    not_finite_as_failures(step, out)
    for row, value, fails in zip(rows, out.values, out.failures, strict=True):
        if step.granularity == "turn":
            if value is not None and (not isinstance(value, list) or len(value) != len(row.turns)):
                raise CurateError(f"step {step.column!r}: row {row.id} has {len(row.turns)} turns but the value "
                                  f"is {value!r:.80}")
            missing = value is None or any(v is None for v in value)
        else:
            missing = value is None
        if missing and not fails:
            raise CurateError(f"step {step.column!r}: row {row.id} has no value and no failure (a silent gap)")


def not_finite(v: Any) -> bool:
    """NaN or an infinity, a Python or numpy float (numbers.Real): no value, wherever it is read as a score."""
    return isinstance(v, numbers.Real) and not isinstance(v, numbers.Integral) and not math.isfinite(v)


def not_finite_as_failures(step: Any, out: StepOutput) -> None:
    """A NaN or infinite number from a step is no value, with a failure saying so: stored, it counted as a filled
    score, reports showed mean ``nan``, and selectors read it as a score."""
    out.values, out.failures = list(out.values), list(out.failures)  # a tuple or a numpy array of floats, as lists
    for i, value in enumerate(out.values):
        if step.granularity == "turn" and not isinstance(value, list):
            continue  # a per-turn value that is no list is refused by the shape check, NaN or not
        if step.granularity == "turn":
            turns = [t + 1 for t, v in enumerate(value) if not_finite(v)]
            if turns:
                out.values[i] = [None if not_finite(v) else v for v in value]
                out.failures[i] = [*out.failures[i], *(Failure(FailureCode.NOT_FINITE, f"{step.column} gave "
                                                                f"{value[t - 1]}", str(value[t - 1]), turn=t)
                                                        for t in turns)]
        elif not_finite(value):
            out.values[i] = None
            out.failures[i] = [*out.failures[i], Failure(FailureCode.NOT_FINITE, f"{step.column} gave {value}",
                                                         str(value))]


def column_was(prov: dict[str, Any]) -> str:
    """What wrote a column, in words: ``a judge column, model M, prompt P``."""
    return ", ".join([f"a {prov.get('kind') or 'loaded'} column"]
                     + [f"{k} {prov[k]}" for k in ("model", "prompt") if prov.get(k)])


def check_one_run(ws: Workspace, step: Any, asked: set[str], fingerprint: str,
                  stored: dict[str, str | None] | None = None) -> None:
    """Refuse a run on some rows under other settings (another producer, model, prompt) than the column's other
    rows were computed under: the column would mix two runs' values under the newest run's provenance. (A run on
    every row replaces them all: a judge may take over the column a shipped scorer wrote; see
    :func:`check_replaces_with_something` for a run that gave no value.) ``stored``: the column's fingerprints by row id
    when the caller has read them."""
    if not ws.has_column(step.column):
        return
    stored = ws.column_fingerprints(step.column) if stored is None else stored
    others = [fp for rid, fp in stored.items()
              if rid not in asked and rid in ws.index and fp != fingerprint]
    if others:
        was = column_was(ws.column_provenance(step.column))
        raise OptionError(f"column {step.column!r}: {len(others):,} rows outside the ones asked for were computed "
                          f"under other settings ({was}); a run on some rows would leave the "
                          f"column mixed: run it on every row (no --limit / ids) or give it its own column "
                          f"(--column NAME; column=NAME in Python)")


def has_value(value: Any) -> bool:
    """A row's stored or returned value holds a number (a per-turn list: for one turn at least)."""
    return value is not None and (not isinstance(value, list) or any(v is not None for v in value))


def check_replaces_with_something(ws: Workspace, step: Any, ids: list[str], out: StepOutput) -> None:
    """Refuse to store a run that gave no value for any of ``ids`` over rows of the column that hold values (a
    judge taking over a scorer's column, another model, ``force``): a judge whose server never answered wiped
    every score. The column keeps its values; the error gives the counts, the failure reasons and what wrote
    them. A run that valued some rows takes the column over: the rows it could not value hold its failure
    (transient ones are sent again by a re-run, and until then ``curate score`` exits 1, ``curate run`` 75, or 78
    where the settings were refused)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not ws.has_column(step.column) or any(map(has_value, out.values)):
        return
    table = read_arrow(ws._column_path(step.column))
    valued = sum(has_value(v) for v in table.filter(pc.is_in(table.column("id"), value_set=pa.array(
        ids, pa.string()))).column("value").to_pylist())
    if not valued:
        return
    reasons = "; ".join(f"{n:,} x {code} (e.g. {detail})" for code, (n, detail) in
                        sorted(failure_reasons(out.failures).items(), key=lambda item: -item[1][0]))
    raise CurateError(f"column {step.column!r} keeps its earlier values ({valued:,} rows, "
                      f"{column_was(ws.column_provenance(step.column))}): the run on {len(ids):,} rows gave no value "
                      f"({reasons}), so nothing was written; fix the cause and re-run (answered requests come from "
                      f"the cache), or give the run its own column (--column NAME; column=NAME in Python)")


def check_side_columns(ws: Workspace, column: str) -> None:
    """Refuse a step column that is another step's side column (``zz_failure`` written by a scorer as its own
    column), or whose failure column is another's: the two writes met in an Arrow type error, a traceback."""
    own = ws.column_provenance(column) if ws.has_column(column) else {}
    if own.get("kind") in ("failure", "extra") and own.get("of") != column:
        raise WorkspaceError(f"{ws.path}: column {column!r} holds the {own['kind']} values of column {own.get('of')!r}; "
                             "give the step another column name")
    side = f"{column}_failure"
    held = ws.column_provenance(side) if ws.has_column(side) else {}
    if held and failures_of(side, held) != column:  # the same step's, in today's form or the first curate's
        raise WorkspaceError(f"{ws.path}: column {side!r}, where {column!r} would record its failures, holds another "
                             f"step's values ({held.get('kind') or 'loaded'}); give the step another column name")
