"""Evol: Evol-Instruct / Evol-Quality variant chains and rank-and-score labels (DEITA §1).

- :mod:`curate.evol.rules`: operations, elimination rules, seeded choices, shuffle/unshuffle, score checks.
- :mod:`curate.evol.run`: :func:`run_evol` (chains, eliminations, rank calls) and :func:`sample_seeds`.
- :mod:`curate.evol.labels`: :func:`build_labels` / :func:`save_labels` store a run as a workspace label set
  (``ws.labels(name)`` reads it back).
"""

from curate.evol.labels import build_labels, label_set_name, save_labels
from curate.evol.rules import (
    DEFAULT_RULES,
    IN_DEPTH_OPERATIONS,
    INSTRUCTION_OPERATIONS,
    KINDS,
    RESPONSE_OPERATIONS,
    Elimination,
    EliminationRules,
    RankFailure,
    VariantScores,
    check_scores,
    choose_operation,
    derive_seed,
    elimination_reason,
    rank_model,
    shuffle,
    shuffle_order,
    unshuffle,
)
from curate.evol.run import EvolRun, Variant, VariantSet, run_evol, sample_seeds

__all__ = ["DEFAULT_RULES", "IN_DEPTH_OPERATIONS", "INSTRUCTION_OPERATIONS", "KINDS", "RESPONSE_OPERATIONS",
           "Elimination", "EliminationRules", "EvolRun", "RankFailure", "Variant", "VariantScores", "VariantSet",
           "build_labels", "check_scores", "choose_operation", "derive_seed", "elimination_reason",
           "label_set_name", "rank_model", "run_evol", "sample_seeds", "save_labels", "shuffle", "shuffle_order",
           "unshuffle"]
