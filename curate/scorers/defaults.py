"""The shipped default scorers, trained on real GPT-4 labels.

``weights/quality/``: a ridge head on MiniLM features (``head.safetensors``; ``evals/train_default_scorers.py``).
``weights/complexity/``: a MiniLM cross-encoder, LoRA adapter + head (``adapter.safetensors``, < 1 MiB;
``evals/train_scorers_gpu.py``, shipped with ``evals/ship_gpu_scorer.py``). Beside them: ``quality_ce`` (the
cross-encoder kind for quality) and ``complexity_ridge`` (the fast ridge baseline). Both defaults map their
judge's scale onto DEITA's 1-6 scale, so ``complexity * quality`` is DEITA's evol score."""

from __future__ import annotations

from pathlib import Path

from curate.errors import ScorerError

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_SCORERS = ("complexity", "quality")


def default_path(name: str) -> Path:
    """The folder of a shipped default scorer."""
    if name not in DEFAULT_SCORERS:
        raise ScorerError(f"no default scorer {name!r}; shipped: {list(DEFAULT_SCORERS)}")
    return WEIGHTS_DIR / name
