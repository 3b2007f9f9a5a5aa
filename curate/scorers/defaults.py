"""The shipped default scorers: heads trained on real GPT-4 labels (``evals/train_default_scorers.py``).

``weights/<name>/`` holds ``scorer.json`` and ``head.safetensors`` (a few KB; never the training data).
Both map their judge's scale onto DEITA's 1-6 scale, so ``complexity * quality`` is DEITA's evol score.
"""

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
