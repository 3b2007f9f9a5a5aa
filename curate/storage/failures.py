"""A step column's failure column (``<column>_failure``): its Arrow type, and its cells read back as
:class:`~curate.codes.Failure` lists, those of the first curate (text, no reason code) as ``legacy_failure``."""

from __future__ import annotations

from typing import Any

from curate.codes import Failure, FailureCode
from curate.storage.columns import check_ids_in_pool
from curate.storage.files import read_arrow

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any


def failure_arrow_type() -> Any:
    """The Arrow type of a failure column's cells (a list of ``Failure.to_dict()``), whatever rows it holds: an
    export of rows without a failure has the same schema as one with, so exports concatenate."""
    import pyarrow as pa

    return pa.list_(pa.struct([("code", pa.string()), ("message", pa.string()), ("raw", pa.string()),
                               ("turn", pa.int64())]))


def legacy_step(name: str, provenance: dict[str, Any]) -> str | None:
    """The step column whose failures column ``name`` holds in the form of the first curate (2026-11: a text cell
    per failed row, no reason code; a scorer's provenance names it ``failures_of``, a judge's ``judge`` under kind
    ``judge_failure``, the tagger's is kind ``instag_failures``); None for today's form and for other columns."""
    if "of" in provenance:
        return None
    if provenance.get("failures_of"):
        return str(provenance["failures_of"])
    if provenance.get("kind") == "judge_failure":
        return str(provenance.get("judge") or name.removesuffix("_failure"))
    if provenance.get("kind") == "instag_failures" and name.endswith("_failure"):
        return name.removesuffix("_failure")
    return None


def failures_of(name: str, provenance: dict[str, Any]) -> str | None:
    """The step column whose failures column ``name`` holds, today's form or the first curate's; None if none."""
    return provenance.get("of") if provenance.get("kind") == "failure" else legacy_step(name, provenance)


def legacy_failure(text: str) -> Failure:
    """A failure cell of the first curate (its text) as a Failure with the code ``legacy_failure``, the text kept."""
    return Failure(FailureCode.LEGACY_FAILURE, f"{text} (recorded by a curate before reason codes, 2026-11)")


def rewrite_legacy_failures(ws: Workspace, column: str) -> bool:
    """Rewrite ``<column>_failure`` in today's form if the first curate wrote it (each text as a ``legacy_failure``;
    caller holds the column's lock): a step run again merges its failures into it. Whether it did."""
    side = f"{column}_failure"
    if not ws.has_column(side) or legacy_step(side, prov := ws.column_provenance(side)) != column:
        return False
    table = read_arrow(ws._column_path(side))
    values = [[f.to_dict() for f in parse_failures(v)] or None for v in table.column("value").to_pylist()]
    earlier = {k: v for k, v in prov.items() if k not in ("name", "created")}
    ws.add_column(side, values, {"kind": "failure", "of": column, "legacy": earlier}, ids=table.column("id"),
                  value_type=failure_arrow_type())
    return True


def read_failures(ws: Workspace, name: str, ids: list[str] | None = None) -> list[list[Failure]]:
    """``Workspace.failures``' body: each row's failures for step column ``name`` (empty list when it has a value)."""
    side = f"{name}_failure"
    if ids is not None:
        check_ids_in_pool(ws, ids)
    if not ws.has_column(side):
        return [[] for _ in (ws.ids if ids is None else ids)]
    return [parse_failures(v) for v in ws.column(side, ids)]


def parse_failures(value: Any) -> list[Failure]:
    """A stored failure cell as Failures (None -> []; the first curate's text: one ``legacy_failure``; an empty reply
    stored as ``no_logprobs``: ``empty_output``, :func:`empty_reply`)."""
    if not value:
        return []
    if isinstance(value, str):
        return [legacy_failure(value)]
    return [empty_reply(Failure.from_dict(d)) for d in value]


def empty_reply(failure: Failure) -> Failure:
    """``failure``, or, for a digit judge's empty reply (no text, no logprobs) that a curate before 2026-12-07 stored
    as ``no_logprobs`` (as if a proxy had dropped the logprobs of a digit it sent), the ``empty_output`` failure a
    judge records for it now, its stored words kept: its rows counted under ``no_logprobs`` sent the user after a
    proxy. A ``no_logprobs`` with text (``'4'``) is one."""
    if failure.code is not FailureCode.NO_LOGPROBS or failure.raw is None or failure.raw.strip():
        return failure
    return Failure(FailureCode.EMPTY_OUTPUT, f"the reply has no text and no logprobs (raw output {failure.raw!r}; "
                   f"stored as no_logprobs by a curate before 2026-12-07: {failure.message})", failure.raw, failure.turn)


def _cut(text: str, chars: int) -> str:
    """``text`` on one line (a pydantic ValidationError's lines broke a summary line and a warning apart), or its
    first ``chars`` characters ending in "…" (a cut detail read as a whole one: "tokens, )")."""
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars - 1] + "…"


def failure_reasons(failures: list[list[Any]]) -> dict[str, tuple[int, str]]:
    """Reason code -> (rows failing with it, its first failure's detail, cut to 160 characters, "…" saying so)."""
    reasons: dict[str, tuple[int, str]] = {}
    for fails in failures:
        for code in dict.fromkeys(f.code for f in fails):
            n, detail = reasons.get(code, (0, _cut(str(next(f for f in fails if f.code == code)), 160)))
            reasons[code] = (n + 1, detail)
    return reasons
