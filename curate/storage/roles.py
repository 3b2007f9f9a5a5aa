"""Which derived column a default means: a DEITA score (``complexity``, ``quality``) or the normalised InsTag tags
(``tags``), found by the provenance of the step that wrote it.

One rule for every default that names a role (the selectors' default sort key, the ``instag`` selector,
``coverage_report``, ``curate tags`` and the report's plots):

1. a derived column named after the role (``ws.score("quality")``'s ``quality``, ``curate tag``'s ``tags``) is it;
2. else the derived columns whose provenance says they play it: a judge whose prompt is the role (``quality_judge``,
   which ``curate run`` writes beside a pool field ``quality``), a scorer that imitates it (``quality_score``, a
   trained scorer's own column), the tag normaliser's output (``tags_instag``). One is it; several are ambiguous,
   an error naming them;
3. else none: an error saying what writes one. A pool field of the role's name is the user's own data, read only
   when named (``--sort-by quality``, ``tags_column="tags"``), never as a default.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from curate.errors import NotInWorkspaceError, WorkspaceError

__all__ = ["ROLES", "NoRoleColumn", "role_candidates", "role_column", "wrote_text"]


class NoRoleColumn(NotInWorkspaceError, LookupError):
    """No derived column plays the role a default names (nothing has written one yet)."""


def _is_score(role: str) -> Callable[[dict[str, Any]], bool]:
    def plays(prov: dict[str, Any]) -> bool:
        if prov.get("kind") == "judge":  # a judge of another reply (response_column: a seed answer) scores that reply
            return prov.get("prompt") == role and not prov.get("response_column")
        if prov.get("kind") == "scorer":  # imitates: the judge's column, or its detail the judge's prompt
            return role in (prov.get("imitates"), (prov.get("imitates_detail") or {}).get("prompt"))
        return False

    return plays


# role -> (what it is, in words; what writes one; whether a column's provenance says it plays the role)
ROLES: dict[str, tuple[str, str, Callable[[dict[str, Any]], bool]]] = {
    "complexity": ("complexity scores", "score them first (curate score --scorer default, or a judge: --judge "
                   "complexity)", _is_score("complexity")),
    "quality": ("quality scores", "score them first (curate score --scorer default, or a judge: --judge quality)",
                _is_score("quality")),
    "tags": ("normalised InsTag tags", "tag the pool first (curate tag WS, or ws.apply(Tagger(backend)) then "
             "normalize(ws))", lambda prov: prov.get("kind") == "instag_normalized"),
}


def role_candidates(ws: Any, role: str) -> list[str]:
    """The derived columns that could be the role's: the one named after it alone, else those whose provenance
    says they play it (pool order of creation); a damaged column's provenance is unknown, so it plays none but its own
    name's."""
    columns = ws.columns
    if role in columns or ws.has_column(role):  # damaged, it is still the one: reading it names the file
        return [role]
    plays = ROLES[role][2]
    return [name for name, prov in columns.items() if plays(prov)]


def role_column(ws: Any, role: str, name_it: str) -> str:
    """The derived column playing ``role`` (see the module's rule); an error naming the choices when several do,
    and :class:`NoRoleColumn` when none does. ``name_it``: how the caller's user names a column instead
    (``--sort-by EXPR, sort_by= in Python``)."""
    what, writes, _ = ROLES[role]
    found = role_candidates(ws, role)
    if len(found) == 1:
        return found[0]
    if found:
        said = "; ".join(f"{name} ({wrote_text(ws.columns[name])})" for name in found)
        raise WorkspaceError(f"{ws.path}: {len(found)} derived columns hold {what}: {said}; name the one to use "
                             f"({name_it})")
    if role == "tags" and (raw := [n for n, prov in ws.columns.items() if prov.get("kind") == "instag_tags"]):
        writes = (f"the judge's raw tags are in {', '.join(map(repr, raw))}, not normalised yet (curate tag --no-normalize "
                  "stops there): normalise them (curate tags WS --normalize, or normalize(ws))")  # said: tag the pool
    field = ws.has_pool and role in ws.pool.column_names
    own = (f"; the pool's own field {role!r} is not read by default (a step's {role} column would sit beside it): "
           f"name it to use it ({name_it})") if field else ""
    raise NoRoleColumn(f"{ws.path}: no derived column holds {what} yet: {writes.replace('WS', str(ws.path))}"
                       f"{own}; derived columns {sorted(ws.columns) or 'none'}")


def wrote_text(prov: dict[str, Any]) -> str:
    """Which step wrote a column, in words; a provenance naming no kind is a column added with ``ws.add_column``
    (human labels, the user's own values), or, with runs recorded, written by ``ws.apply`` of a step whose
    ``describe()`` names none."""
    kind = prov.get("kind")
    if not kind:
        return "written by a step naming no kind" if "runs" in prov else "added with ws.add_column"
    if kind == "judge":
        return f"judge, prompt {prov.get('prompt')}" + (f", model {prov['model']}" if prov.get("model") else "")
    if kind == "scorer":
        return f"scorer imitating {prov.get('imitates')}"
    return str(kind)
