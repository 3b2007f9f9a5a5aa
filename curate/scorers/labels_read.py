"""Which labels a trained scorer learnt, as they were: recorded when ``train_scorer`` fits it (its ``scorer.json``
``metadata.labels_read``), so a later ``curate score --scorer`` in the same workspace says when the judge column or
label set has changed since (re-judged, more rows labelled): the scorer still imitates the labels it learnt."""

from __future__ import annotations

import hashlib
import json
from typing import Any

RECORD = "labels_read"  # the scorer metadata key


def labels_record(ws: Any, *, target: str | None = None, labels: str | None = None) -> dict[str, Any]:
    """What a scorer trained on column ``target`` and/or label set ``labels`` of ``ws`` learnt from: the workspace
    (its creation time: a copy or another workspace is not compared), the names and a hash of their values now."""
    return {"workspace_created": ws.manifest.get("created"), "target": target, "labels": labels,
            "fingerprint": _labels_fingerprint(ws, target, labels)}


def _labels_fingerprint(ws: Any, target: str | None, labels: str | None) -> str:
    """A hash of the labels: the rows of column ``target`` that hold a value (by id, in id order: rows loaded or
    reordered since, with no label, change nothing) and the records of label set ``labels``."""
    h = hashlib.sha256()
    if target is not None:
        held = sorted((rid, turns) for rid, turns in zip(ws.ids, ws.turn_values(target), strict=True)
                      if turns is not None and any(v is not None for v in turns))
        h.update(json.dumps(held, default=str).encode())
    if labels is not None:
        h.update(json.dumps([dict(r) for r in ws.labels(labels)], default=str, sort_keys=True).encode())
    return "sha256:" + h.hexdigest()[:32]


def labels_changed(ws: Any, metadata: dict[str, Any]) -> str | None:
    """A line saying the labels a scorer learnt (``metadata[RECORD]``) have changed in ``ws`` since, or None: when
    they have not, when ``ws`` is another workspace, when they are gone, or for a scorer trained before the record."""
    record = metadata.get(RECORD)
    if not isinstance(record, dict) or record.get("workspace_created") != ws.manifest.get("created"):
        return None
    target, labels = record.get("target"), record.get("labels")
    present = (target is None or ws.has_column(target) or (ws.has_pool and target in ws.pool.column_names)) and \
        (labels is None or labels in ws.label_sets)
    if not present or _labels_fingerprint(ws, target, labels) == record.get("fingerprint"):
        return None
    what = " and ".join(f"{kind} {name!r}" for kind, name in (("column", target), ("label set", labels)) if name)
    return (f"{what} changed since this scorer learnt it (re-judged or relabelled): it imitates the labels as they "
            "were; train it again (curate train-scorer) to learn them as they are")
