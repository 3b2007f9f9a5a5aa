"""A stored selection: every considered row's decision, reason code and details, in rank order."""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from curate.codes import REFUSED, DamageCode, Decision, Reason, describe, reason_text, settled
from curate.errors import OptionError
from curate.storage.damage import DamagedFile, DamagedFileError
from curate.storage.files import arrow_schema, read_arrow, schema_meta

COLUMNS = ("id", "decision", "reason", "detail", "rank")


def check_selection_schema(path: Path, schema: Any) -> None:
    """A DamagedFileError when the Arrow file ``path`` lacks the columns every selection has (a file put there)."""
    if missing := [c for c in ("id", "decision", "reason") if c not in schema.names]:
        raise DamagedFileError(DamagedFile(path, DamageCode.NOT_A_SELECTION, ", ".join(missing)))


def selection_meta(path: Path) -> dict[str, Any]:
    """A selection file's provenance, read with its schema alone (no rows): how ``ws.selections`` lists them."""
    schema = arrow_schema(path)
    check_selection_schema(path, schema)
    return schema_meta(path, schema)


def selection_table(ids: list[str], decisions: list[Decision | str], reasons: list[Reason | str],
                    details: list[dict[str, Any] | None], ranks: list[int] | None, provenance: dict[str, Any]):
    """The Arrow table of a selection; codes are checked against the enums."""
    import pyarrow as pa

    if not (len(ids) == len(decisions) == len(reasons) == len(details)):
        raise OptionError("ids, decisions, reasons and details must have the same length")
    ranks = list(range(len(ids))) if ranks is None else list(ranks)
    pairs = [settled(d, r) for d, r in zip(decisions, reasons, strict=True)]
    table = pa.table({
        "id": pa.array(ids, pa.string()),
        "decision": pa.array([d.value for d, _ in pairs], pa.string()),
        "reason": pa.array([r.value for _, r in pairs], pa.string()),
        "detail": pa.array([json.dumps(d, default=str) if d else None for d in details], pa.string()),
        "rank": pa.array(ranks, pa.int64()),
    })
    return table.replace_schema_metadata({b"curate": json.dumps(provenance, default=str).encode()})


def with_reason_codes(table):
    """A selection table of the first curate (2026-11: each reason in words, no ``detail`` column) in today's columns:
    each reason the code ``legacy_reason``, its words kept as the detail's ``text`` (reading its rows died with
    ``KeyError: 'detail'``); one written before 2026-12 with each situation in today's code (:func:`settled`:
    ``rejected`` / ``budget_filled`` or ``not_sampled`` read as ``not_reached`` / ``budget_filled``)."""
    import pyarrow as pa

    if "detail" in table.column_names:
        return settled_codes(table)
    words = table.column("reason").to_pylist()
    table = table.set_column(table.column_names.index("reason"), "reason",
                             pa.array([Reason.LEGACY_REASON.value] * len(words), pa.string()))
    table = table.append_column("detail", pa.array([json.dumps({"text": w}) if w else None for w in words],
                                                   pa.string()))
    if "rank" not in table.column_names:
        table = table.append_column("rank", pa.array(range(table.num_rows), pa.int64()))
    return table


