"""The selector registry: what a selector is, how it joins, and how its parameters are checked.

A selector is a function ``fn(ws, rows, **params) -> SelectorResult``: ``rows`` are the pool positions it
may choose from (the whole pool, or the kept rows of an input selection). It returns the rows it
considered in rank order, each with a :class:`curate.codes.Decision`, a :class:`curate.codes.Reason`
and a detail dict (similarity, witness id, quota, score...: data, never prose; ``codes.describe`` makes
the words). Selectors join :data:`SELECTORS` with :func:`register`; modules that own a concept register
their own (``curate.tags.sampling`` registers ``instag``). A selector's parameters are read from its
signature, so ``select`` names a missing or unknown one before any step runs.
"""

from __future__ import annotations

import inspect
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.codes import REFUSED, Decision, Reason, settled
from curate.errors import CurateError, OptionError

__all__ = ["MIN_BUDGET", "SELECTORS", "SelectorResult", "budget_use", "check_budget", "check_params", "check_result",
           "register", "selector_parameters"]

MIN_BUDGET = 1  # a budget of 0 keeps nothing: never what a user means, so refused as a mistyped one is


@dataclass
class SelectorResult:
    """What a selector decided: the considered rows (pool positions) in rank order, and for each a
    decision, a reason code and a detail dict. ``info`` goes into the selection's provenance;
    ``ranks`` (default: the position in ``rows``) into its rank column."""

    rows: list[int] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    details: list[dict[str, Any]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    ranks: list[int] | None = None

    def add(self, row: int, decision: Decision, reason: Reason, detail: dict[str, Any] | None = None) -> None:
        """Append one considered row."""
        self.rows.append(int(row))
        self.decisions.append(decision)
        self.reasons.append(reason)
        self.details.append(detail or {})


Selector = Callable[..., SelectorResult]
SELECTORS: dict[str, Selector] = {}
EXACTLY_ONE_OF: dict[str, tuple[tuple[str, ...], ...]] = {}  # selector -> groups of parameters given one at a time


def register(name: str, exactly_one_of: tuple[tuple[str, ...], ...] = ()) -> Callable[[Selector], Selector]:
    """Decorator: add a selector to :data:`SELECTORS` under ``name`` (``ws.select(method=name)``);
    ``exactly_one_of``: groups of optional parameters of which a call must give exactly one."""

    def deco(fn: Selector) -> Selector:
        SELECTORS[name] = fn
        EXACTLY_ONE_OF[name] = exactly_one_of
        return fn

    return deco


_NAMED_KINDS = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
SELECTOR_FIXED_ARGS = 2  # every selector is fn(ws, rows, **params)


def selector_parameters(method: str) -> tuple[list[str], list[str], bool]:
    """(every parameter name, the required ones, whether it takes any keyword) of selector ``method``,
    read from its signature after ``ws, rows``."""
    fn = SELECTORS[method]
    params = list(inspect.signature(fn).parameters.values())[SELECTOR_FIXED_ARGS:]
    named = [p for p in params if p.kind in _NAMED_KINDS]
    return ([p.name for p in named], [p.name for p in named if p.default is inspect.Parameter.empty],
            any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params))


