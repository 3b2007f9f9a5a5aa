"""Sort keys: a column name or an arithmetic expression over columns, evaluated per turn.

``complexity*quality`` (:data:`curate.defaults.DEITA.sort_by`) is DEITA's evol score, the default (each name read as the
derived column holding that score, :func:`default_sort_key`): the expression is
evaluated on each turn of a row and the turn values are reduced with the reducer the columns declare
in their provenance (``sum`` for DEITA's judges and scorers: Σ_t c_t·q_t), through
:func:`curate.storage.step.reduce_turns`, the same reduction ``ws.row_values`` gives plots, the report
and training. Every column of an expression that holds per-turn values must declare the same reducer,
or the key is an error. A column that declares none and holds one value per row (a scalar, or a
one-turn list) is a row value: it applies to every turn of the row.

Only numbers, column names, ``+ - * / **`` and the functions log, log1p, exp, sqrt, abs, minimum,
maximum are allowed (parsed with ``ast``; nothing is ``eval``-ed). A row has no score (NaN) when any
turn of a column it reads has no value, or when the arithmetic gives NaN; :func:`score_rows` says which
column and failure code for each such row.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.defaults import DEITA
from curate.errors import CurateError, OptionError, WorkspaceError, python_and_cli
from curate.select.admission import examination_order
from curate.storage.roles import role_column
from curate.storage.step import reduce_turns

__all__ = ["Scores", "default_sort_key", "parse", "row_scores", "rows_by_score", "score_rows"]

_FUNCS = {"log": np.log, "log1p": np.log1p, "exp": np.exp, "sqrt": np.sqrt, "abs": np.abs,
          "minimum": np.minimum, "maximum": np.maximum}
# arguments each function takes: a numpy ufunc reads one more as its output array, which it overwrites
_ARITY = {name: fn.nin for name, fn in _FUNCS.items()}
NAME_A_SORT_KEY = "--sort-by EXPR, sort_by= in Python"
_BINOPS = {ast.Add: np.add, ast.Sub: np.subtract, ast.Mult: np.multiply, ast.Div: np.true_divide,
           ast.Pow: np.power}


def parse(expr: str) -> tuple[ast.Expression, list[str]]:
    """The checked syntax tree of ``expr`` and the columns it reads (in order of appearance)."""
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise OptionError(f"sort key {expr!r} is not an expression: {exc.msg}") from None
    columns: list[str] = []

    def check(node: ast.AST) -> None:
        if isinstance(node, ast.Expression):
            return check(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
            return None
        if isinstance(node, ast.Name):
            if node.id not in columns:
                columns.append(node.id)
            return None
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            check(node.left)
            return check(node.right)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            return check(node.operand)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCS
                and not node.keywords):
            if len(node.args) != _ARITY[node.func.id]:
                raise OptionError(f"sort key {expr!r}: {node.func.id} takes {_ARITY[node.func.id]} argument(s), "
                                  f"got {len(node.args)} in {ast.unparse(node)!r}")
            for a in node.args:
                check(a)
            return None
        raise OptionError(f"sort key {expr!r}: {ast.unparse(node)!r} is not allowed (use column names, numbers, "
                          f"+ - * / **, and {', '.join(_FUNCS)})")

    check(tree)
    return tree, columns


def _evaluate(tree: ast.AST, env: dict[str, np.ndarray]) -> Any:
    if isinstance(tree, ast.Expression):
        return _evaluate(tree.body, env)
    if isinstance(tree, ast.Constant):
        return float(tree.value)
    if isinstance(tree, ast.Name):
        return env[tree.id]
    if isinstance(tree, ast.BinOp):
        return _BINOPS[type(tree.op)](_evaluate(tree.left, env), _evaluate(tree.right, env))
    if isinstance(tree, ast.UnaryOp):
        v = _evaluate(tree.operand, env)
        return -v if isinstance(tree.op, ast.USub) else v
    assert isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)
    return _FUNCS[tree.func.id](*[_evaluate(a, env) for a in tree.args])


@dataclass
class Scores:
    """One sort-key value per row (NaN: no score) and, for rows without one, why (a detail dict)."""
    sort_by: str
    reducer: str | None
    values: np.ndarray
    missing: dict[int, dict[str, Any]] = field(default_factory=dict)  # position -> detail

    def detail(self, i: int) -> dict[str, Any]:
        """Why row ``i`` has no score: ``sort_by``, and ``column``/``failure``/``turn`` when a column lacks it."""
        return self.missing.get(i, {"sort_by": self.sort_by})


def _number(name: str, v: Any) -> float:
    if v is None:
        return math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        raise CurateError(f"sort key: column {name!r} is not numeric (a value is {v!r:.60})") from None


def _reducer(ws, expr: str, columns: list[str], values: dict[str, list[Any]]) -> tuple[str | None, set[str]]:
    """The reducer the expression's turn columns share, and the names of the row-value columns."""
    declared = {name: ws.reducer(name) for name in columns}
    turn_cols = {name: r for name, r in declared.items() if r is not None}
    if len(set(turn_cols.values())) > 1:
        said = ", ".join(f"{n}: {r}" for n, r in turn_cols.items())
        raise CurateError(f"sort key {expr!r}: its columns declare different reducers ({said}); an expression is "
                          "evaluated per turn and reduced once, so its columns must agree")
    for name in columns:
        if declared[name] is None:
            multi = next((k for k, v in enumerate(values[name]) if v is not None and len(v) > 1), None)
            if multi is not None:
                raise CurateError(f"sort key {expr!r}: column {name!r} holds {len(values[name][multi])} values in a "
                                  "row but declares no reducer in its provenance (how its turns make one value)")
    reducer = next(iter(turn_cols.values()), None)
    return reducer, {n for n, r in declared.items() if r is None}


