"""The Step contract: columns in, columns out, fingerprinted.

A step (a judge, a trained scorer, the tagger, an embedding model, a model signal...) is a plain
object with the attributes and methods of :class:`Step`. ``Workspace.apply(step)`` owns everything
around it: which rows need work (a row already computed under the same fingerprint is skipped), id
alignment, merging a subset into the column, provenance, the failure column, the lock that stops two
processes paying twice, and the progress bar. No base class to inherit: a protocol. A step may also
define ``check_column(ws)``: ``apply`` calls it under the column lock before any work, so a step can refuse
to write its column (a trained scorer never writes over a judge's labels), ``check_inputs(ws)``: called there too,
so a step can refuse inputs the workspace lacks in its own words (a judge names its prompt file), and ``rows_per_call``: a step that
computes each row on its own says so, and ``apply`` hands it that many rows at a time (their outputs joined by
:func:`join_outputs`), so a pool's row inputs are never all in memory at once.

Turn steps store one value per user turn for every row (a list, even for single-turn rows) and
declare their reducer (``sum``: DEITA's Σ over turns), which selection, plots, the report and training
all use through :func:`reduce_turns`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from curate.codes import Failure
from curate.errors import NotAStepError, WorkspaceError
from curate.rows import Turn
from curate.storage.roles import wrote_text

GRANULARITIES = ("turn", "row")
REDUCERS: dict[str, Callable[[list[float]], float]] = {
    "sum": math.fsum,
    "mean": lambda v: math.fsum(v) / len(v),
    "max": max,
    "min": min,
    "first": lambda v: v[0],
}


@dataclass
class RowInput:
    """What a step sees of one row."""
    id: str
    conversation: list[dict[str, str]]
    turns: list[Turn]
    columns: dict[str, Any] = field(default_factory=dict)  # the step's declared extra inputs


def turns_replied_by(row: RowInput, column: str | None) -> list[Turn]:
    """``row``'s turns with each reply taken from the derived turn column ``column`` instead of the pool (a turn
    without text there has no reply): a judge or scorer reading a model's own answers. None: the pool's turns."""
    if column is None:
        return row.turns
    values = row.columns.get(column)
    values = values if isinstance(values, list) else [values]
    texts = [v if isinstance(v, str) else None for v in values[: len(row.turns)]]
    texts += [None] * (len(row.turns) - len(texts))
    return [Turn(turn.instruction, text, turn.system) for turn, text in zip(row.turns, texts, strict=True)]


@dataclass
class StepOutput:
    """A step's result for the rows it was given, aligned to them.

    ``values``: per row, a list with one value per turn (turn steps) or one value (row steps); None
    where there is no value, and then ``failures`` of that row says why. ``extra`` holds side columns
    of the same shape (``<column>_<key>``, e.g. a judge's digit mass). ``stats`` goes into provenance: counts and
    sums over the rows given (a step with ``rows_per_call`` runs in parts, whose numbers :func:`join_outputs`
    adds up); what describes the step rather than its rows (a setting, a model) belongs in ``describe()``.
    ``on_stored``: called by ``ws.apply`` once the values and the run record (``stats``) are stored, e.g. to mark
    the responses a judge paid for as recorded in a run (so a run killed before that still counts them).
    """
    values: list[Any]
    failures: list[list[Failure]]
    extra: dict[str, list[Any]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    on_stored: list[Callable[[], None]] = field(default_factory=list)


def add_counts(tally: dict[str, int] | None, **counts: int) -> None:
    """Add ``counts`` to one call's ``tally`` (e.g. what it took from the workspace's caches and what it computed: a
    run's ``stats``); the caller owns the tally (None: not counted), so calls of one step in several threads at once
    each keep their own."""
    if tally is not None:
        tally.update({key: tally.get(key, 0) + int(n) for key, n in counts.items()})


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...


class RowProgress:
    """A step's progress bar advanced by whole rows: each item (a turn, a request) belongs to a row (``owners``),
    and a row counts once all its items are done, in any order; a row without items counts at once."""

    def __init__(self, owners: Sequence[int], n_rows: int, bar: Progress):
        self.bar, self.owners, self.seen, self.counted = bar, list(owners), set(), 0
        self.left = [0] * n_rows
        for row in self.owners:
            self.left[row] += 1
        self.done = sum(1 for n in self.left if n == 0)
        if self.done:
            bar.update(self.done)

    def items_done(self, items: Sequence[int]) -> None:
        """These items (indices into ``owners``) are done; one reported twice counts once."""
        finished = 0
        for i in items:
            if i not in self.seen:
                self.seen.add(i)
                self.left[self.owners[i]] -= 1
                finished += self.left[self.owners[i]] == 0
        if finished:
            self.done += finished
            self.bar.update(finished)

    def count(self, k: int) -> None:
        """``k`` more items done, taken in item order (for callers that only count)."""
        self.items_done(range(self.counted, min(self.counted + k, len(self.owners))))
        self.counted += k

    def finish(self) -> None:
        """Every row done (the rest of the bar)."""
        if self.done < len(self.left):
            self.bar.update(len(self.left) - self.done)
            self.done = len(self.left)


@dataclass
class StepContext:
    """What ``ws.apply`` hands a running step besides the rows."""
    progress: Progress          # call ``progress.update(k)`` as rows finish (a tqdm bar)
    cache_dir: Path             # the workspace's cache folder: response caches, embedding caches, model outputs
    workspace: Path             # the workspace folder (for messages; write only through Workspace methods)
    keep_outputs: bool = True   # False: cache_dir is thrown away after this run (a Ray actor's batch folder), so a
    #                             step skips caches that pay only across runs (the fine-tuned scorer's forward passes)


def join_outputs(outputs: list[StepOutput]) -> StepOutput:
    """The outputs of consecutive chunks of rows as one: values, failures and extra columns in row order; numeric
    stats summed (a sum with a part unknown, None, is unknown: a cost no price was known for), nested dicts joined
    the same way, any other stat the last chunk's."""
    def number(value: Any) -> bool:
        return value is None or isinstance(value, int | float) and not isinstance(value, bool)

    def join_stats(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        out = dict(a)
        for key, value in b.items():
            held = out.get(key)
            if isinstance(held, dict) and isinstance(value, dict):
                out[key] = join_stats(held, value)
            elif key in out and number(held) and number(value):
                out[key] = None if held is None or value is None else held + value
            else:
                out[key] = value
        return out

    if len(outputs) == 1:
        return outputs[0]
    joined = StepOutput([], [], {key: [] for key in outputs[0].extra} if outputs else {})
    for part in outputs:
        joined.values.extend(part.values)
        joined.failures.extend(part.failures)
        for key, column in part.extra.items():
            joined.extra.setdefault(key, []).extend(column)
        joined.stats = join_stats(joined.stats, part.stats)
        joined.on_stored.extend(part.on_stored)
    return joined


@runtime_checkable
class Step(Protocol):
    column: str                    # the column it writes (plus <column>_failure and <column>_<extra>)
    granularity: str               # "turn" or "row"
    reducer: str | None            # for numeric turn steps: how turns make one row value
    inputs: tuple[str, ...]        # pool or derived columns it reads besides the conversation

    def fingerprint(self) -> str:
        """Changes whenever the output could change: config, prompt, model, weights (``ws.apply`` adds the
        fingerprints of the derived columns in ``inputs``: :func:`curate.storage.apply.applied_fingerprint`)."""
        ...

    def describe(self) -> dict[str, Any]:
        """Provenance: what it is (kind, model, prompt, the judge it imitates...)."""
        ...

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        """Compute the rows; call ``ctx.progress.update(k)`` as rows finish; cache expensive work under
        ``ctx.cache_dir`` before using it."""
        ...


def reduce_turns(value: Any, reducer: str | None) -> float | None:
    """One number for a row from its per-turn values (None when any turn has none)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        return value
    if not value or any(v is None for v in value):
        return None
    if reducer is None:
        if len(value) == 1:
            return value[0]
        raise ValueError("a multi-turn value needs a reducer")
    try:
        return REDUCERS[reducer]([float(v) for v in value])
    except KeyError:
        raise ValueError(f"unknown reducer {reducer!r} (known: {', '.join(REDUCERS)})") from None


def check_step(step: Any) -> None:
    """A clear error for an object that does not follow the Step contract."""
    missing = [a for a in ("column", "granularity", "reducer", "inputs", "fingerprint", "describe", "run")
               if not hasattr(step, a)]
    if missing:
        hint = f" (to score with the judge prompt {step!r}: ws.score({step!r}, backend))" if isinstance(step, str) else ""
        raise NotAStepError(f"{type(step).__name__} is not a Step: it lacks {', '.join(missing)}{hint}")
    if step.granularity not in GRANULARITIES:
        raise ValueError(f"step {step.column!r}: granularity must be one of {GRANULARITIES}")
    if step.reducer is not None and step.reducer not in REDUCERS:
        raise ValueError(f"step {step.column!r}: unknown reducer {step.reducer!r} (known: {', '.join(REDUCERS)})")


def check_column_owner(ws: Any, column: str, producer: str, owns: Callable[[dict[str, Any]], bool],
                       advice: str = "give --column (column= in Python) another name",
                       error: type[Exception] = WorkspaceError) -> None:
    """An ``error`` when ``producer`` (e.g. "the quality judge", "a scorer") may not write ``column``: a field of the
    pool file, or a derived column whose provenance ``owns`` says another producer wrote (a judge's labels, another
    signal): its values would be replaced and the columns beside them (digit mass, IFD's losses) left stale."""
    if ws.has_pool and column in ws.pool.column_names:  # the pool file's own fields: labels paid for, or the rows
        raise error(f"{ws.path}: column {column!r} is a field of the pool file; {producer} writes its own column: "
                    f"{advice}")
    if ws.has_column(column):
        provenance = ws.column_provenance(column)
        if not owns(provenance):
            what = provenance.get("prompt") or provenance.get("judge") or ""
            wrote = provenance.get("kind") or wrote_text(provenance)  # no kind: added with ws.add_column, or ...
            raise error(f"{ws.path}: column {column!r} holds labels or values another producer wrote ("
                        f"{wrote}{' ' + repr(what) if what else ''}); {producer} would "
                        f"replace them: {advice}")
