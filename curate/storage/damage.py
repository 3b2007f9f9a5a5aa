"""Damaged workspace files as data: a derived column's or a selection's file that cannot be read (cut short,
overwritten, its metadata garbled, its rows not those its metadata records), or a label set's folder whose provenance
or data files cannot be read, is a :class:`DamagedFile`, a :class:`~curate.codes.DamageCode` with details and the
fix. Reading it raises :class:`DamagedFileError` naming the file; the listings (``ws.columns``, ``ws.selections``,
``ws.label_sets``) leave it out and ``ws.damaged`` holds it, so one bad file stops only what needs it, and
``ws.info()``, ``curate info`` and the report show it as damaged."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.codes import DamageCode
from curate.errors import WorkspaceError

# folder of the workspace -> what its files hold (a label set is a folder: labels/<name>)
_KINDS = {"columns": "column", "selections": "selection", "labels": "label set"}


@dataclass(frozen=True)
class DamagedFile:
    path: Path
    code: DamageCode
    detail: str = ""  # what the reader said: pyarrow's words, the columns missing, the rows against the counts

    @property
    def kind(self) -> str:
        """``column``, ``selection``, ``label set``, or ``file`` (another Arrow file of the workspace)."""
        return _KINDS.get(self.path.parent.name, "file")

    @property
    def name(self) -> str:
        return self.path.name if self.kind == "label set" else self.path.stem  # a folder's name: no suffix

    @property
    def problem(self) -> str:
        """What is wrong with the file, in words."""
        return {DamageCode.NOT_ARROW: f"damaged, not a readable Arrow file ({self.detail})",
                DamageCode.BAD_METADATA: f"damaged: its {self.detail or 'curate metadata'} is not JSON",
                DamageCode.MISSING_FILES: f"damaged: its data file(s) {self.detail} are gone",
                DamageCode.NOT_A_SELECTION: f"not a selection's file (no {self.detail} column)",
                DamageCode.WRONG_ROWS: f"damaged: holds {self.detail}",
                DamageCode.NOT_WRITTEN: f"damaged: its rows are not the bytes curate wrote ({self.detail}; "
                                        "overwritten on disk?)"}[self.code]

    @property
    def fix(self) -> str:
        """What to do about it, in words."""
        if self.code is DamageCode.NOT_A_SELECTION:
            return "a file put there by hand? move it out, or make the selection again"
        if self.kind == "label set":
            return (f"remove it (`rm -r {self.path}`) and make the label set again (`curate evol` for an Evol set, "
                    "ws.add_labels for one added by hand)")
        remove = f"remove it (`rm {self.path}`)"
        return {"selection": f"{remove} and make the selection again",
                "column": f"{remove} and compute the column again (run the step that wrote it: its caches answer "
                          "what they hold)"}.get(self.kind, "restore it or remove what it held and compute it again")

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}; {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "path": str(self.path), "code": self.code.value,
                "detail": self.detail, "problem": self.problem, "fix": self.fix}


class DamagedFileError(WorkspaceError):
    """Reading a damaged workspace file; ``damage`` says which, how, and the fix."""

    def __init__(self, damage: DamagedFile, more: str = ""):
        self.damage = damage
        super().__init__(f"{damage}{more}")  # more: another way out, where the caller has one


@contextlib.contextmanager
def named_damage(path: Path) -> Iterator[None]:
    """pyarrow's "File is too small: 8", "Not an Arrow file" name no file: a damaged workspace file is named."""
    import pyarrow as pa

    try:
        yield
    except pa.ArrowInvalid as exc:
        raise DamagedFileError(DamagedFile(path, DamageCode.NOT_ARROW, str(exc))) from None


_WARNED: set[Path] = set()  # damaged files sort_out has warned of (once a process, not per listing)
_LISTED_BY_CALLER: ContextVar[bool] = ContextVar("curate_damage_listed_by_caller", default=False)


@contextlib.contextmanager
def listed_by_caller() -> Iterator[None]:
    """Within it, :func:`sort_out` warns of no damaged file: the caller lists ``ws.damaged`` itself (`curate info`),
    where the warning beside that list named each file twice."""
    token = _LISTED_BY_CALLER.set(True)
    try:
        yield
    finally:
        _LISTED_BY_CALLER.reset(token)


def sort_out(paths: Iterable[Path], read: Callable[[Path], dict[str, Any]], folders: bool = False
             ) -> tuple[dict[str, dict[str, Any]], list[DamagedFile]]:
    """(name -> what ``read`` gives, for the files it can read; the damaged ones): one bad file in a folder is
    listed as damaged instead of stopping the listing, with one warning (logger ``curate``) naming it and the fix.
    A file's name is its stem; with ``folders``, the paths are folders (label sets) named in full. A file removed
    after it was listed (by another process) is left out."""
    readable: dict[str, dict[str, Any]] = {}
    damaged: list[DamagedFile] = []
    for path in paths:
        try:
            readable[path.name if folders else path.stem] = read(path)
        except FileNotFoundError:  # removed since it was listed (another process's chain dropped a stale step): gone,
            if path.exists():  # not damaged; a listing of a selection named otherwise crashed on it
                raise
        except DamagedFileError as exc:
            damaged.append(exc.damage)
            if path not in _WARNED:
                _WARNED.add(path)  # listed by the caller: told of as well
                if not _LISTED_BY_CALLER.get():
                    logging.getLogger("curate").warning("left out: %s", exc.damage)
    return readable, damaged
