"""The trained scorers a `curate run` scores with, one per DEITA score, checked before any step runs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from curate.errors import OptionError, ScorerFolderError, python_and_cli


def resolve_scorers(scorers: dict[str, Any], scores: Sequence[str]) -> dict[str, Any]:
    """``{score name: Scorer}`` from scorers or what ``Scorer.load`` reads; a name outside ``scores`` is an error,
    and so are two scores writing one column or a column name admission's sort key cannot read: each an
    :class:`~curate.errors.OptionError`, as a folder ``Scorer.load`` refuses is."""
    unknown = sorted(set(scorers) - set(scores))
    if unknown:
        raise OptionError(f"scorers[{unknown[0]!r}] (--scorer {unknown[0]}=...): this run computes "
                          f"{', '.join(scores)} only (its sort key)")
    loaded = {name: s if hasattr(s, "fingerprint") else _load(name, s) for name, s in scorers.items()}
    for name, step in loaded.items():  # a quality scorer as complexity: the sort key would be quality squared
        judge = (getattr(step, "imitates", None) or {}).get("judge")
        other = [s for s in scores if s != name and s == judge]
        if other:
            raise OptionError(f"scorers[{name!r}] (--scorer {name}=...): that scorer imitates the {judge} judge, "
                              f"which this run scores as {other[0]}; give a scorer trained on {name} labels "
                              f"(train_scorer(ws, target={name!r}), curate train-scorer --target {name})")
    columns = [loaded[name].column if name in loaded else name for name in scores]  # what each score writes
    if len(set(columns)) < len(columns):  # one column for both scores: one is never scored, the sort key squares it
        raise OptionError(f"the run's scores would write the columns {', '.join(columns)}: give each score its own "
                          "scorer column (scorers={'complexity': ..., 'quality': ...}, --scorer complexity=... "
                          "and quality=...: name different columns)")
    for step in loaded.values():
        if not step.column.isidentifier():  # admission's sort key is an expression over the score columns
            rename = python_and_cli("scorer.named('NAME')", "train-scorer --column")
            raise OptionError(f"scorer column {step.column!r}: admission sorts by an expression over the score "
                              f"columns, so name the scorer with letters, digits and _ ({rename})")
    return loaded


def _load(name: str, folder: Any) -> Any:
    """``Scorer.load(folder)``; a folder it refuses is named as the option that gave it."""
    from curate.scorers import Scorer

    try:
        return Scorer.load(folder)
    except ScorerFolderError as exc:
        raise ScorerFolderError(f"scorers[{name!r}] (--scorer {name}=...): {exc}") from None


def unshadowed_columns(fields: Sequence[str], scores: Sequence[str], suffix: str) -> dict[str, str]:
    """``{score: column}`` for the scores a pool field is named after: ``<score><suffix>`` (the shipped scorer's
    ``_score``, a judge's ``_judge``), the suffix repeated past a field of that name too."""
    taken, out = set(fields), {}
    for name in scores:
        if name in taken:
            column = name + suffix
            while column in taken:
                column += suffix
            out[name] = column
    return out


def check_scorer_inputs(ws: Any, producers: Iterable[Any], computed: Sequence[str] = ()) -> None:
    """An error naming a trained scorer's input column that neither the pool, the workspace, nor this run's signals
    (``computed``: their kinds, writing ``<kind>`` and ``<kind>_<extra>``) provide."""
    for step in producers:
        missing = [name for name in step.inputs if not ws.has_column(name) and name not in ws.pool.column_names
                   and not any(name == kind or name.startswith(f"{kind}_") for kind in computed)]
        if missing:
            raise OptionError(f"scorer {step.column!r} reads column(s) {', '.join(missing)}, which this run does not "
                              f"compute: add them with {python_and_cli('signals=', '--signal')} (e.g. signals=['ifd'], "
                              "--signal ifd, for ifd, ifd_loss_conditioned, ifd_loss_alone)")
