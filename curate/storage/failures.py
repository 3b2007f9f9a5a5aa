"""A step column's failure column (``<column>_failure``): its Arrow type, and its cells read back as
:class:`~curate.codes.Failure` lists, refusing in words the format of the first curate."""

from __future__ import annotations

from typing import Any

from curate.codes import Failure
from curate.errors import WorkspaceError
from curate.storage.columns import check_ids_in_pool

# ``ws`` below is a curate.storage.workspace.Workspace (not imported: it imports this module).
Workspace = Any


def failure_arrow_type() -> Any:
    """The Arrow type of a failure column's cells (a list of ``Failure.to_dict()``), whatever rows it holds: an
    export of rows without a failure has the same schema as one with, so exports concatenate."""
    import pyarrow as pa

    return pa.list_(pa.struct([("code", pa.string()), ("message", pa.string()), ("raw", pa.string()),
                               ("turn", pa.int64())]))


def check_failure_format(ws: Workspace, name: str, provenance: dict[str, Any]) -> None:
    """Refuse, in words, a failure column of the first curate (2026-11; ``failures_of``, failures as text without
    reason codes), which this one cannot read nor add to (a traceback in ``report`` and ``select`` before)."""
    if provenance.get("failures_of") is not None and "of" not in provenance:
        raise WorkspaceError(f"{ws.path}: column {name!r} was written by a curate before reason codes (2026-11), as "
                             "text this curate cannot read; make a new workspace from the pool file (curate run "
                             "POOL --out NEW, or curate load)")


def read_failures(ws: Workspace, name: str, ids: list[str] | None = None) -> list[list[Failure]]:
    """``Workspace.failures``' body: each row's failures for step column ``name`` (empty list when it has a value)."""
    side = f"{name}_failure"
    if ids is not None:
        check_ids_in_pool(ws, ids)
    if not ws.has_column(side):
        return [[] for _ in (ws.ids if ids is None else ids)]
    check_failure_format(ws, side, ws.column_provenance(side))
    return [parse_failures(v) for v in ws.column(side, ids)]


def parse_failures(value: Any) -> list[Failure]:
    """A stored failure cell as Failures (None -> [])."""
    if not value:
        return []
    return [Failure.from_dict(d) for d in value]

def failure_reasons(failures: list[list[Any]]) -> dict[str, tuple[int, str]]:
    """Reason code -> (rows failing with it, its first failure's detail, cut to 160 characters)."""
    reasons: dict[str, tuple[int, str]] = {}
    for fails in failures:
        for code in dict.fromkeys(f.code for f in fails):
            n, detail = reasons.get(code, (0, str(next(f for f in fails if f.code == code))[:160]))
            reasons[code] = (n + 1, detail)
    return reasons
