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
class BatchDefaults:
    """Batch APIs (``--backend openai-batch``): OpenAI's per-batch limits, polling, resubmission."""
    max_requests: int = 50_000       # requests per batch (OpenAI's limit)
    max_bytes: int = 200 * 1024 * 1024  # bytes of the input JSONL per batch (OpenAI's limit)
    completion_window: str = "24h"
    poll_s: float = 15.0             # first wait between status polls
    poll_max_s: float = 300.0        # polls back off (x1.5 each) up to this
    resubmits: int = 3               # times an expired / failed share of a batch is resubmitted alone


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


@dataclass(frozen=True)
class SignalDefaults:
    """Token-level model signals (perplexity, IFD, learnability) from a small causal LM."""
    max_length: int = 1024           # context + response tokens per scored turn; longer turns are truncated
    batch_tokens: int = 8192         # padded tokens per forward pass on the CPU (length-bucketed batches)
    max_batch: int = 32              # sequences per forward pass on the CPU
    batch_tokens_cuda: int = 65536   # the same on a CUDA device
    max_batch_cuda: int = 256
    ifd_max: float = 1.0             # IFD >= this: the instruction does not help (Cherry LLM drops these)
    perplexity_band: tuple[float, float] = (0.1, 0.9)  # quantiles of the band the perplexity selector keeps
    lora_steps: int = 200            # learnability: LoRA steps of the reference model (LoBaSS: brief tuning)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_lr: float = 1e-3
    lora_batch: int = 8              # turns per LoRA step
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0


BACKEND = BackendDefaults()
BATCH = BatchDefaults()
JUDGE = JudgeDefaults()
EMBED = EmbedDefaults()
DEITA = DeitaDefaults()
NORMALIZER = NormalizerDefaults()
SIGNAL = SignalDefaults()
