"""Selection: build the final set from scores, embeddings and text, with a reason code for every row.

``select(ws, method=..., name=...)`` runs one selector, or a chain of ``steps``, and stores each as a
selection (every considered row's decision, :class:`curate.codes.Reason` and detail dict). Selectors:

* by score — ``deita`` (the exact admission loop, :mod:`.deita`), ``top_k``, ``threshold``, and the
  ``random`` baseline (:mod:`.ranking`);
* by diversity — ``kcenter``, ``kmeans``, ``lift`` (:mod:`.diversity`), ``dsir`` (:mod:`.dsir`);
* by what a model fine-tuned on a seed set still answers badly — ``necessity`` (MoDS, :mod:`.necessity`);
* deduplication — ``exact``, ``minhash``, ``semantic`` (:mod:`.dedup`); benchmark leakage — ``decontaminate``
  (:mod:`.decontaminate`); broken text (empty replies, refusals, loops, cut-off code, mojibake, language) —
  ``heuristics`` (:mod:`.heuristics`);
* anything registered with :func:`register` (``curate.tags.sampling`` adds ``instag``).

Sort keys (``sort_by``) are column expressions evaluated per turn and reduced by the columns' declared
reducer (:mod:`.sort_key`). Compose selectors: ``ws.select(method="threshold", name="good",
input_selection="dedup", min_score=4)``, or in one call:
``ws.select(name="final", steps=[{"method": "exact"}, {"method": "deita", "budget": 6000}])``.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import numpy as np

from curate.codes import Decision
from curate.errors import CurateError, OptionError
from curate.select import (  # noqa: F401  (register the selectors)
    decontaminate,
    dedup,
    deita,
    diversity,
    dsir,
    heuristics,
    necessity,
    ranking,
)
from curate.select.admission import AdmissionResult, admit
from curate.select.registry import SELECTORS, SelectorResult, budget_use, check_params, check_result, register
from curate.select.sort_key import row_scores, score_rows
from curate.storage.files import check_new_name
from curate.storage.pool import selection_positions
from curate.storage.read_log import KINDS, recording_reads
from curate.storage.selection_inputs import input_versions, rows_loaded_since

__all__ = ["SELECTORS", "AdmissionResult", "SelectorResult", "admit", "register", "row_scores", "score_rows",
           "select"]


def _check_steps(steps: list[dict[str, Any]], name: str, chained: bool) -> None:
    """Every step of a chain checked before any runs: a chain never stops half-written."""
    if isinstance(steps, (str, dict)) or not steps or not all(isinstance(step, dict) for step in steps):
        raise OptionError(f"steps= takes a non-empty list of steps, each a dict such as {{'method': 'exact'}}; "
                          f"got {steps!r}")
    for i, step in enumerate(steps):
        where = f"step {i + 1} of chain {name!r}: " if chained else ""
        if "method" not in step:
            raise OptionError(f"{where}no 'method' given; choose one of {', '.join(sorted(SELECTORS))}")
        meth = step["method"]
        if meth not in SELECTORS:
            raise OptionError(f"{where}unknown selection method {meth!r}; have {', '.join(sorted(SELECTORS))}")
        try:
            check_params(meth, {k: v for k, v in step.items() if k != "method"})
        except CurateError as exc:
            raise (OptionError if isinstance(exc, OptionError) else CurateError)(f"{where}{exc}") from None
        check_new_name(name if i == len(steps) - 1 else f"{name}.{i + 1}-{meth}")  # the names it is stored under


def select(ws, method: str | None = None, name: str | None = None, input_selection: str | None = None,
           steps: list[dict[str, Any]] | None = None, **params: Any):
    """Run a selector (or a chain of ``steps``) and store the result as selection ``name``.

    ``input_selection``: start from that selection's kept rows instead of the whole pool. With ``steps``,
    each step's kept rows feed the next; intermediate steps are stored as ``{name}.{i}-{method}``.
    Returns the final :class:`curate.storage.selection.Selection`.
    """
    if name is None:
        raise OptionError("select needs name= (the name the selection is stored under)")
    if steps is None:
        if method is None:
            raise OptionError("select needs method= or steps=")
        steps = [{"method": method, **params}]
    elif method is not None or params:
        raise OptionError("pass either method= with parameters, or steps=, not both")
    _check_steps(steps, name, chained=method is None)
    source = input_selection
    listed = ws.selections
    _check_step_names(listed, name, [step["method"] for step in steps])
    # rows loaded since the input selection was made are none of its rows: recorded (and said), never left out in silence
    predates = rows_loaded_since(ws, {**listed[source], "name": source}) if source in listed else None
    ids, index = ws.ids, ws.index
    kept = None if source is None else selection_positions(ws, source)[0]
    dropped = SelectorResult()  # rows an earlier step of this chain did not keep, carried into its final selection
    stored: list[tuple[str, SelectorResult, dict[str, Any]]] = []  # written once every step has run
    read: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for i, step in enumerate(steps):
        step = dict(step)
        meth = step.pop("method")
        rows = (np.arange(len(ids)) if kept is None
                else np.sort(np.array([index[r] for r in kept], dtype=np.int64)))
        # no candidates (an earlier step kept nothing): nothing to decide, whatever the selector
        with recording_reads(ws) as noted:  # the columns and embeddings it reads: a rewrite since makes it stale
            result = check_result(meth, SELECTORS[meth](ws, rows, **step) if len(rows) else SelectorResult(),
                                  len(rows))
        read = {kind: read[kind] | noted[kind] for kind in read}  # a chain's last step rests on every step's reads
        last = i == len(steps) - 1
        step_name = name if last else f"{name}.{i + 1}-{meth}"
        provenance = {"method": meth, "params": step, "input_selection": source, "step_of": None if last else name,
                      "candidates": int(len(rows)),
                      "counts": dict(Counter(d.value for d in result.decisions)), **result.info}
        if predates and i == 0:
            provenance["rows_loaded_since_input"] = predates
        if versions := input_versions(ws, read):
            provenance["read"] = versions
        if step.get("budget") is not None:  # filled or not, and why, as data (the CLI says so when it is not)
            provenance["budget_use"] = budget_use(step["budget"], result, len(rows))
        if last and dropped.rows:
            result = _with_earlier_drops(result, dropped)
            provenance["earlier_steps_dropped"] = len(dropped.rows)
        elif not last:
            for row, decision, reason, detail in zip(result.rows, result.decisions, result.reasons, result.details,
                                                     strict=True):
                if decision != Decision.KEPT:
                    dropped.add(row, decision, reason, {**detail, "step": step_name})
        stored.append((step_name, result, provenance))
        kept = [ids[p] for p, d in zip(result.rows, result.decisions, strict=True) if d == Decision.KEPT]
        source = step_name
    # published under the workspace lock, held from the stale steps' removal to the last write: two runs of a chain
    # of this name took turns write by write, leaving steps of both (the last writer's final resting on the other's
    # steps); now one run's steps are all written before the other's begin, and a reader under the lock sees one run
    with ws.lock():
        _check_step_names(ws.selections, name, [step["method"] for step in steps])  # again: made while it ran
        _remove_stale_steps(ws, name, [n for n, _, _ in stored])
        return [ws.add_selection(n, [ids[p] for p in r.rows], r.decisions, r.reasons, r.details, prov, r.ranks)
                for n, r, prov in stored][-1]


def _step_of(provenance: dict[str, Any], chain: str, method: str | None) -> bool:
    """Whether a stored selection is a step of chain ``chain``: its provenance says so (``step_of``, recorded since
    2026-12), or, made before, it was made by the ``method`` its name ends in (the only sign it had)."""
    if "step_of" in provenance:
        return provenance["step_of"] == chain
    return method is not None and provenance.get("method") == method


def _check_step_names(listed: dict[str, dict[str, Any]], name: str, methods: list[str]) -> None:
    """A chain's steps are stored as ``<name>.<i>-<method>``: a selection of that name that is no step of this chain
    (the user's own, or another chain's) is refused before any step runs; it was overwritten in silence. So is
    ``name`` itself when it is a step of a chain: a selection (or chain) of that name replaced the step in silence,
    leaving its chain with a step it never made."""
    owner = listed.get(name, {}).get("step_of")
    if owner is not None:
        raise OptionError(f"selection {name!r} is a step of chain {owner!r}: storing a selection under its name would "
                          f"overwrite that step; name the selection otherwise, or run chain {owner!r} again")
    for i, meth in enumerate(methods[:-1]):
        step = f"{name}.{i + 1}-{meth}"
        if step in listed and not _step_of(listed[step], name, meth):
            owner = listed[step].get("step_of")
            raise OptionError(f"selection {step!r} exists and is no step of chain {name!r} ("
                              + (f"a step of chain {owner!r}" if owner else "made on its own")
                              + f"): step {i + 1} of {name!r} would overwrite it; name the chain otherwise, or remove "
                              "that selection")


def _remove_stale_steps(ws, name: str, steps: list[str]) -> None:
    """An earlier chain of this name may have had more steps: their selections (``<name>.<i>-<method>``, made by
    that method) are not this chain's. A selection of the user's, such as ``<name>.1``, is not one of them. A
    damaged step file (left out of ``ws.selections``, its method unreadable) goes too when its name ends in a
    selection method: otherwise it stayed forever, listed as damaged."""
    readable = ws.selections
    for other in [*readable, *(d.name for d in ws.damaged if d.kind == "selection")]:
        step = re.fullmatch(rf"{re.escape(name)}\.\d+-(\w+)", other)
        if not step or other in steps:
            continue
        if (_step_of(readable[other], name, step.group(1)) if other in readable
                else step.group(1) in SELECTORS):  # damaged: its name is all there is
            ws.remove_selection(other)


def _with_earlier_drops(result: SelectorResult, dropped: SelectorResult) -> SelectorResult:
    """The final step's decisions followed by the rows earlier steps of the chain dropped (each detail names the
    step), so the chain's selection has a decision for every row it considered; they rank after the final step's."""
    ranks = list(range(len(result.rows))) if result.ranks is None else list(result.ranks)
    after = max(ranks, default=-1) + 1
    return SelectorResult(result.rows + dropped.rows, result.decisions + dropped.decisions,
                          result.reasons + dropped.reasons, result.details + dropped.details, result.info,
                          ranks + list(range(after, after + len(dropped.rows))))