def settled_codes(table):
    """``table`` with each row's (decision, reason) as :func:`curate.codes.settled` gives it: one pass over the
    distinct pairs, the columns rewritten only where a pair changes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    pairs = pc.binary_join_element_wise(table["decision"], table["reason"], "\x1f")
    changed = {}
    for pair in pc.unique(pairs).to_pylist():
        decision, _, reason = (pair or "").partition("\x1f")
        try:
            now = settled(decision, reason)
        except ValueError:  # a code no curate wrote: left for rows() and the views to name
            continue
        if now != (decision, reason):
            changed[pair] = now
    if not changed:
        return table
    columns = {"decision": table["decision"], "reason": table["reason"]}
    for pair, (decision, reason) in changed.items():
        hit = pc.equal(pairs, pair)
        columns["decision"] = pc.if_else(hit, decision.value, columns["decision"])
        columns["reason"] = pc.if_else(hit, reason.value, columns["reason"])
    for name, column in columns.items():
        table = table.set_column(table.column_names.index(name), name, column.cast(pa.string()))
    return table


def stored_as(path: Path, name: str, table) -> Selection | None:
    """The selection stored at ``path`` when it holds ``table``'s rows and provenance (its ``created`` time aside),
    marked ``unchanged``; None when there is none, it differs, or it is damaged (it is written again)."""
    import pyarrow as pa

    if not path.exists():
        return None
    try:
        stored = Selection.from_table(name, read_arrow(path), path)
    except (OSError, ValueError, pa.ArrowException, DamagedFileError):
        return None
    new = json.loads((table.schema.metadata or {})[b"curate"])
    if _made_by(stored.provenance) != _made_by(new) or not stored.table.equals(table, check_metadata=False):
        return None
    stored.unchanged = True
    return stored


def _made_by(provenance: dict[str, Any]) -> dict[str, Any]:
    """A selection's provenance less what records the run that wrote it: its ``created`` time, and the seconds
    admission took (``stats``)."""
    out = {k: v for k, v in provenance.items() if k != "created"}
    if isinstance(out.get("stats"), dict):
        out["stats"] = {k: v for k, v in out["stats"].items() if k != "seconds"}
    return out


class Selection:
    """A named selection. ``ids`` are the kept rows in order; ``table`` has every considered row; ``unchanged``:
    storing it found the same selection stored already and left it untouched."""

    unchanged = False

    def __init__(self, name: str, table, provenance: dict[str, Any]):
        self.name = name
        self.table = with_reason_codes(table)
        self.provenance = provenance

    @classmethod
    def from_table(cls, name: str, table, path: Path) -> Selection:
        """The selection stored as ``table`` (its provenance in the schema metadata), read from ``path``; a
        :class:`~curate.storage.damage.DamagedFileError` naming ``path`` when it is not a whole selection's file."""
        check_selection_schema(path, table.schema)
        try:
            provenance = json.loads((table.schema.metadata or {}).get(b"curate", b"{}"))
        except ValueError:
            raise DamagedFileError(DamagedFile(path, DamageCode.BAD_METADATA)) from None
        _check_counts(table, provenance, path)
        return cls(name, table, provenance)

    @property
    def ids(self) -> list[str]:
        """Ids of the kept rows, in selection order."""
        import pyarrow.compute as pc

        kept = self.table.filter(pc.equal(self.table["decision"], Decision.KEPT.value))
        return kept["id"].to_pylist()

    def __len__(self) -> int:
        return len(self.ids)

    def kept_scores(self) -> list[float | None]:
        """The score each kept row was ranked by (a decision's ``detail["score"]``: DEITA's Σ over turns of
        complexity·quality, a threshold's column, ...), in selection order; None for a row its selector gave none."""
        import pyarrow.compute as pc

        kept = self.table.filter(pc.equal(self.table["decision"], Decision.KEPT.value))
        return [json.loads(d).get("score") if d else None for d in kept["detail"].to_pylist()]

    def decisions(self) -> Counter:
        """Rows per decision."""
        return Counter(self.table["decision"].to_pylist())

    def outcomes(self) -> dict[str, int]:
        """Rows ``considered``, ``kept``, ``refused`` (rejected or duplicate: turned away for what they are: too
        similar, failed a rule, below a threshold), ``not_reached`` (left because the budget filled first) and
        ``unscored``: what a summary says in place of one "dropped" count."""
        counts = self.decisions()
        return {"considered": self.table.num_rows, "kept": counts.get(Decision.KEPT.value, 0),
                "refused": sum(counts.get(d.value, 0) for d in REFUSED),
                "not_reached": counts.get(Decision.NOT_REACHED.value, 0),
                "unscored": counts.get(Decision.UNSCORED.value, 0)}

    def reasons(self) -> Counter:
        """Rows per (decision, reason code)."""
        return Counter(zip(self.table["decision"].to_pylist(), self.table["reason"].to_pylist(), strict=True))

    def rows(self, decision: str | None = None, reasons: Iterable[str] | None = None, ids: Any = None,
             first_of_each: bool = False, limit: int | None = None) -> list[dict[str, Any]]:
        """Every considered row as a dict: id, decision, reason, detail (a dict), rank (1: considered first, as the
        views, the report and a kept row's ``detail["rank"]`` show it), and ``why`` in words; in rank order. Only those of ``decision``, with one of
        ``reasons``, or among ``ids`` (ids, or an Arrow array of them); ``first_of_each``: the first row of each
        (decision, reason); at most ``limit``. The filters run on the Arrow table, so a report on a 1M-row
        selection builds dicts for the rows it shows only."""
        import pyarrow as pa
        import pyarrow.compute as pc

        if decision is not None and decision not in set(Decision):
            raise OptionError(f"unknown decision {decision!r}: one of {', '.join(d.value for d in Decision)}")
        reasons = None if reasons is None else list(reasons)
        if reasons is not None and (unknown := [r for r in reasons if r not in set(Reason)]):
            raise OptionError(f"unknown reason {unknown[0]!r}: one of {', '.join(r.value for r in Reason)}")
        table = self.table
        if ids is not None:
            ids = ids if isinstance(ids, pa.Array | pa.ChunkedArray) else pa.array(list(ids), pa.string())
            table = table.filter(pc.is_in(table["id"], value_set=ids))
        if decision is not None:
            table = table.filter(pc.equal(table["decision"], str(decision)))
        if reasons is not None:
            table = table.filter(pc.is_in(table["reason"], value_set=pa.array([str(r) for r in reasons], pa.string())))
        # rank order (stable, unranked rows last in file order); with a limit only its rows are gathered, so a
        # notebook view of a 1M-row selection does not copy every column in sorted order
        order = pc.sort_indices(table["rank"])
        table = table.take(order if limit is None or first_of_each else order[:limit])
        if first_of_each:
            firsts: dict[tuple[str, str], int] = {}
            for i, pair in enumerate(zip(table["decision"].to_pylist(), table["reason"].to_pylist(), strict=True)):
                firsts.setdefault(pair, i)
            table = table.take(pa.array(sorted(firsts.values()), pa.int64()))
        if limit is not None:
            table = table.slice(0, limit)
        out = []
        for row in table.to_pylist():
            row["detail"] = json.loads(row["detail"]) if row["detail"] else {}
            row["rank"] = None if row["rank"] is None else row["rank"] + 1  # stored from 0
            row["why"] = describe(row["reason"], row["detail"])
            out.append(row)
        return out

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><td>{html.escape(d)}</td><td>{html.escape(reason_text(r))}</td>"
                        f"<td style='text-align:right'>{n:,}</td></tr>"
                        for (d, r), n in self.reasons().most_common())
        return (f"<b>selection {html.escape(self.name)}</b>: {len(self):,} kept of {self.table.num_rows:,} considered"
                f"<table><tr><th>decision</th><th>reason</th><th>rows</th></tr>{cells}</table>")

    def __repr__(self) -> str:
        return f"Selection({self.name!r}, kept={len(self):,}, {dict(self.decisions())})"


def _check_counts(table, provenance: dict[str, Any], where: Path) -> None:
    """The rows of a selection's file against the counts its metadata recorded when it was written (one pass over the
    decision column): a file rewritten with 40 of its 300 rows exported 40 rows as if whole."""
    import pyarrow.compute as pc

    counts = provenance.get("counts")
    if not isinstance(counts, dict):  # none recorded: nothing to hold it to
        return
    have = {v["values"]: v["counts"] for v in pc.value_counts(table["decision"]).to_pylist()}
    # the rows kept exactly; all rows at least: a chain's last step records its own candidates, its file also holds
    # the rows earlier steps dropped (and a selector's counts may group decisions the file tells apart)
    if not all(isinstance(n, int) for n in counts.values()) or have.get("kept", 0) != counts.get("kept", 0) \
            or table.num_rows < sum(counts.values()):
        raise DamagedFileError(DamagedFile(where, DamageCode.WRONG_ROWS,
                                           f"{table.num_rows:,} row(s) {have} where its metadata records {counts}"))
