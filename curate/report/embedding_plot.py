"""The report's embedding map: the pool's embeddings in 2-D (PCA, or UMAP when installed), kept rows against
dropped rows and the rest (colours and inputs: :mod:`curate.report.plot_inputs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure

from curate.report.figures import NotebookFigure
from curate.report.plot_inputs import (
    POOL_COLOUR,
    MissingInput,
    _need_pool,
    _scatter_by_role,
    _selection_masks,
)
from curate.report.scales import drawable
from curate.storage.blobs import check_read_rows

if TYPE_CHECKING:
    from curate.storage.workspace import Workspace


def project_2d(vectors: np.ndarray, method: str = "auto", seed: int = 0,
               pca_fit_rows: int = 5000) -> tuple[np.ndarray, str]:
    """2-D coordinates of ``vectors`` with UMAP (``auto`` when installed) or PCA; returns (coords, method).

    PCA finds its axes from at most ``pca_fit_rows`` random rows, then projects every row.
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    if method == "auto":
        try:
            import umap  # noqa: F401

            method = "umap"
        except ImportError:
            method = "pca"
    if method == "umap":
        import umap

        return umap.UMAP(n_components=2, random_state=seed).fit_transform(vectors), "UMAP"
    if method != "pca":
        from curate.errors import OptionError

        raise OptionError(f"projection {method!r}: use auto, pca or umap")
    # the two main axes of a pool are found as well from a few thousand rows; an SVD of all 30K takes seconds
    fit_rows = vectors
    if len(vectors) > pca_fit_rows:
        fit_rows = vectors[np.random.default_rng(seed).choice(len(vectors), pca_fit_rows, replace=False)]
    coords = pca_coordinates(fit_rows, vectors, min(2, *vectors.shape))
    if coords.shape[1] < 2:
        coords = np.column_stack([coords, np.zeros(len(coords))])
    return coords, "PCA"


def pca_coordinates(fit_rows: np.ndarray, vectors: np.ndarray, n_components: int) -> np.ndarray:
    """``vectors`` on the first ``n_components`` principal axes of ``fit_rows``: sklearn's PCA (an exact SVD of the
    centred rows, each axis's sign set as ``svd_flip`` sets it: its largest entry positive), in numpy, as importing
    sklearn.decomposition cost a report 3-5 s."""
    fit_rows = np.asarray(fit_rows, dtype=np.float64)
    mean = fit_rows.mean(axis=0)
    _, _, vt = np.linalg.svd(fit_rows - mean, full_matrices=False)
    axes = vt[:n_components]
    axes *= np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(axis=1)])[:, None]
    return (np.asarray(vectors, dtype=np.float64) - mean) @ axes.T


def embedding_map(ws: Workspace, selection: str | None = None, embeddings: str = "default",
                  method: str = "auto", max_points: int = 50_000) -> Figure:
    """The pool's embeddings in 2-D (PCA, or UMAP when installed): kept rows vs dropped rows vs the rest."""
    _need_pool(ws)
    if embeddings not in ws.embedding_sets:
        from curate.storage.blobs import missing_embeddings

        raise MissingInput(missing_embeddings(ws, embeddings))
    from curate.errors import WorkspaceError

    try:
        matrix = ws.embeddings(embeddings)
        vectors = check_read_rows(ws, embeddings, np.asarray(matrix), getattr(matrix, "filename", None))
    except WorkspaceError as exc:  # e.g. rows loaded after embedding: say so instead of plotting
        raise MissingInput(str(exc)) from exc
    if len(vectors) < 2:
        raise MissingInput("the embedding map needs at least two rows")
    coords, used = project_2d(vectors, method)
    fig = NotebookFigure(figsize=(5.5, 4.5), layout="constrained")
    ax = fig.subplots()
    show = np.ones(len(coords), dtype=bool)
    if len(coords) > max_points:  # plot a fixed random subset; the projection still sees every row
        show[:] = False
        show[np.random.default_rng(0).choice(len(coords), max_points, replace=False)] = True
    if selection:
        kept, dropped = _selection_masks(ws, selection)
        _scatter_by_role(ax, coords[:, 0], coords[:, 1], show, kept, dropped, sizes=(4, 5, 9))
    else:
        ax.scatter(coords[show, 0], coords[show, 1], s=4, c=POOL_COLOUR, linewidths=0)
    same = ", all vectors equal" if not np.ptp(coords, axis=0).any() else ""  # one point: PCA of equal vectors
    ax.set_title(drawable(f"embeddings {embeddings!r}, {used}{same}"
                          + (f", selection {selection!r}" if selection else "")), fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return fig
