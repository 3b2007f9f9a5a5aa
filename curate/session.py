"""The public ``curate.Workspace``: the storage Workspace plus the verbs a notebook user types.

Storage (``curate.storage``) imports nothing above it; the verbs that need steps, selectors and views
live here, at the top, so the dependency arrows only point down.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curate.defaults import EMBED, REPORT, SELECT
from curate.errors import CurateError, OptionError
from curate.storage.apply_result import ApplyResult
from curate.storage.files import operation
from curate.storage.selection import Selection
from curate.storage.selection_inputs import stale_note
from curate.storage.workspace import Workspace as StorageWorkspace

if TYPE_CHECKING:
    import datasets

    from curate.llm.base import Backend
    from curate.llm.judges import Judge
    from curate.report.views import RowsView
    from curate.scorers import Scorer
    from curate.train.harness import TrainRun


class ViewedSelection(Selection):
    """A selection as the notebook shows it: counts by decision, reason groups, its first rows and why; and that it
    is out of date when a refresh removed some of its kept rows from its workspace's pool, or a column or embedding
    set it read was rewritten since."""

    workspace: StorageWorkspace | None = None

    @classmethod
    def of(cls, sel: Selection, workspace: StorageWorkspace) -> ViewedSelection:
        """``sel`` viewed against the pool of ``workspace``."""
        viewed = cls(sel.name, sel.table, sel.provenance)
        viewed.workspace, viewed.unchanged = workspace, sel.unchanged
        return viewed

    def out_of_date(self) -> str:
        """What the views say when kept rows have left the pool, or inputs it read were rewritten, since the selection
        was made ('' when neither)."""
        if self.workspace is None:
            return ""
        return stale_note(self.workspace, self)

    def _repr_html_(self) -> str:
        from curate.report.views import selection_html

        return selection_html(self, stale=self.out_of_date())

    def __repr__(self) -> str:
        stale = self.out_of_date()
        return super().__repr__()[:-1] + (f", {stale})" if stale else ")")


class Workspace(StorageWorkspace):
    """A curation session in a directory: load, score, embed, select, show, report, export."""

    @operation
    def score(self, judge: Judge | Scorer | str | os.PathLike, backend: Backend | None = None, *,
              column: str | None = None, response_column: str | None = None, **kwargs: Any) -> ApplyResult:
        """Score the rows with an LLM judge and a backend, or with a trained ``Scorer`` (every turn, via ``apply``),
        as ``curate score`` does: ``column`` names the column written; ``response_column`` judges the replies in
        that derived column (a model's own answers) instead of the pool's, into ``<it>_<judge>`` unless ``column``
        says otherwise. Judge options (``params``, ``min_digit_mass``, ``prompt_dirs``) build the ``Judge``; the
        rest go to ``apply``. Returns the :class:`~curate.storage.apply_result.ApplyResult`: rows computed, reused
        and failed, and why."""
        from curate.scorers import Scorer

        if isinstance(judge, Scorer):
            if backend is not None:
                raise OptionError("a trained Scorer needs no backend")
            if response_column is not None:  # a model's answers: only a scorer that reads replies can judge them
                if "response" not in judge.reads:
                    raise OptionError(f"response_column={response_column!r}: scorer {judge.column!r} reads no "
                                      f"response (it reads {judge.reads})")
                judge = judge.reading_replies(response_column, column)
            elif column is not None:
                judge = judge.named(column)
            return self.apply(judge, **kwargs)
        from curate.llm.judges import Judge  # a Judge, a prompt name or a prompt file; ws.apply does the rest

        options = {k: kwargs.pop(k) for k in ("params", "min_digit_mass", "prompt_dirs") if k in kwargs}
        if not isinstance(judge, Judge):
            judge = Judge(judge, column=column, response_column=response_column, **options)
        elif options or column is not None or response_column is not None:
            given = sorted([*options, *(["column"] if column is not None else []),
                            *(["response_column"] if response_column is not None else [])])
            raise OptionError(f"give {given} to Judge(...), not to score()")
        return self.apply(judge if backend is None else judge.with_backend(backend), **kwargs)

    @operation
    def select(self, method: str | None = None, name: str | None = None, input_selection: str | None = None,
               steps: list[dict[str, Any]] | None = None, progress: bool | None = None, **params: Any) -> Selection:
        """Run a selector (see :mod:`curate.select`; without ``method`` or ``steps``: ``SELECT.method``, deita, as
        ``curate select``) and store its decisions as selection ``name``. ``progress``: bars over the long walks and
        steps (MinHash, k-center, K-means, LESS's gradients, Instruction Mining's fine-tunes); None: shown in a
        notebook or a terminal, as ``curate select`` shows them, unless a caller (``run_pipeline(progress=False)``)
        turned them off."""
        from curate.select import select
        from curate.select.progress import progress_wanted, showing_progress

        if method is None and steps is None:
            method = SELECT.method
        registered_selectors()
        with showing_progress(progress_wanted(progress)):
            return ViewedSelection.of(select(self, method=method, name=name, input_selection=input_selection,
                                             steps=steps, **params), self)

    def info(self) -> dict[str, Any]:
        """:meth:`curate.storage.workspace.Workspace.info`, shown in a notebook as the workspace view."""
        from curate.report.views import WorkspaceInfo

        return WorkspaceInfo(super().info(), self)

    def selection(self, name: str) -> Selection:
        """A stored selection (shown in a notebook with its reason groups and first rows)."""
        return ViewedSelection.of(super().selection(name), self)

    @operation
    def embed(self, model: str | None = None, text: str = EMBED.text, name: str = EMBED.name, **kwargs: Any) -> dict:
        """Embed every row (see :func:`curate.embed.embed`); unchanged rows come from the cache."""
        from curate.embed import embed

        return embed(self, model=model, text=text, name=name, **kwargs)

    @operation
    def signal(self, kind: str, *, model: str | os.PathLike | None = None, device: str | None = None,
               ids: list[str] | None = None, reference_selection: str | None = None, dtype: str | None = None,
               max_length: int | None = None, chat_template: str | None = None, column: str | None = None,
               **kwargs: Any) -> ApplyResult:
        """Apply a token-level model signal (``ifd``, ``perplexity``, ``learnability``) from a small causal LM
        (packaged SmolLM2 by default); per-turn columns, cached and resumable. ``learnability`` tunes its
        reference model on ``reference_selection`` (a selection's kept rows). ``dtype``, ``max_length`` and
        ``chat_template`` (a Jinja string) set the engine (:class:`curate.signals.engine.Engine`); ``column``: the
        column it writes (default: the signal's name), e.g. to keep values under other settings beside it."""
        from curate.signals import IFD, Learnability, Perplexity

        given = {"device": device, "dtype": dtype, "max_length": max_length, "chat_template": chat_template,
                 "column": column}
        options = {k: v for k, v in given.items() if v is not None}
        if kind == "learnability":
            if not reference_selection:
                raise OptionError("learnability needs a reference selection (the small high-quality set to tune on)")
            step = Learnability.from_selection(self, reference_selection, model=model, **options)
        elif kind in ("ifd", "perplexity"):
            if reference_selection:
                raise OptionError(f"a reference selection is for learnability; {kind} has no reference model")
            step = (IFD if kind == "ifd" else Perplexity)(model, **options)
        else:
            raise OptionError(f"unknown signal {kind!r}: ifd, perplexity or learnability")
        return self.apply(step, ids, **kwargs)

    @operation
    def train(self, selection: str | None = None, *, model: str | os.PathLike | None = None,
              device: str | None = None, ids: list[str] | None = None, progress: bool = True,
              **config: Any) -> TrainRun:
        """Fine-tune a small causal LM (packaged SmolLM2 by default; LoRA, or full with ``lora_rank=0``) on the
        pool or a selection's kept rows, recording every row each epoch; writes the columns ``confidence``,
        ``variability``, ``correctness`` (data map) and ``el2n``, ``grand`` (Data Diet). Cached and resumable;
        ``config``: fields of :class:`curate.train.TrainConfig` (epochs, learning_rate, ...). Returns the run."""
        from curate.train.columns import train_workspace
        from curate.train.harness import TrainConfig

        if selection is not None and ids is not None:
            raise CurateError("pass selection= or ids=, not both")
        rows = self.selection(selection).ids if selection is not None else ids
        return train_workspace(self, rows, model=model, config=TrainConfig(**config), device=device,
                               progress=progress or None)

    @operation
    def fine_tune(self, selection: str, out: str | os.PathLike, *, model: str | os.PathLike | None = None,
                  device: str | None = None, progress: bool = True, **config: Any) -> Path:
        """Fine-tune a small causal LM (as :meth:`train`, but writing no columns) on a selection's kept rows and
        export it to ``out`` as a plain Hugging Face folder (LoRA merged) that vLLM serves: MoDS' seed model.
        It is trained on each answer's end-of-turn token too (``end_of_turn=True`` unless given), so it learns to
        stop. Cached: the same rows and settings reuse the run and the folder. Returns ``out``."""
        from curate.train.columns import train_workspace
        from curate.train.export import check_model_target, export_model
        from curate.train.harness import TrainConfig

        check_model_target(out)  # before the fine-tune, not after it
        config.setdefault("end_of_turn", True)
        run = train_workspace(self, self.selection(selection).ids, model=model, config=TrainConfig(**config),
                              device=device, progress=progress or None, columns=False)
        return export_model(run, out)

    @operation
    def show(self, rows: Any, columns: str | list[str] | None = None, limit: int | None = 20,
             decision: str | None = None) -> RowsView:
        """Rows rendered readably (HTML in Jupyter, text elsewhere): ids, pool positions, or a selection name (its
        kept rows; with ``decision``, e.g. ``"rejected"``, ``"not_reached"`` or ``"refused"`` (rejected and duplicate),
        its rows of that decision in rank order, each headed by why)."""
        from curate.report.views import show_rows

        if decision is None:
            return show_rows(self, rows, columns=columns, limit=limit)
        return _decided_rows(self, rows, decision, columns, limit)

    def to_dataset(self, columns: str | list[str] | None = None, selection: str | None = None) -> datasets.Dataset:
        """The pool with derived columns joined on (all by default; one name or a list), optionally only a
        selection's rows: a ``datasets.Dataset``."""
        return super().to_dataset(columns, selection)

    @operation
    def report(self, out: str | os.PathLike = REPORT.path, selection: str | None = None,
               samples: int = REPORT.samples) -> Path:
        """Write the self-contained HTML curation report; ``samples``: rows kept and rows dropped shown. Returns its
        path; ``curate.report.report_view(path)`` shows it in a notebook."""
        from curate.report.html import build_report

        return build_report(self, out, selection=selection, samples=samples)

    @operation
    def _repr_html_(self) -> str:
        from curate.report.views import workspace_html

        if not self.exists:  # a new workspace (a typo?): its repr says so; its info would raise
            import html

            return f"<pre>{html.escape(repr(self))}</pre>"
        return workspace_html(self)


def _decided_rows(ws: Workspace, name: Any, decision: str, columns: str | list[str] | None, limit: int | None):
    """``ws.show(name, decision=...)``: selection ``name``'s rows of ``decision`` (at most ``limit``), each noted with
    its decision and reason in words (``Selection.rows``' ``why``)."""
    from curate.report.views import RowsView
    from curate.storage.columns import column_names

    if not isinstance(name, str) or not ws.has_selection(name):
        raise OptionError(f"show: decision= picks among a selection's rows: give a selection's name as rows, not "
                          f"{name!r} (have {sorted(ws.selections)})")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise OptionError(f"show: limit is a number of rows >= 0 (or None for all), not {limit!r}")
    import pyarrow as pa

    from curate.codes import REFUSED

    sel, in_pool = ws.selection(name), pa.array(ws.ids)  # the rows a refresh removed are not shown (nor counted)
    # "refused", as curate select and the report count it: rejected and duplicate rows together, in rank order
    decisions = sorted(d.value for d in REFUSED) if decision == "refused" else [decision]
    shown = sorted((r for d in decisions for r in sel.rows(decision=d, ids=in_pool, limit=limit)),
                   key=lambda r: r["rank"])[:limit]
    import pyarrow.compute as pc

    present = sel.table.filter(pc.is_in(sel.table["id"], value_set=in_pool))["decision"].to_pylist()
    total = sum(present.count(d) for d in decisions)  # counted as shown: rows still in the pool
    gone = sum(sel.decisions().get(d, 0) for d in decisions) - total
    note = (f"selection {name!r}: {total:,} {decision}" + (f", showing the first {len(shown)}" if len(shown) < total
                                                           else "")
            + (f" ({gone:,} more no longer in the pool)" if gone else ""))
    return RowsView(ws, [r["id"] for r in shown], list(ws.columns) if columns is None else column_names(columns),
                    note=note, notes={r["id"]: f"{r['decision']}: {r['why']}" for r in shown})


def registered_selectors() -> dict[str, Any]:
    """Every selector ``ws.select`` runs, by name: :mod:`curate.select`'s own and those the signals, tags and train
    packages register when imported (imported here: ``curate.select`` imports none of them)."""
    import curate.signals.selectors  # noqa: F401  (registers ifd, perplexity, learnability)
    import curate.tags.sampling  # noqa: F401  (registers the instag selector)
    import curate.train.less  # noqa: F401  (registers less)
    import curate.train.mining  # noqa: F401  (registers mining)
    import curate.train.selectors  # noqa: F401  (registers cartography, el2n, grand)
    from curate.select import SELECTORS

    return SELECTORS