def check_params(method: str, params: dict[str, Any]) -> None:
    """Raise a :class:`CurateError` naming the first unknown or missing parameter of selector ``method``."""
    known, required, any_keyword = selector_parameters(method)
    unknown = [k for k in params if k not in known]
    if unknown and not any_keyword:
        raise OptionError(f"selector {method!r} has no parameter {unknown[0]!r} (known: {', '.join(known) or 'none'})")
    for group in EXACTLY_ONE_OF.get(method, ()):
        given = [k for k in group if params.get(k) is not None]
        if not given:
            raise OptionError(f"selector {method!r} needs parameter {group[0]!r} (or "
                              + " or ".join(map(repr, group[1:])) + ")")
        if len(given) > 1:
            raise OptionError(f"selector {method!r} takes one of {', '.join(map(repr, given))}, not both")
    missing = [k for k in required if k not in params]
    if missing:
        raise OptionError(f"selector {method!r} needs parameter {missing[0]!r}"
                          + (f" (and {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""))
    if "budget" in params and (params["budget"] is not None or "budget" in required):
        check_budget(params["budget"], f"selector {method!r}")
    _check_types(method, params)
    for name, (low, high, what) in PARAMETER_RANGES.items():
        value = params.get(name)
        if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool) and not (
                low <= value <= high):
            raise OptionError(f"selector {method!r}: {name} must be {what}, not {value!r}")


def check_budget(budget: Any, who: str = "") -> None:
    """The one rule for a budget, wherever it is given (every selector's, through :func:`check_params`: so
    ``curate select --budget``, ``ws.select``, a chain's steps and ``run_pipeline``, which checks deita's parameters
    before any step): a whole number of rows, at least :data:`MIN_BUDGET`. An :class:`OptionError` (exit 78) naming
    the option otherwise; ``who`` (e.g. ``selector 'top_k'``) leads it."""
    if isinstance(budget, bool) or not isinstance(budget, int | np.integer) or budget < MIN_BUDGET:
        zero = ": a budget of 0 keeps no row" if not isinstance(budget, bool) and budget == 0 else ""
        raise OptionError(f"{who}{': ' if who else ''}budget must be a whole number of rows, at least {MIN_BUDGET} "
                          f"(--budget; budget= in Python), not {budget!r}{zero}")


# parameters several selectors share, by name: checked before any work, so a bad value is named as the user gave it
# (not as the internal argument it becomes, or numpy's "expected non-negative integer")
PARAMETER_RANGES: dict[str, tuple[float, float, str]] = {
    "seed": (0, 2**32 - 1, "a whole number from 0 to 4294967295"),
    "n_clusters": (1, float("inf"), "at least 1 (leave it out for the default)"),
    "max_cosine_similarity": (-1.0, 1.0, "a cosine in [-1, 1]"),
    "duplicate_similarity": (-1.0, 1.0, "a cosine in [-1, 1]"),
    "block_size": (1, float("inf"), "at least 1 row"),
    "ef": (1, 2**31 - 1, "at least 1 (the hnsw search's beam)"),  # hnswlib's TypeError named no parameter
    "threads": (-1, 4096, "a number of build threads (0 or -1: every core, as hnswlib reads them)"),
}


def _check_types(method: str, params: dict[str, Any]) -> None:
    """A value a parameter's annotation says is a number (``float``, ``int``), text (``str``) or a switch (``bool``)
    must be one: a CLI ``--param min_score=abc`` arrives as text and failed deep inside the selector with a TypeError,
    and ``--param refusal=False`` (not JSON) arrived as the text "False", which is true, so the rule stayed on."""
    signature = inspect.signature(SELECTORS[method]).parameters
    for name, value in params.items():
        if name not in signature or value is None:
            continue
        kinds = {str(a).strip() for a in str(signature[name].annotation).split("|")}  # annotations are strings
        number = isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)
        if kinds & {"int", "float"} and not kinds - {"int", "float", "None"} and not number:
            raise OptionError(f"selector {method!r}: {name} must be a number, not {value!r}")
        if kinds == {"int"} or kinds == {"int", "None"}:
            if isinstance(value, float | np.floating) and (not np.isfinite(value) or value != int(value)):  # int(nan)
                raise OptionError(f"selector {method!r}: {name} must be a whole number, not {value!r}")
        if kinds & {"str"} and not kinds - {"str", "None"} and not isinstance(value, str):
            raise OptionError(f"selector {method!r}: {name} must be text, not {value!r}")
        if kinds & {"bool"} and not kinds - {"bool", "None"} and not isinstance(value, bool | np.bool_):
            raise OptionError(f"selector {method!r}: {name} is a switch: true or false, not {value!r}")


def check_result(method: str, result: Any, candidates: int) -> SelectorResult:
    """A selector's result with its codes as enums; a clear error for anything off the contract."""
    if not isinstance(result, SelectorResult):
        raise CurateError(f"selector {method!r} returned {type(result).__name__}, not a SelectorResult")
    n = len(result.rows)
    if not (len(result.decisions) == len(result.reasons) == len(result.details) == n):
        raise CurateError(f"selector {method!r} returned {n} rows, {len(result.decisions)} decisions, "
                          f"{len(result.reasons)} reasons and {len(result.details)} details")
    if result.ranks is not None and len(result.ranks) != n:
        raise CurateError(f"selector {method!r} returned {len(result.ranks)} ranks for {n} rows")
    if len(set(result.rows)) != n or n > candidates:
        raise CurateError(f"selector {method!r} returned a row twice (or more rows than its {candidates} candidates)")
    try:
        pairs = [settled(d, r) for d, r in zip(result.decisions, result.reasons, strict=True)]
    except ValueError as exc:
        raise CurateError(f"selector {method!r}: {exc} (decisions: {', '.join(Decision)}; "
                          f"reasons: {', '.join(Reason)})") from None
    result.decisions, result.reasons = [d for d, _ in pairs], [r for _, r in pairs]  # one code per situation
    bad = next((d for d in result.details if not isinstance(d, dict)), None)
    if bad is not None:
        raise CurateError(f"selector {method!r}: a detail is {type(bad).__name__}, not a dict")
    return result


def budget_use(budget: int, result: SelectorResult, candidates: int) -> dict[str, Any]:
    """How a selector's (checked) result used its ``budget``, as data for the views (a selection's provenance
    ``budget_use``): rows kept, whether that ``filled`` it, the candidates, the rows ``refused`` (rejected or
    duplicate: for what they are), ``not_reached`` (the budget filled first) and ``unscored``; ``ran_out``: the
    budget is not filled and every candidate was decided, so the candidates ran out before it; ``not_kept``: rows per
    reason code of the rows not kept."""
    decisions = Counter(result.decisions)
    kept = decisions[Decision.KEPT]
    filled = kept >= budget
    return {"budget": int(budget), "kept": kept, "filled": filled, "candidates": int(candidates),
            "refused": sum(decisions[d] for d in REFUSED), "not_reached": decisions[Decision.NOT_REACHED],
            "unscored": decisions[Decision.UNSCORED], "ran_out": not filled and not decisions[Decision.NOT_REACHED],
            "not_kept": dict(Counter(r.value for d, r in zip(result.decisions, result.reasons, strict=True)
                                     if d is not Decision.KEPT).most_common())}
