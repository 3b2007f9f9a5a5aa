"""The workspace side of InsTag normalisation: :func:`normalize` fits a :class:`~curate.tags.normalize.Normalizer` on a
workspace's ``tags_raw``, stores the mapping as the artifact ``instag_mapping`` and applies :class:`NormalizeStep`,
which writes column ``tags``: each row's canonical tags, the union over its turns."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from curate.codes import Failure, FailureCode
from curate.errors import WorkspaceError
from curate.storage.apply import drop_stale_rows
from curate.storage.step import RowInput, StepContext, StepOutput
from curate.tags.normalize import MAPPING_ARTIFACT, Normalizer
from curate.tags.tagger import dedupe


# -- the workspace: raw per-turn tags in, row-level canonical tags out --------------------------------
def row_tags(turn_tags: Sequence[Sequence[str] | None] | None) -> list[str] | None:
    """A row's raw tags, the union over its turns (first-seen order); None when any turn has none."""
    if turn_tags is None or any(t is None for t in turn_tags):
        return None
    return dedupe(tag for turn in turn_tags for tag in turn)  # type: ignore[union-attr]


class NormalizeStep:
    """A fitted :class:`Normalizer` as a row Step: ``tags`` = the canonical tags of a row's raw tags."""

    granularity = "row"
    reducer = None

    def __init__(self, normalizer: Normalizer, *, source: str = "tags_raw", column: str = "tags",
                 mapping_artifact: str = MAPPING_ARTIFACT):
        self.normalizer = normalizer
        self.source = source
        self.column = column
        self.mapping_artifact = mapping_artifact
        self.inputs = (source,)

    def fingerprint(self) -> str:
        blob = json.dumps({"source": self.source, "mapping": self.normalizer.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def check_column(self, ws: Any) -> None:
        """Refuse to write over a pool field or a column another producer wrote: only normalised tags' own."""
        from curate.storage.step import check_column_owner

        check_column_owner(ws, self.column, "the tag normaliser", lambda prov: prov.get("kind") == "instag_normalized")

    def describe(self) -> dict[str, Any]:
        norm = self.normalizer
        return {"kind": "instag_normalized", "source": self.source, "mapping_artifact": self.mapping_artifact,
                "params": norm.params, "steps": [asdict(s) for s in norm.report],
                "canonical_tags": len(norm.vocabulary)}

    def run(self, rows: Sequence[RowInput], ctx: StepContext) -> StepOutput:
        values: list[list[str] | None] = []
        failures: list[list[Failure]] = []
        dropped: Counter = Counter()
        for row in rows:
            raw = row_tags(row.columns[self.source])
            if raw is None:
                values.append(None)
                failures.append([Failure(FailureCode.EMPTY_INPUT, f"no raw tags in {self.source!r} (not tagged, "
                                         f"or a turn's tagging failed: see {self.source}_failure)")])
            else:
                dropped.update(t for t in raw if self.normalizer._canon(t) is None)
                values.append(self.normalizer.transform([raw])[0])
                failures.append([])
        ctx.progress.update(len(rows))
        # Raw tags that map to nothing (rare ones the frequency filter removed, or unseen with refit=False) are
        # left out of the column; the provenance says how much was dropped.
        return StepOutput(values, failures, stats={"dropped_tag_occurrences": sum(dropped.values()),
                                                   "dropped_distinct_tags": len(dropped)})


def normalize(ws: Any, normalizer: Normalizer | None = None, *, source: str = "tags_raw", column: str = "tags",
              refit: bool = True, mapping_artifact: str = MAPPING_ARTIFACT, progress: bool = False) -> Normalizer:
    """Fit ``normalizer`` (default: :class:`Normalizer` with the defaults) on column ``source`` unless
    ``refit=False`` (then the given normalizer, or the stored mapping, is applied as it is); store the mapping
    as artifact ``mapping_artifact``; write column ``column`` (recomputed for every row the tagger was asked about:
    a row never tagged, e.g. a duplicate ``curate run`` left out, gets no failure either)."""
    if normalizer is None:
        normalizer = Normalizer() if refit else Normalizer.from_workspace(ws, mapping_artifact)
    if not ws.has_column(source):  # a pool field of that name is no tagger's output (its turns, failures, model)
        field = "; the pool field of that name is not read as one" if ws.has_pool and source in ws.pool.column_names \
            else ""
        raise WorkspaceError(f"{ws.path}: no derived column {source!r} to normalise: tag the pool first (curate tag, "
                             f"ws.apply(Tagger(backend))){field}")
    step = NormalizeStep(normalizer, source=source, column=column, mapping_artifact=mapping_artifact)
    step.check_column(ws)  # before the mapping is stored
    if refit:
        normalizer.fit([row_tags(v) for v in ws.turn_values(source)])
    ws.add_artifact(mapping_artifact, normalizer.to_dict())
    asked = ws.column_fingerprints(source)  # rows tagged or failed, not those never asked for
    ids = [rid for rid in ws.ids if rid in asked]
    drop_stale_rows(ws, step, ids)  # a row whose raw tags a re-run removed keeps no tags normalised from them
    ws.apply(step, ids, force=True, progress=progress)
    return normalizer