def default_sort_key(ws) -> str:
    """``DEITA.sort_by`` over the derived columns holding those scores (:func:`curate.storage.roles.role_column`):
    ``complexity*quality_score`` where `curate run` scored quality beside a pool field ``quality``; never the pool
    field, and an error naming the columns when a score has several."""
    names = parse(DEITA.sort_by)[1]
    try:
        columns = {name: role_column(ws, name, NAME_A_SORT_KEY) for name in names}
    except WorkspaceError as exc:
        raise type(exc)(f"no sort key: the default is {DEITA.sort_by} (the DEITA evol score); {exc}") from None
    if odd := [c for c in columns.values() if not re.fullmatch(r"[A-Za-z_]\w*", c)]:  # '-' would read as a minus
        raise WorkspaceError(f"no sort key: the default {DEITA.sort_by} would read column {odd[0]!r}, a name a sort "
                             "key cannot hold (letters, digits and _ only); give the key yourself (--sort-by / "
                             "sort_by=), after scoring into a column so named (--column NAME / column=NAME)")
    return re.sub(r"[A-Za-z_]\w*", lambda m: columns.get(m.group(0), m.group(0)), DEITA.sort_by)


def score_rows(ws, expr: str | None = None, ids: list[str] | None = None) -> Scores:
    """The sort key of every row of ``ids`` (default: the pool, in order), with why a row has none."""
    expr = default_sort_key(ws) if expr is None else expr
    tree, columns = parse(expr)
    ids = ws.ids if ids is None else list(ids)
    n = len(ids)
    values = {name: ws.turn_values(name, ids) for name in columns}
    reducer, row_cols = _reducer(ws, expr, columns, values)
    turn_cols = [c for c in columns if c not in row_cols]
    # each row's turn count: the turn columns' (they must agree), else one
    lengths = np.ones(n, np.int64)
    if turn_cols:
        for k in range(n):
            seen = {len(values[c][k]) for c in turn_cols if values[c][k] is not None}
            if len(seen) > 1:
                raise CurateError(f"sort key {expr!r}: row {ids[k]} has different turn counts in "
                                  f"{', '.join(turn_cols)} ({sorted(seen)})")
            lengths[k] = seen.pop() if seen else 1
    starts = np.concatenate(([0], np.cumsum(lengths)))
    env: dict[str, np.ndarray] = {}
    missing: dict[int, dict[str, Any]] = {}
    for name in columns:
        flat = np.full(int(starts[-1]), np.nan)
        for k, v in enumerate(values[name]):
            row = None if v is None else [_number(name, t) for t in v]
            if row is None or any(math.isnan(t) for t in row):  # a NaN stored is no score, as a None is: named
                missing.setdefault(k, {"sort_by": expr, "column": name,
                                       "turn": None if row is None else 1 + next(i for i, t in enumerate(row)
                                                                                 if math.isnan(t))})
                continue
            flat[starts[k]:starts[k + 1]] = row[0] if name in row_cols else row
        env[name] = flat
    with np.errstate(all="ignore"):
        flat = _evaluate(tree, env)
    flat = np.broadcast_to(np.asarray(flat, np.float64), (int(starts[-1]),))
    out = np.empty(n, np.float64)
    bounds = starts.tolist()
    for k in range(n):
        turn_vals = flat[bounds[k]:bounds[k + 1]].tolist()
        value = reduce_turns(turn_vals if len(turn_vals) > 1 or reducer else turn_vals[0], reducer)
        out[k] = math.nan if value is None else value
    _explain_missing(ws, ids, missing)
    return Scores(expr, reducer, out, missing)


