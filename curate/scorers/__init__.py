"""Trained small scorers: imitate an expensive LLM judge with MiniLM embeddings and a linear head.

- :mod:`~curate.scorers.model`: :class:`Scorer` (fit / predict / save / load; a Step: ``ws.apply(scorer)``
  scores every turn, reducer ``sum``);
- :mod:`~curate.scorers.features`: the texts of a turn a scorer reads, and the features made of them;
- :mod:`~curate.scorers.head`: the linear head (ridge, or ordinal: the expected label), stored as arrays;
- :mod:`~curate.scorers.metrics`: agreement metrics (Spearman, Kendall, MAE, pairwise accuracy) and the length baseline;
- :mod:`~curate.scorers.evaluation`: K-fold and held-out evaluation beside baselines;
- :mod:`~curate.scorers.training_data`: training data from a label set (Evol) or a judge column;
- :mod:`~curate.scorers.training`: a training run (agreement beside baselines, then the fitted scorer);
- :mod:`~curate.scorers.distil`: the distillation loop (label a sample, train, label where unsure);
- :mod:`~curate.scorers.finetuned`: the ``cross-encoder`` kind (MiniLM + LoRA, :mod:`~curate.scorers.crossencoder`);
- :mod:`~curate.scorers.smalllm`: the ``small-lm`` kind (SmolLM2 + LoRA; a score head or DEITA's digits head);
- :mod:`~curate.scorers.constraints`: same-task constraint chains (complexity pairs ordered by construction);
- :mod:`~curate.scorers.defaults`: the shipped defaults (``weights/``), loaded with :func:`load_default`.
"""

from __future__ import annotations

from curate.errors import ScorerError
from curate.scorers.defaults import DEFAULT_SCORERS, WEIGHTS_DIR, default_path
from curate.scorers.distil import DistilReport, column_labeller, distil
from curate.scorers.evaluation import Evaluation, evaluate_features, train_and_evaluate
from curate.scorers.features import input_texts, text_stats
from curate.scorers.finetuned import CrossEncoderScorer
from curate.scorers.metrics import agreement, calibration, pairwise_accuracy
from curate.scorers.model import Scorer
from curate.scorers.smalllm import SmallLMScorer
from curate.scorers.training import TrainResult, train_scorer
from curate.scorers.training_data import TrainingData, column_judge, from_column, from_label_set


def load_default(name: str) -> Scorer:
    """A shipped default scorer (``complexity`` or ``quality``), on DEITA's 1-6 scale."""
    return Scorer.load(default_path(name))


__all__ = ["CrossEncoderScorer", "DEFAULT_SCORERS", "WEIGHTS_DIR", "DistilReport", "Evaluation", "Scorer", "ScorerError", "SmallLMScorer",
           "TrainResult",
           "TrainingData", "agreement", "calibration", "column_judge", "column_labeller", "distil", "evaluate_features",
           "from_column", "from_label_set", "input_texts", "load_default", "pairwise_accuracy", "text_stats",
           "train_and_evaluate", "train_scorer"]
