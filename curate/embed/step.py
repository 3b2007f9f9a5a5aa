"""The embedding step: embed every row's text and store the matrix as a workspace embedding set."""

from __future__ import annotations

from typing import Any

import numpy as np

from curate.defaults import EMBED
from curate.embed.cache import encode_cached
from curate.embed.encoder import model_id, resolve_backend
from curate.embed.vocabulary import unknown_token_share
from curate.errors import KEPT_ON_INTERRUPT, OptionError, python_and_cli
from curate.hardware import resolve_device
from curate.rows import row_text
from curate.storage.files import check_new_name, read_json
from curate.storage.summary import embed_summary

# ``ws`` is a curate.storage.workspace.Workspace: only its public methods are used.
Workspace = Any


def embed(ws: Workspace, model: str | None = None, text: str = EMBED.text, name: str = EMBED.name,
          batch_size: int = EMBED.batch_size, device: str | None = None, progress: bool = True,
          backend: str | None = None) -> dict[str, Any]:
    """Embed every row of the workspace (``curate.rows.row_text``) and store the matrix as embedding set ``name``.

    Vectors are cached under ``ws.cache_dir`` keyed by (model, backend, sha256 of the text): rows whose text
    was embedded before with the same model and backend are never encoded again. ``backend``: torch (default),
    onnx or onnx-int8 (see :mod:`curate.embed.encoder`); None: ``$CURATE_EMBED_BACKEND`` or torch. Returns a
    summary (rows, encoded, ...; ``unchanged``: the same set was stored already, its files left untouched).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a whole number >= 1, not {batch_size!r}")
    if not (ws.path / "embeddings" / f"{name}.json").exists():
        check_new_name(name)  # before the encoding, not once it is done
    mid = model_id(model)
    # A device asked for is checked before the cache is read: a cached set never records a device it cannot use.
    # None is chosen only once a text needs encoding (choosing imports torch: 4-5 s of a re-run whose vectors are
    # all cached), except for the onnx backends, which fall back to torch on a GPU and so need the device first.
    if device is not None or resolve_backend(backend) != "torch":
        device = resolve_device(device)
    backend = resolve_backend(backend, device)
    # The ids stored are the ids of the rows encoded, read from the same pool as their texts: a load meanwhile (a
    # thread sharing ``ws``) made add_embeddings take the new pool's ids, pairing ids with other rows' vectors.
    table = ws.pool.data.table
    ids = table.column("id").to_pylist()
    texts = [row_text(c, text, python_and_cli("text=", "--text")) for c in table.column("conversation").to_pylist()]
    if not texts:
        raise ValueError("the workspace has no rows to embed")
    try:
        matrix, encoded, cache = encode_cached(texts, ws.cache_dir, model=mid, batch_size=batch_size,
                                               progress=progress, device=device, backend=backend)
    except KeyboardInterrupt as interrupt:  # in a notebook: 43 frames of torch, saying nothing of what was kept
        interrupt.add_note(f"curate: ws.embed of {name!r} stopped before storing the set (it is as it was); "
                           f"{KEPT_ON_INTERRUPT}: run the same call again to encode only the rest")
        raise
    if device is None:  # the device the encoder chose; nothing encoded: the one the set's vectors were encoded on
        device = resolve_device(None) if encoded else _cached_device(ws, name, mid, backend, text)
    unknown = unknown_token_share(texts, mid)
    provenance = {"kind": "embeddings", "model": mid, "backend": backend, "text": text, "dim": int(matrix.shape[1]),
                  "normalized": True, "device": device, "encoded": encoded, "cache": str(cache),
                  "unknown_token_share": None if unknown is None else round(unknown, 4)}
    written = ws.add_embeddings(name, matrix, provenance, ids=ids)  # False: the same set is stored already
    return embed_summary({"name": name, "rows": len(texts), "encoded": encoded, "reused": len(texts) - encoded,
                          "model": mid, "backend": backend, "text": text, "device": device, "unchanged": not written,
                          "unknown_token_share": provenance["unknown_token_share"],
                          "warning": vocabulary_warning(unknown, mid)})


def pool_unknown_token_share(ws: Workspace, model: str, text: str = EMBED.text) -> float | None:
    """:func:`~curate.embed.vocabulary.unknown_token_share` of the pool's texts, reading only the rows it samples
    (the same rows, so the same share, as ``embed`` measures over every row's text)."""
    table = ws.pool.data.table
    rows = len(table)
    picks = np.linspace(0, rows - 1, EMBED.vocabulary_sample_texts).astype(np.int64) \
        if rows > EMBED.vocabulary_sample_texts else np.arange(rows)
    texts = [row_text(c, text, python_and_cli("text=", "--text"))
             for c in table.column("conversation").take(picks).to_pylist()]
    return unknown_token_share(texts, model)


def vocabulary_warning(unknown: float | None, model: str) -> str | None:
    """What a run should say when the model's vocabulary misses more than ``EMBED.max_unknown_token_share`` of
    the texts' tokens, else None."""
    if unknown is None or unknown <= EMBED.max_unknown_token_share:
        return None
    return (f"{unknown:.0%} of the texts' tokens are unknown to embedding model {model} (limit "
            f"{EMBED.max_unknown_token_share:.0%}): its vocabulary does not cover their language, so unrelated "
            f"texts embed alike and DEITA admission and semantic dedup drop them as near-duplicates; embed with a "
            f"model that reads it (a local sentence-transformers folder)")


def _cached_device(ws: Workspace, name: str, model: str, backend: str, text: str) -> str | None:
    """The device set ``name`` records when it holds vectors of this model, backend and text, else None (every
    vector came from the cache, and no device was chosen to encode one)."""
    path = ws.path / "embeddings" / f"{name}.json"  # only this set's file (storing the set reads it too)
    meta = read_json(path) if path.exists() else {}
    same = (meta.get("model"), meta.get("backend"), meta.get("text")) == (model, backend, text)
    return meta.get("device") if same else None
