"""Defaults of lLM calls: backends, batch APIs, judges, InsTag tagging, Evol labels."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendDefaults:
    concurrency: int = 16            # requests in flight at once
    timeout_s: float = 60.0          # per request, its first attempt; a retry after a timeout waits longer:
    timeout_growth: float = 2.0      # this many times the attempt before (60, 120, 240, 480, 480 s ...), up to
    timeout_max_factor: float = 8.0  # this many times timeout_s; a retry after a 429 / 5xx keeps its timeout
    max_retries: int = 6             # 429 / 5xx / timeouts / malformed bodies
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 300.0  # a server's Retry-After is obeyed up to this; a longer one fails the request
    unreachable_after: int = 3       # connection errors, before the server ever answered, after which a run sends no
                                     # more (a wrong --base-url or a server not started); one that answered is retried
    top_logprobs: int = 20           # digit scores read the first token's top logprobs
    worst_case_max_tokens: int = 1024  # reply length assumed when a request sets no max_tokens (cost cap, TPM)
    api_key_env: str = "OPENAI_API_KEY"  # the environment variable holding the API key
    local_max_model_len: int = 2048  # the packaged SmolLM2's vLLM context (prompt + reply tokens); a longer
                                     # request fails context_too_long
    local_startup_timeout_s: float = 240.0  # the packaged server's start-up (about a minute on 2 cores), then an error
    server_stop_grace_s: float = 20.0  # a vLLM process group (server, batch runner) stopped: SIGTERM, this long, SIGKILL
    guard_poll_s: float = 1.0        # how often a vLLM group's watchdog looks whether the curate process that started
                                     # it still runs (and stops the group within about this long of its death)
    guard_start_timeout_s: float = 30.0  # a watchdog says it watches within this long (about 0.2 s), or the group
                                         # is stopped and the launch fails naming the log
    cancel_wait_s: float = 60.0      # a Ctrl-C (Jupyter's stop button) of a call run on a worker loop: this long for the
                                     # call to stop (a local server's stop included) before the interrupt returns anyway
    sending_claim_expiry_s: float = 120.0  # a request another process of this machine claims to send (response cache)
                                     # is waited for while its claim is refreshed (4x this often while in flight); one
                                     # left unrefreshed this long (a sender stopped, or gone on without releasing it)
                                     # is taken over


@dataclass(frozen=True)
class BatchDefaults:
    """Batch APIs (``--backend openai-batch``): OpenAI's per-batch limits, polling, resubmission."""
    max_requests: int = 50_000       # requests per batch (OpenAI's limit)
    max_bytes: int = 200 * 1024 * 1024  # bytes of the input JSONL per batch (OpenAI's limit)
    completion_window: str = "24h"
    poll_s: float = 15.0             # first wait between status polls
    poll_max_s: float = 300.0        # polls back off (x1.5 each) up to this
    resubmits: int = 3               # times an expired / failed share of a batch is resubmitted alone
    claim_expiry_s: float = 600.0    # a submission or collect claimed by a run of another machine (a workspace shared
                                     # over NFS: its PID means nothing here) whose heartbeat has not changed for this
                                     # long, by the waiting run's own clock, is taken over; a live run beats 4x as often
    beat_retries: int = 3            # a failed heartbeat write is tried again this many times, a short pause apart
    beat_stop_wait_s: float = 1.0    # a call's end waits this long at most for its heartbeat thread (a beat blocked on
                                     # the workspace lock ends on its own: a daemon thread, beating no more)


@dataclass(frozen=True)
class JudgeDefaults:
    min_digit_mass: float = 0.5      # below this share of probability on the scale's digits a score fails
    validation_retries: int = 2      # re-asks for structured (JSON) output
    retry_failed: bool = True        # a re-run sends again rows whose last failure was transient (429, 5xx, timeout,
                                     # max_cost reached); ws.apply, ws.score, curate run/score/tag, the requests of
                                     # curate evol / build_labels / run_evol, and dry runs alike
    rows_per_call: int = 10_000      # rows an LLM step (judge, tagger) is given at a time by ws.apply, except on a
                                     # batch backend (each run a submission): requests and answers in memory at once


@dataclass(frozen=True)
class TagDefaults:
    """InsTag tagging (``Tagger`` / ``curate tag``) and its coverage report (``curate tags``)."""
    prompt: str = "instag"               # prompts/instag.md
    coverage_seeds: int = 10             # random selections each selection's coverage is compared against
    top: int = 25                        # rows of ``curate tags``' frequency table


@dataclass(frozen=True)
class NormalizerDefaults:
    """InsTag's normalisation at the paper's 10K-row reference size (scaled down below it)."""
    min_frequency: int = 20
    reference_rows: int = 10_000
    eps: float = 0.05                # DBSCAN, cosine distance
    min_support: int = 40            # FP-Growth, rows
    min_confidence: float = 0.99
    stemmer_language: str = "english"  # Snowball's, for rule aggregation (one language a pool)
    mapping_artifact: str = "instag_mapping"  # the workspace artifact the fitted mapping is stored as


@dataclass(frozen=True)
class EvolDefaults:
    """Evol labels (``run_evol`` / ``curate evol``)."""
    kind: str = "complexity"             # complexity: evolve instructions; quality: rewrite responses
    seeds: int = 20                      # seed rows (``curate evol --seeds``): a seeded random sample of the pool
    steps: int = 5                       # evolution steps per seed (scores run 1..steps+1)
    seed: int = 0                        # the seed sample, the operation choice and the shuffles


BACKEND = BackendDefaults()
BATCH = BatchDefaults()
JUDGE = JudgeDefaults()
TAG = TagDefaults()
NORMALIZER = NormalizerDefaults()
EVOL = EvolDefaults()
