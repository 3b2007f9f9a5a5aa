"""InsTag: open-ended intent tags, their normalisation, diversity/complexity metrics, tag-coverage sampling.

In the order a session uses them:

- :class:`~curate.tags.tagger.Tagger` (a Step): ``ws.apply(Tagger(backend))`` writes ``tags_raw``, each user
  turn's intent tags from an LLM judge (prompt ``prompts/instag.md``), and ``tags_raw_failure``.
- :func:`~curate.tags.normalize_step.normalize`: fits a :class:`Normalizer` on ``tags_raw``, stores the mapping as
  the workspace artifact ``instag_mapping`` and writes ``tags`` (each row's canonical tags).
- Metrics (:mod:`curate.tags.metrics`): coverage, tags per query, tag frequency, coverage vs random.
- Sampling (:mod:`curate.tags.sampling`): complexity-first diverse sampling, ``ws.select(method="instag")``.
- :class:`TagClassifier` (:mod:`curate.tags.classifier`): a small tagger over sentence embeddings, so a large
  pool can be tagged without LLM calls once a sample has LLM tags.
"""

from curate.tags.classifier import TagClassifier, predict_tags, tagger_agreement, train_tagger
from curate.tags.metrics import (
           all_tags,
           coverage,
           coverage_report,
           random_coverage,
           tag_frequency,
           tagged_positions,
           tagged_rows,
           tags_per_query,
)
from curate.tags.normalize import Normalizer, scaled_threshold
from curate.tags.normalize_step import NormalizeStep, normalize, row_tags
from curate.tags.tagger import IntentTag, IntentTags, Tagger

__all__ = ["IntentTag", "IntentTags", "NormalizeStep", "Normalizer", "TagClassifier", "Tagger", "all_tags", "coverage",
           "coverage_report", "normalize", "predict_tags", "random_coverage", "row_tags", "scaled_threshold",
           "tag_frequency", "tagged_positions", "tagged_rows",
           "tagger_agreement", "tags_per_query", "train_tagger"]
