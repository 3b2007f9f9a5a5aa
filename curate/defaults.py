"""Every default in one place: the API's keyword defaults and the CLI's options both read these.

Frozen dataclasses, one per concept; change a default here and every entry point follows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendDefaults:
    concurrency: int = 16            # requests in flight at once
    timeout_s: float = 60.0          # per request
    max_retries: int = 6             # 429 / 5xx / timeouts / malformed bodies
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    top_logprobs: int = 20           # digit scores read the first token's top logprobs
    worst_case_max_tokens: int = 1024  # reply length assumed when a request sets no max_tokens (cost cap, TPM)


@dataclass(frozen=True)
class JudgeDefaults:
    min_digit_mass: float = 0.5      # below this share of probability on the scale's digits a score fails
    validation_retries: int = 2      # re-asks for structured (JSON) output


@dataclass(frozen=True)
class EmbedDefaults:
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = 64
    text: str = "instruction"        # instruction | conversation | response
    name: str = "default"


@dataclass(frozen=True)
class DeitaDefaults:
    max_cosine_similarity: float = 0.9   # admit a row iff its cosine to every admitted row is <= this
    sort_by: str = "complexity*quality"  # evaluated per turn, reduced by the columns' reducer (sum: DEITA)
    semantic_duplicate_similarity: float = 0.95  # semantic dedup: a duplicate above this


@dataclass(frozen=True)
class NormalizerDefaults:
    """InsTag's normalisation at the paper's 10K-row reference size (scaled down below it)."""
    min_frequency: int = 20
    reference_rows: int = 10_000
    eps: float = 0.05                # DBSCAN, cosine distance
    min_support: int = 40            # FP-Growth, rows
    min_confidence: float = 0.99


BACKEND = BackendDefaults()
JUDGE = JudgeDefaults()
EMBED = EmbedDefaults()
DEITA = DeitaDefaults()
NORMALIZER = NormalizerDefaults()
