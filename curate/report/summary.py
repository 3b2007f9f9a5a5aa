"""What the report, the notebook views and ``curate info`` show, as data (no HTML, no printing).

Everything is read through the workspace's structured API: selections by ``(decision, reason code)``
with their details (:meth:`Selection.rows`, :func:`curate.codes.describe`), failures by
:class:`curate.codes.FailureCode` (``ws.failures``), numbers through ``ws.row_values`` (the column's
declared reducer, the same one selection uses). Nothing parses prose.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import TYPE_CHECKING, Any

from curate.codes import Decision, Failure, FailureCode, Reason, describe, reason_text
from curate.report.tables import value_text
from curate.storage.apply_checks import not_finite
from curate.storage.damage import DamagedFileError
from curate.storage.run_records import column_runs, fold_runs, requests_sent, run_count

if TYPE_CHECKING:
    from curate.storage.selection import Selection
    from curate.storage.workspace import Workspace

PROVENANCE_KEYS = ("kind", "judge", "imitates", "prompt", "prompt_fingerprint", "model", "backend", "method", "created")
FAILURE_KINDS = ("failure", "judge_failure")
# selection provenance keys shown elsewhere than on the parameters line
_SELECTION_STRUCTURE = {"name", "created", "method", "params", "input_selection", "candidates", "counts",
                        "budget_use"}  # budget_use: the heading's counts again


def provenance_line(prov: dict[str, Any]) -> str:
    """The provenance keys people read first, as ``key = value`` pairs (a backend's whole description: its kind)."""
    return ", ".join(f"{k} = {_backend_name(prov[k]) if k == 'backend' else prov[k]}" for k in PROVENANCE_KEYS
                     if prov.get(k) not in (None, ""))


def default_selection(ws: Workspace) -> str | None:
    """The selection a report highlights: the most recently created one that no other selection starts from (a
    chain's final step, not the steps it was built on), or None. A damaged selection's file written after it (or
    any, when none reads) would have been it: a DamagedFileError names that file, not another selection highlighted
    in its place with no word of it."""
    sels = ws.selections
    chosen = None
    if sels:
        inputs = {p.get("input_selection") for p in sels.values()}
        finals = [n for n in sels if n not in inputs] or list(sels)
        chosen = max(finals, key=lambda n: (str(sels[n].get("created", "")), n))
    written = (ws.path / "selections" / f"{chosen}.arrow").stat().st_mtime_ns if chosen else -1
    later = [(d.path.stat().st_mtime_ns, d) for d in ws.damaged if d.kind == "selection"]
    if later := [(t, d) for t, d in later if t > written]:
        raise DamagedFileError(max(later, key=lambda pair: pair[0])[1], "; or name the selection to highlight: "
                               f"selection=NAME (CLI: --selection NAME), one of {sorted(sels)}")
    return chosen


# -- columns -------------------------------------------------------------------------------------
def has_value(v: Any) -> bool:
    """A complete value: not missing (nor NaN, an infinity), and no turn of a per-turn list missing."""
    if v is None or v == [] or v == "" or not_finite(v):
        return False
    return not (isinstance(v, list) and any(x is None or not_finite(x) for x in v))



def is_numeric(ws: Workspace, name: str, reducer: str | None) -> bool:
    """True when every filled value of derived column ``name`` is a number, or a per-turn list of numbers that has
    one value per row (a declared reducer, or one turn everywhere). Read from the column's Arrow type, which every
    value shares, not value by value."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = ws.column_values_array(name)
    if values.null_count == len(values):
        return False
    kind = values.type
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        if not (_number_type(kind.value_type) or pa.types.is_null(kind.value_type)):
            return False
        return reducer is not None or (pc.max(pc.list_value_length(values)).as_py() or 0) <= 1
    return _number_type(kind)


def per_turn_numbers(ws: Workspace, name: str) -> bool:
    """True when derived column ``name`` holds a list of numbers per row (one per turn) that no reducer makes one
    row value: a step's side column of a turn step (``complexity_digit_mass`` on multi-turn rows)."""
    import pyarrow as pa

    kind = ws.column_values_array(name).type
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _number_type(kind.value_type)


def _number_type(kind: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_integer(kind) or pa.types.is_floating(kind)


def is_failure_column(name: str, prov: dict[str, Any]) -> bool:
    return prov.get("kind") in FAILURE_KINDS or name.endswith("_failure")


def numeric_columns(ws: Workspace) -> list[str]:
    """Derived columns that hold scores: one number per row, directly or through a declared reducer; never a step's
    side column (a judge's ``complexity_digit_mass``: what the step wrote beside its score, not a score)."""
    columns = ws.columns
    sides = {side for prov in columns.values() for side in prov.get("side_columns") or ()}
    return [name for name, prov in columns.items()
            if not is_failure_column(name, prov) and prov.get("kind") != "extra" and name not in sides
            and is_numeric(ws, name, prov.get("reducer"))]


def step_columns(ws: Workspace) -> list[str]:
    """Columns with a failure column beside them (what a step wrote)."""
    columns = ws.columns
    return [n for n in columns if f"{n}_failure" in columns and not is_failure_column(n, columns[n])]


def _flat(value: list[Any]) -> list[Any]:
    """A row's items: its per-turn lists joined (None for a turn without items), or the list itself."""
    if any(isinstance(x, list) for x in value):
        return [x for part in value if part is not None for x in (part if isinstance(part, list) else [part])]
    return value


#: the provenance kinds of tag columns: the tagger's (per turn), the normaliser's, the trained tagger's
TAG_COLUMN_KINDS = ("instag_tags", "instag_normalized", "instag_tagger")


def never_computed(ws: Workspace, name: str) -> set[str]:
    """Rows a step column holds nothing for, not even a failure: never asked for (``curate run`` scores and tags
    only the rows its filter steps kept), as opposed to rows asked for that failed."""
    stored = ws.column_fingerprints(name)
    return {rid for rid in ws.ids if rid not in stored}


def column_stats(ws: Workspace, name: str, prov: dict[str, Any] | None = None) -> dict[str, Any]:
    """Filled rows, failing rows, and mean/min/max of the row values (scores) or tags per row (lists)."""
    prov = ws.column_provenance(name) if prov is None else prov
    values = ws.column(name)
    filled = [v for v in values if has_value(v)]
    stats: dict[str, Any] = {"name": name, "filled": len(filled), "rows": len(values)}
    if ws.has_column(f"{name}_failure"):
        try:
            failing = [fails for fails in ws.failures(name) if fails]
            stats["failures"] = len(failing)
            codes = Counter(code for fails in failing for code in {f.code.value for f in fails})  # rows per code
            stats["failure_codes"] = dict(codes.most_common())
        except DamagedFileError as exc:  # listed as damaged; this column's own stats stand
            stats["failures"] = f"unknown: {exc.damage.path.name} is damaged"
        stats["never_computed"] = len(never_computed(ws, name))
    if is_failure_column(name, prov):
        stats["kind"] = "failures"
    elif prov.get("kind") in TAG_COLUMN_KINDS:  # with every row failed, tags_raw read as "per-turn scores", tags as "text"
        items = [_flat(v) for v in filled]
        stats.update(kind="list", per_row=sum(len(v) for v in items) / len(items) if items else 0.0,
                     distinct=len({str(x) for v in items for x in v if x is not None}))
    elif is_numeric(ws, name, prov.get("reducer")):
        per_turn = prov.get("granularity") == "turn" or any(isinstance(v, list) for v in filled)
        stats["kind"] = "per-turn scores" if per_turn else "number"
        if per_turn and prov.get("reducer"):
            stats["reducer"] = prov["reducer"]
        nums = [v for v in ws.row_values(name) if v is not None and not not_finite(v)]
        if nums:
            # each value divided first: a sum of values near the float limit (1e308 + 1e308) overflows to inf
            stats.update(mean=math.fsum(v / len(nums) for v in nums), min=min(nums), max=max(nums))
    elif filled and per_turn_numbers(ws, name):  # a judge's digit mass beside multi-turn rows: no row value, so
        nums = [x for v in filled for x in v if x is not None and not not_finite(x)]  # its turns' (was "list")
        stats["kind"] = "per-turn numbers"
        if nums:
            stats.update(mean=math.fsum(v / len(nums) for v in nums), min=min(nums), max=max(nums))
    elif filled and all(isinstance(v, list) for v in filled):
        items = [_flat(v) for v in filled]  # a per-turn list column (InsTag on conversations): one list per turn
        stats["kind"] = "list"
        stats["per_row"] = sum(len(v) for v in items) / len(items)
        stats["distinct"] = len({str(x) for v in items for x in v})
    else:
        stats["kind"] = "text"
    return stats


# -- sources ----------------------------------------------------------------------------------------
def sources(ws: Workspace) -> list[dict[str, Any]]:
    """The manifest's loads, one entry per source path: its latest load, how many loads, rows added by all."""
    by_path: dict[str, dict[str, Any]] = {}
    for load in ws.manifest.get("sources", []):
        key = str(load.get("source"))
        before = by_path.get(key)
        by_path[key] = {**load, "loads": (before["loads"] if before else 0) + 1,
                        "rows_added_all": (before["rows_added_all"] if before else 0) + int(load.get("rows_added") or 0)}
    return list(by_path.values())


# -- judges: tokens and cost over every run ----------------------------------------------------------

def _sum(runs: list[dict[str, Any]], get) -> Any:
    """Sum of ``get(run)`` over runs; None (unknown) as soon as one run does not know its amount."""
    total = 0
    for run in runs:
        v = get(run)
        if v is None:
            return None
        total += v
    return total


LLM_COLUMN_KINDS = {"judge": "judge", "instag_tags": "tagger"}  # column provenance kind -> the paid step


def _backend_name(backend: Any) -> Any:
    """A backend as the table shows it: its kind (the tagger and evol store the backend's whole description)."""
    return backend.get("backend", backend.get("class")) if isinstance(backend, dict) else backend


def llm_usage(ws: Workspace) -> list[dict[str, Any]]:
    """One entry per paid LLM step of the workspace: each judge column, each tagger column and each evol label set
    (``column``: ``labels/<name>``), with requests, tokens and USD summed over every run that paid into a column
    (its provenance ``runs``); a cost None means unknown, never $0. ``calls``: requests sent to the LLM (answered or
    failed); ``cached``: answered by the on-disk cache instead (an earlier run's answers); ``repeated``: the same
    request as another of its run (sent once; a run recorded before they were counted apart counted them cached);
    ``not_sent_max_cost``: held back by a run's max_cost."""
    out = []
    for name, prov in ws.columns.items():
        step = LLM_COLUMN_KINDS.get(prov.get("kind"))
        if step is None:
            continue
        runs = column_runs(prov)
        total = fold_runs(None, runs)
        tokens = total["tokens"]  # None: a run recorded no tokens (a tagger column written before they were)
        failing = sum(1 for f in ws.failures(name) if f)
        out.append({
            "column": name, "step": step, "judge": prov.get("judge"), "prompt": prov.get("prompt"),
            "prompt_version": prov.get("prompt_version"), "fingerprint": prov.get("prompt_fingerprint"),
            "model": prov.get("model"), "backend": _backend_name(prov.get("backend")), "runs": run_count(runs),
            "calls": _sum(runs, requests_sent), "cached": total["cached_requests"],
            "repeated": total["repeated_requests"],
            "not_sent_max_cost": _sum(runs, lambda r: r.get("requests_not_sent_max_cost") or 0),
            "prompt_tokens": None if tokens is None else tokens.get("prompt", 0),
            "completion_tokens": None if tokens is None else tokens.get("completion", 0),
            "cost_usd": total["cost_usd"], "failures": failing, "created": prov.get("created"),
        })
    for name, prov in ws.label_sets.items():
        if prov.get("method") != "evol":
            continue
        rank = (prov.get("prompts") or {}).get("rank") or {}
        backend = prov.get("backend") or {}
        runs = prov.get("runs") or [prov]  # a label set stored before runs were recorded: its last run
        out.append({
            "column": f"labels/{name}", "step": "evol", "judge": None, "prompt": rank.get("name"),
            "prompt_version": rank.get("version"), "fingerprint": rank.get("fingerprint"),
            "model": backend.get("model"), "backend": _backend_name(backend), "runs": len(runs),
            "calls": _sum(runs, lambda r: r.get("requests")), "cached": _sum(runs, lambda r: r.get("cached")),
            "repeated": _sum(runs, lambda r: r.get("repeated") or 0),  # none counted apart before
            "not_sent_max_cost": _sum(runs, lambda r: r.get("not_sent_max_cost") or 0),
            "prompt_tokens": _sum(runs, lambda r: r.get("prompt_tokens")),
            "completion_tokens": _sum(runs, lambda r: r.get("completion_tokens")),
            "cost_usd": _sum(runs, lambda r: r.get("cost_usd")),
            "failures": prov.get("rank_failures"), "created": prov.get("created"),
        })
    return out


# -- failures ---------------------------------------------------------------------------------------
def failure_text(failures: list[Failure], with_code: bool = False) -> str:
    """One row's failures for people, each message once with the turns it hit: ``no score (turns 1, 2)``;
    ``with_code``: each led by its reason code (``unparsable: no score (turns 1, 2)``), where nothing else shows it."""
    turns: dict[str, list[int]] = {}
    for f in failures:
        text = f.message or f.code.value
        if with_code and f.message:
            text = f"{f.code.value}: {f.message}"
        turns.setdefault(text, [])
        if f.turn is not None:
            turns[text].append(f.turn)
    parts = []
    for message, ts in turns.items():
        where = f" (turn{'s' if len(ts) > 1 else ''} {', '.join(map(str, sorted(set(ts))))})" if ts else ""
        parts.append(message + where)
    return "; ".join(parts)


def failure_summary(ws: Workspace, column: str, examples: int = 3) -> dict[str, Any]:
    """A step column's failures grouped by code: failing rows per code and a few examples (message, raw)."""
    ids = ws.ids
    groups: dict[FailureCode, dict[str, Any]] = {}
    failing = 0
    for rid, fails in zip(ids, ws.failures(column), strict=True):
        if not fails:
            continue
        failing += 1
        by_code: dict[FailureCode, list[Failure]] = {}
        for f in fails:
            by_code.setdefault(f.code, []).append(f)
        for code, items in by_code.items():
            g = groups.setdefault(code, {"code": code, "rows": 0, "examples": []})
            g["rows"] += 1
            if len(g["examples"]) < examples:
                raw = next((f.raw for f in items if f.raw), None)
                g["examples"].append({"id": rid, "message": failure_text(items), "raw": raw})
    return {"column": column, "failed_rows": failing, "rows": len(ids),
            "groups": sorted(groups.values(), key=lambda g: -g["rows"])}


# -- selections ---------------------------------------------------------------------------------------
def selection_summary(sel: Selection) -> dict[str, Any]:
    """Counts by decision, and by (decision, reason code) with the code's label and one example row each."""
    counts = sel.reasons()
    examples = {(row["decision"], row["reason"]): row for row in sel.rows(first_of_each=True)}
    groups = [{"decision": d, "reason": Reason(r), "label": reason_text(r), "count": n,
               "example_id": examples[(d, r)]["id"], "example": examples[(d, r)]["why"],
               "rules": _by_rule(sel, d, r) if "rule" in examples[(d, r)]["detail"] else []}
              for (d, r), n in counts.items()]
    groups.sort(key=lambda g: (g["decision"] != Decision.KEPT, -g["count"], g["label"]))
    by_decision = sel.decisions()
    considered = sel.table.num_rows
    kept = by_decision.get(Decision.KEPT.value, 0)
    return {"name": sel.name, "considered": considered, "kept": kept, "dropped": considered - kept,
            "outcomes": sel.outcomes(), "by_decision": dict(by_decision), "groups": groups, "provenance": sel.provenance}


def _by_rule(sel: Selection, decision: str, reason: str) -> list[dict[str, Any]]:
    """The rows of one (decision, reason) by the rule their detail names (the heuristics' text rules: language,
    refusal ...), most rows first: ``rule``, ``count`` and the first row's ``example_id`` and ``example`` in rank
    order (a group of 40 rows failing 6 rules showed one example, of one rule)."""
    import pyarrow.compute as pc

    table = sel.table.filter(pc.and_(pc.equal(sel.table["decision"], decision), pc.equal(sel.table["reason"], reason)))
    table = table.take(pc.sort_indices(table["rank"]))
    counts: Counter = Counter()
    firsts: dict[str, tuple[str, dict[str, Any]]] = {}
    for rid, text in zip(table["id"].to_pylist(), table["detail"].to_pylist(), strict=True):
        detail = json.loads(text) if text else {}
        rule = str(detail.get("rule", "?"))
        counts[rule] += 1
        firsts.setdefault(rule, (rid, detail))
    return [{"rule": rule, "count": n, "example_id": firsts[rule][0], "example": describe(reason, firsts[rule][1])}
            for rule, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def selection_parameters(prov: dict[str, Any]) -> list[tuple[str, str]]:
    """A selection's parameters as ``(key, value text)`` pairs: its ``params`` then what the selector reported."""
    params = prov.get("params") or {}
    pairs = [(k, value_text(v)) for k, v in params.items()]
    pairs += [(k, value_text(v)) for k, v in prov.items()  # a parameter the selector also reports is shown once
              if k not in _SELECTION_STRUCTURE and k not in params and v not in (None, "", {}, [])]
    return pairs


def in_creation_order(selections: dict[str, dict[str, Any]]) -> list[str]:
    """The names of ``selections`` (name -> provenance) in the order they were made (their ``created`` time; one
    recording none last, by name): a run's dedup, heuristics, deita, where by name deita came before heuristics."""
    return sorted(selections, key=lambda name: (not selections[name].get("created"),
                                                str(selections[name].get("created") or ""), name))


def selection_chain(selections: dict[str, dict[str, Any]], name: str) -> list[tuple[str, dict[str, Any]]]:
    """The selections ``name`` was built from, first step first (``select`` records each step's input)."""
    chain: list[tuple[str, dict[str, Any]]] = []
    while name in selections and all(name != n for n, _ in chain):
        chain.append((name, selections[name]))
        name = selections[name].get("input_selection")
    return chain[::-1]


def decision_counts(sel: Selection) -> tuple[int, list[tuple[str, int]]]:
    """(kept, [(other decision, rows), ...] most common first)."""
    counts = Counter(sel.decisions())
    kept = counts.pop(Decision.KEPT.value, 0)
    return kept, counts.most_common()
