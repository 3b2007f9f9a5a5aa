"""The embedding step: embed every row's text and store the matrix as a workspace embedding set."""

from __future__ import annotations

from typing import Any

from curate.defaults import EMBED
from curate.embed.cache import encode_cached
from curate.embed.encoder import auto_device, model_id
from curate.rows import row_text

# ``ws`` is a curate.storage.workspace.Workspace: only its public methods are used.
Workspace = Any


def embed(ws: Workspace, model: str | None = None, text: str = EMBED.text, name: str = EMBED.name,
          batch_size: int = EMBED.batch_size, device: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Embed every row of the workspace (``curate.rows.row_text``) and store the matrix as embedding set ``name``.

    Vectors are cached under ``ws.cache_dir`` keyed by (model, sha256 of the text): rows whose text was
    embedded before with the same model are never encoded again. Returns a summary (rows, encoded, ...).
    """
    mid = model_id(model)
    device = device or auto_device()
    texts = [row_text(c, text) for c in ws.conversations()]
    if not texts:
        raise ValueError("the workspace has no rows to embed")
    matrix, encoded, cache = encode_cached(texts, ws.cache_dir, model=mid, batch_size=batch_size,
                                           progress=progress, device=device)
    provenance = {"kind": "embeddings", "model": mid, "text": text, "dim": int(matrix.shape[1]),
                  "normalized": True, "device": device, "encoded": encoded, "cache": str(cache)}
    ws.add_embeddings(name, matrix, provenance)
    return {"name": name, "rows": len(texts), "encoded": encoded, "reused": len(texts) - encoded,
            "model": mid, "text": text, "device": device}
