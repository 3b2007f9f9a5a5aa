"""What selectors read besides scores: a workspace's unit embedding rows and row texts, and files of target texts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from curate.errors import InputError, python_and_cli
from curate.rows import row_text
from curate.select.admission import unit_rows
from curate.storage.blobs import check_read_rows
from curate.storage.files import take_values


def id_order(ws, rows: np.ndarray) -> np.ndarray:
    """Indices into ``rows`` (pool positions) that sort them by row id. Ids are content hashes, so a seeded draw, a
    clustering or a tie over this order picks the same rows for the same seed whatever order the pool file held."""
    pool_ids = ws.ids
    return np.argsort(np.asarray([pool_ids[p] for p in rows.tolist()], dtype=str), kind="stable")


def in_id_order(ws, rows: np.ndarray) -> np.ndarray:
    """``rows`` (pool positions) sorted by row id (:func:`id_order`)."""
    return rows[id_order(ws, rows)]


def vectors(ws, embeddings: str, rows: np.ndarray) -> np.ndarray:
    """The rows' embeddings (pool positions ``rows``) as float32 unit rows (renormalised where off unit
    norm, so cosines stay true cosines)."""
    matrix = ws.embeddings(embeddings)
    read = check_read_rows(ws, embeddings, matrix[rows], getattr(matrix, "filename", None))
    # positions index a fresh copy, normalised where it lies (a second copy was 1.5 GB per 1M MiniLM rows)
    return unit_rows(read, in_place=not np.may_share_memory(read, matrix))


class UnitRowsView:
    """:func:`vectors` read only where indexed: ``view[k]`` is row ``rows[k]`` of the (memory-mapped) matrix as a
    unit row. DEITA admission reads the rows its walk examines, so a budget of B over N candidates reads about
    the first B-and-some rows in score order, not a copy of all N (1.5 GB per 1M rows of MiniLM vectors)."""

    def __init__(self, matrix: np.ndarray, rows: np.ndarray, check: Callable[[np.ndarray], np.ndarray] | None = None):
        self.matrix, self.rows = matrix, np.asarray(rows, dtype=np.int64)
        self.check = check  # the rows read, refused when damaged (:func:`curate.storage.blobs.check_read_rows`)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), self.matrix.shape[1]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        rows = self.matrix[self.rows[index]]
        return unit_rows(rows if self.check is None else self.check(rows))


def vector_view(ws, embeddings: str, rows: np.ndarray) -> UnitRowsView:
    """The rows' embeddings as a :class:`UnitRowsView` of the stored matrix."""
    matrix = ws.embeddings(embeddings)
    file = getattr(matrix, "filename", None)
    return UnitRowsView(matrix, rows, lambda read: check_read_rows(ws, embeddings, read, file))


TEXT_CHUNK_ROWS = 10_000  # conversations turned into Python objects at a time by iter_texts
SELECTOR_TEXT = python_and_cli("text=", "--param text=")  # a selector's text option, as curate select takes it


def texts(ws, rows: np.ndarray, text: str) -> list[str]:
    """One text per row (pool positions ``rows``): its instruction, response or conversation
    (see :func:`curate.rows.row_text`)."""
    return list(iter_texts(ws, rows, text))


def iter_texts(ws, rows: np.ndarray, text: str) -> Iterator[str]:
    """:func:`texts` one at a time, reading ``TEXT_CHUNK_ROWS`` conversations from the pool at a time: a walk over
    every row (exact or MinHash dedup) holds a chunk of conversations, not the pool's."""
    column = ws.pool.data.table.column("conversation")
    for start in range(0, len(rows), TEXT_CHUNK_ROWS):
        yield from (row_text(c, text, SELECTOR_TEXT) for c in take_values(column, rows[start:start + TEXT_CHUNK_ROWS]))


def score_detail(value: float) -> dict[str, float]:
    """``{"score": value}``, or nothing for a NaN (no score)."""
    return {} if np.isnan(value) else {"score": float(value)}


def target_file(selector: str, target: str, *, folder: bool = False) -> Path:
    """The file (or, with ``folder``, the dataset folder) of a selector's target texts (``target=``, CLI ``--param
    target=FILE``; ``curate run --decontaminate FILE``): one missing is bad input data naming it (an
    :class:`~curate.errors.InputError`, exit 65), as a missing pool file is, and as its malformed lines are."""
    path = Path(target)
    if not path.exists():
        raise InputError(target, "file", f"no such file{' or folder' if folder else ''} ({selector}: the target texts)")
    if not folder and not path.is_file():
        raise InputError(target, "file", f"not a file ({selector}: the target texts, one per line)")
    return path


def text_lines(path: Path, selector: str) -> list[str]:
    """The non-blank lines of the UTF-8 text file ``path`` (one target text each); a file not UTF-8 or without a
    text is an InputError naming the file (and the line)."""
    data = path.read_bytes()
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        text = data[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:bom + exc.start].count(b"\n") + 1
        raise InputError(str(path), f"line {line}", f"invalid UTF-8 at byte {bom + exc.start}") from None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError(str(path), "file", f"no target texts ({selector}): it is empty or holds only blank lines")
    return lines