def _explain_missing(ws, ids: list[str], missing: dict[int, dict[str, Any]]) -> None:
    """Add each missing row's failure code (from the column's failure column) to its detail."""
    by_column: dict[str, list[int]] = {}
    for k, d in missing.items():
        by_column.setdefault(d["column"], []).append(k)
    for name, ks in by_column.items():
        if not ws.has_column(name):
            continue
        for k, fails in zip(ks, ws.failures(name, [ids[k] for k in ks]), strict=True):
            turn = missing[k]["turn"]
            hit = next((f for f in fails if turn is None or f.turn in (None, turn)), None)
            if hit is not None:
                missing[k]["failure"] = hit.code.value
                if hit.turn is not None:
                    missing[k]["turn"] = hit.turn
    for d in missing.values():
        if d.get("turn") is None:
            d.pop("turn", None)


def row_scores(ws, expr: str | None = None, ids: list[str] | None = None) -> np.ndarray:
    """Float64 sort key per row of ``ids`` (default: the pool in order); NaN where a row has none."""
    return score_rows(ws, expr, ids).values


def rows_by_score(ws, rows: np.ndarray, sort_by: str | None) -> tuple[np.ndarray, Scores]:
    """How to walk ``rows`` (pool positions) by score: indices into ``rows``, best first (ties by row id;
    rows without a score last, in the order given), and the scores of ``rows`` as given."""
    pool_ids = ws.ids
    ids = [pool_ids[p] for p in rows.tolist()]
    scores = score_rows(ws, sort_by, ids)
    order = examination_order(scores.values, np.asarray(ids, dtype=object).astype(str))
    perm = np.concatenate((order, np.flatnonzero(np.isnan(scores.values)))).astype(np.int64)
    return perm, scores


SCORES = ("complexity", "quality")  # DEITA's two scores; their product, summed over turns, is the sort key


def scores_of(sort_by: str) -> tuple[str, ...]:
    """The DEITA scores a `curate run`'s ``sort_by`` names (``complexity*quality``, ``complexity`` or ``quality``),
    in ``SCORES`` order: the run computes these and no other."""
    names = [name.strip() for name in sort_by.split("*")]
    if any(name not in SCORES for name in names) or len(set(names)) < len(names):
        raise OptionError(f"{python_and_cli('sort_by=', '--sort-by')} {sort_by!r}: the product of DEITA scores to select by: complexity*quality, "
                          "complexity (instructions alone) or quality")
    return tuple(name for name in SCORES if name in names)


def score_quantile(values: np.ndarray, q: float) -> float:
    """The ``q`` quantile of scores ``values`` (no NaN; at least one), interpolated linearly as ``np.quantile``,
    except next to an infinite score: between -inf and any score it is -inf, between any score and inf it is inf,
    where numpy's ``-inf + inf * t`` gave NaN (and a threshold of NaN kept no row)."""
    ordered = np.sort(np.asarray(values, dtype=np.float64))
    position = (len(ordered) - 1) * q
    below = int(math.floor(position))
    low, high = ordered[below], ordered[min(below + 1, len(ordered) - 1)]
    if low == high or position == below or low == -math.inf:
        return float(low)
    if high == math.inf:
        return math.inf
    return float(low + (high - low) * (position - below))  # np.quantile's linear rule, without sorting again
