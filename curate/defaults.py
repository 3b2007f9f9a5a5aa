"""Every default in one place (the API's keyword defaults and the CLI's options both read these): frozen
dataclasses, one per concept; change a default here and every entry point follows."""

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
class EmbedDefaults:
    model: str = "all-MiniLM-L6-v2"
    batch_size: int = 64             # rows per forward pass at most
    batch_tokens: int = 1024         # padded tokens per forward pass on the CPU (curate.embed.batching)
    text: str = "instruction"        # instruction | conversation | response
    name: str = "default"
    backend: str = "torch"           # torch | onnx | onnx-int8 (curate.embed.encoder; evals/bench_embed.py)
    rows_per_call: int = 20_000      # rows a scorer step is given at a time by ws.apply (inputs in memory at once)
    # The embedding step warns when more of the texts' tokens than this are the model's unknown token (the packaged
    # MiniLM's English vocabulary: audit pool, instructions in zh 0.73, ja 0.25, hi 0.08; en 0.00-0.04)
    max_unknown_token_share: float = 0.05
    vocabulary_sample_texts: int = 2000  # texts (evenly spaced over the pool) that share is measured on


@dataclass(frozen=True)
class DeitaDefaults:
    max_cosine_similarity: float = 0.9   # admit a row iff its cosine to every admitted row is <= this
    sort_by: str = "complexity*quality"  # evaluated per turn, reduced by the columns' reducer (sum: DEITA)
    semantic_duplicate_similarity: float = 0.95  # semantic dedup: a duplicate above this
    block_size: int = 4096               # admission: the largest block (blocks are sized to the budget)
    score_scale: tuple[float, float] = (1.0, 6.0)  # the scale complexity and quality land on (trained scorers too)
    sample_budget: int = 20              # rows `curate run` selects from the bundled sample (51 rows) without --budget;
                                         # any other pool needs --budget (run_pipeline always takes one)


@dataclass(frozen=True)
class AnnDefaults:
    """hnswlib graphs: semantic dedup at scale (``index="hnsw"``) and the report's nearest kept neighbours."""

    ef: int = 64                     # query beam: recall 0.9988 on 100K clustered rows (evals/bench_dedup.py)
    m: int = 16                      # graph degree
    ef_construction: int = 100       # build beam
    neighbours: int = 3              # nearest kept rows shown per rejected row in the report
    check_rows: int = 1000           # hnsw dedup: kept rows checked exactly for missed duplicates (select.ann_check)


@dataclass(frozen=True)
class SelectDefaults:
    """Seeded selectors (``random``, ``kcenter`` without ``sort_by``, ``kmeans``, ``dsir``, ``semantic``), the
    selector ``ws.select`` and ``curate select`` run when none is named, and MoDS necessity's bar as ``curate train
    model``'s next steps write it (README's MoDS section writes the same: tests/test_mods_hint.py)."""

    method: str = "deita"
    seed: int = 0                    # their draws, over the candidates in row-id order (the same rows, the same draw)
    mods_max_answer_score: float = 3.5  # DEITA's 1-6 quality: an answer below halfway of acceptable (3) and good (4)


@dataclass(frozen=True)
class KMeansDefaults:
    """K-means of the ``kmeans`` selector and of semantic dedup's default index (:mod:`curate.select.clusters`)."""

    max_iter: int = 300              # Lloyd iterations at most (scikit-learn's default)
    init_rows: int = 50_000          # k-means++ seeds from at most this many rows, sampled (all of a smaller pool)


@dataclass(frozen=True)
class DecontaminateDefaults:
    """Benchmark decontamination (``decontaminate`` selector): GPT-3's and NeMo Curator's word-run test."""

    ngram: int = 13                  # a shared run of this many consecutive words marks a row contaminated
    min_words: int = 8               # a shorter target is matched whole from this many words (NeMo Curator: 8)
    min_overlap: float = 0.0         # share of a target's runs a row must hold (0: any one run, as GPT-3 and NeMo)
    max_cosine_similarity: float = 0.95  # curate run also drops a row this close (MiniLM) to an evaluation text


@dataclass(frozen=True)
class MinHashDefaults:
    """Near-duplicate text (``minhash`` selector, ``curate run --minhash``): MinHash LSH over word shingles."""

    threshold: float = 0.8           # estimated Jaccard of the word shingles at which a row is a near-duplicate
    text: str = "conversation"       # the text compared: instruction | conversation | response
    shingle: int = 3                 # words per shingle (characters in Chinese, Japanese, Thai...)
    num_perm: int = 128              # hash functions per signature
    # The LSH band layout's weight on false positives against missed pairs (datasketch's optimiser; its default
    # 0.5 finds a pair at Jaccard 0.8 40% of the time, 0.85 69%). Every candidate is checked against threshold,
    # so a false positive costs one signature comparison: at 0.05 the bands find 95% and 99.4%.
    false_positive_weight: float = 0.05
    seed: int = 1                    # the hash functions' seed: the single-process and Ray engines must share it,
                                     # or they would keep different rows of one pool


@dataclass(frozen=True)
class HeuristicDefaults:
    """Rule-based filters (``heuristics`` selector): each limit switches its rule off at ``None``/``False``/``0``."""

    empty_response: bool = True             # a reply of only whitespace, or no reply at all
    keep_instruction_only: bool = False     # with empty_response: a row with no assistant turn at all passes
    refusal: bool = True                    # a reply that declines the task
    ai_disclaimer: bool = True              # a reply that opens "As an AI language model..."
    max_repeated_tail_words: int | None = 50  # a reply ending in a loop longer than this (generation never stopped)
    unclosed_code_fence: bool = True        # a reply cut off inside a fenced code block
    template_tokens: bool = True            # a reply holding a chat template's marker ([/INST], <|im_end|>...)
    mojibake: bool = True                   # text decoded in the wrong encoding (ftfy can decode it back)
    min_language_probability: float = 0.9   # with languages=[...]: how sure lid.176 must be of another language


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
class SignalDefaults:
    """Token-level model signals (perplexity, IFD, learnability) from a small causal LM."""
    max_length: int = 1024           # context + response tokens per scored turn; longer turns are truncated
    # signals are measurements, and Cherry LLM's reference code computes IFD in float32: in bfloat16 a turn's
    # IFD moves by up to ~15% and with the rows that share its batch (evals/bench_signal_dtype.py: 1.5e-1 vs
    # 2.9e-6); "auto" (bf16 where the hardware has it) is ~5x faster on pool rows on an AMX CPU (rank agreement
    # with float32 0.995, evals/bench_signals.py --dtype both): for when speed matters more than the digits
    dtype: str = "float32"
    batch_tokens: int = 8192         # padded tokens per forward pass on the CPU (length-bucketed batches)
    max_batch: int = 32              # sequences per forward pass on the CPU
    batch_tokens_cuda: int = 65536   # the same on a CUDA device
    max_batch_cuda: int = 256
    ifd_max: float = 1.0             # IFD >= this: the instruction does not help (Cherry LLM drops these)
    rows_per_call: int = 5_000       # rows a signal step is given at a time by ws.apply (token ids in memory at once)
    perplexity_band: tuple[float, float] = (0.1, 0.9)  # quantiles of the band the perplexity selector keeps
    lora_steps: int = 200            # learnability: LoRA steps of the reference model (LoBaSS: brief tuning)
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_lr: float = 1e-3
    lora_batch: int = 8              # turns per LoRA step
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    seed: int = 0


@dataclass(frozen=True)
class ScorerDefaults:
    """Trained scorers (curate.scorers): the fine-tuned kinds (cross-encoder, small-lm)."""
    finetune_epochs: float = 2.0         # passes over the training labels
    finetune_lr: float = 3e-4            # the cross-encoder's encoder learning rate
    ridge_alpha: float = 10.0            # the ridge head's L2 penalty (features standardised first)
    ordinal_C: float = 1.0               # the ordinal head's inverse regularisation (scikit-learn's C)
    embedding_weight: float = 1.0        # the embedding block's scale beside the text statistics
    finetune_batch_size: int = 16        # the fine-tuned kinds: rows per optimizer step
    finetune_head_lr: float = 3e-3       # the fine-tuned kinds' head (and length covariate) learning rate
    finetune_weight_decay: float = 0.01  # AdamW's, for the encoder's adapters and the head
    lora_rank: int = 8                   # the fine-tuned kinds' LoRA rank (alpha: twice the rank)
    lora_dropout: float = 0.1
    predict_batch_size: int = 32         # the fine-tuned kinds: rows per forward pass when predicting


@dataclass(frozen=True)
class TrainScorerDefaults:
    """``train_scorer`` / ``curate train-scorer``: the K-fold and held-out split, and the kind of scorer."""
    folds: int = 5                       # K of the K-fold agreement on the training part
    holdout: float = 0.2                 # share of groups held out before any fitting
    seed: int = 0                        # the splits
    kind: str = "ridge"                  # ridge | cross-encoder | small-lm


@dataclass(frozen=True)
class DistilDefaults:
    """``distil`` / ``curate distil``: how many rows the labeller is asked about, and when."""
    n: int = 200                         # random rows labelled before the first fit
    rounds: int = 1                      # rounds of labelling the least-certain rows
    uncertain_k: int = 50                # rows labelled per round (largest bootstrap disagreement)
    holdout_n: int = 100                 # random labelled rows kept out of training, for agreement
    column_suffix: str = "_distilled"    # the scorer's column: LABEL_COLUMN + this


@dataclass(frozen=True)
class EvolDefaults:
    """Evol labels (``run_evol`` / ``curate evol``)."""
    kind: str = "complexity"             # complexity: evolve instructions; quality: rewrite responses
    seeds: int = 20                      # seed rows (``curate evol --seeds``): a seeded random sample of the pool
    steps: int = 5                       # evolution steps per seed (scores run 1..steps+1)
    seed: int = 0                        # the seed sample, the operation choice and the shuffles


@dataclass(frozen=True)
class TagDefaults:
    """InsTag tagging (``Tagger`` / ``curate tag``) and its coverage report (``curate tags``)."""
    prompt: str = "instag"               # prompts/instag.md
    coverage_seeds: int = 10             # random selections each selection's coverage is compared against
    top: int = 25                        # rows of ``curate tags``' frequency table


@dataclass(frozen=True)
class ReportDefaults:
    """The HTML curation report (``ws.report`` / ``curate report`` / ``curate run``)."""
    path: str = "report.html"            # the file written (in ``curate run``: OUT/this)
    samples: int = 3                     # rows kept and rows dropped shown


@dataclass(frozen=True)
class PoolDefaults:
    """Reading a pool (``curate.pools``, ``ws.load``, ``curate load``)."""
    format: str = "auto"                 # the source's record shape, read per record
    on_error: str = "raise"              # a bad record stops the read (skip: leave it out, listed in rejects.jsonl)
    max_field_chars: int = 1_000_000     # a text field longer than this is a bad record, not a row


@dataclass(frozen=True)
class WorkspaceDefaults:
    """Sharing a workspace between processes and threads (``curate.storage``)."""
    lock_notice_s: float = 1.5           # a wait for the workspace lock longer than this is logged once, naming the
                                         # holder (pid, command); a shorter one is the ordinary turn-taking of writes


@dataclass(frozen=True)
class ProgressDefaults:
    """Progress bars (``curate.storage.progress``)."""
    log_interval_s: float = 30.0         # where stderr is no terminal (a log file, a container's log): one
                                         # newline-ended progress line at most this often, plus the last one
    env: str = "CURATE_PROGRESS"         # set to 0: no progress bars at all (CLI and API), e.g. in a pipeline


@dataclass(frozen=True)
class ScaleDefaults:
    """The Ray engine's inference passes (``curate.scale``, ``--engine ray``)."""
    batch_rows: int = 512                # rows per actor call at most: large pools keep the encoder's throughput (it
                                         # batches them by EMBED.batch_size)
    signal_batch_rows: int = 64          # the same in a pass computing token signals (a causal LM per row: 512 rows
                                         # were 4-8 minutes of SmolLM2 on 2 CPU cores, all lost to a kill)
    calls_per_actor: int = 4             # a pass is split into at least this many calls per actor (below the above):
                                         # a small pool's rows come back call by call (Ray Data hands an actor a
                                         # block, a shard's rows: one small shard may still run on one actor)
    commit_wait_max_s: float = 60.0      # a pass's column writes are spaced out (each rewrites the columns), by at most
                                         # this: one slow write held the next back ~5 min, all lost to a kill
    task_shuffle_max_rows: int = 100_000  # a pool up to this groups (dedup, MinHash) in tasks, not aggregator actors


@dataclass(frozen=True)
class TrainDefaults:
    """The fine-tuning harness (curate.train): SFT of a small causal LM with per-row records each epoch."""
    epochs: int = 3
    learning_rate: float = 2e-4          # LoRA; a full fine-tune (lora_rank=0) wants ~2e-5
    batch_size: int = 16                 # rows per optimizer step
    max_length: int = 1024               # context + response tokens per turn (truncated as the signals engine does)
    lora_rank: int = 16                  # 0 = full fine-tune
    lora_alpha: float = 32.0
    lora_targets: str = "all-linear"     # peft: every linear projection but the output head
    seed: int = 0
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0           # gradient clipping (0 = off)
    eval_batch_size: int = 32
    group_size: int = 32                 # batches per length-sorted group (less padding, order still shuffled)
    correct_accuracy: float = 0.5        # cartography: an epoch counts as correct when token accuracy > this
    easy_share: float = 0.33             # cartography selector: share of the budget from easy rows (paper: some easy)
    early_epoch: int = 2                 # EL2N / GraNd: records of this epoch's pass = the model after epoch - 1
    cpu_step_tokens: int = 1024          # padded tokens per forward pass on the CPU (a batch runs as several)
    checkpoint_seconds: float = 300.0    # a mid-epoch checkpoint this often: a killed run loses at most this much


@dataclass(frozen=True)
class LessDefaults:
    """LESS (Xia et al. 2024): LoRA gradient features of a warm-up model, matched to a target task."""
    warmup_fraction: float = 0.05        # warm-up LoRA on this random share of the pool (the paper: 5%)
    epochs: int = 4                      # warm-up epochs; a checkpoint (and features) after each (the paper: 4)
    learning_rate: float = 2e-4
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_targets: str = r".*\.(q_proj|k_proj|v_proj|o_proj)"  # attention projections, as the paper
    max_length: int = 1024
    projection_dim: int = 8192           # random projection of the gradient features (the paper: 8192)
    seed: int = 0                        # warm-up sample and the Rademacher projection
    batch_tokens: int = 8192             # padded tokens per gradient batch on the CPU
    batch_tokens_cuda: int = 16384       # (logits of every response token: 16K x 49K floats on SmolLM2)
    projection_block: int = 65536        # gradient coordinates per generated projection block (memory bound)
    projection_cache_bytes: int = 1 << 28          # projection blocks kept in memory on the CPU
    projection_cache_bytes_cuda: int = 24 << 30    # ... on a CUDA device, at most:
    projection_cache_free_share: float = 0.5       # ... this share of the device's free memory (a 24 GB card)
    projection_group_bytes: int = 1 << 29          # per-row gradients gathered for one pass over the projection
    fraction: float = 0.05               # the less selector keeps this share of the candidates (the paper: 5%)
    left_out_examples: int = 5           # target records without a gradient named in provenance


@dataclass(frozen=True)
class MiningDefaults:
    """Instruction Mining (Cao et al. 2023): a linear rule over indicators fitted to fine-tuned eval loss."""
    subsets: int = 10                    # K random subsets fine-tuned
    subset_size: int = 1000              # rows per subset
    epochs: int = 1
    eval_rows: int = 200                 # held-out rows (from the pool) when no eval set is given
    seed: int = 0
    ridge: float = 1e-6                  # least squares on standardised indicators (a tiny ridge for stability)


@dataclass(frozen=True)
class PlanDefaults:
    """QQT (Goyal et al. 2024): utility of each quality bucket decays with repetition; keep what minimises loss."""
    buckets: int = 10                    # quality tiers of the pool (deciles)
    top_utility: float = -0.16           # b of the best tier: the paper's fit for the top 10% (DataComp, T-MARS)
    utility_ratio: float = 0.8           # b of tier k+1 / tier k (the paper's tiers: -0.16, -0.125, -0.1, -0.085)
    half_life: float = 5.7               # repetitions until a row's utility halves (mean of the paper's fits)
    irreducible_loss: float = 0.1        # d (the paper's fit)
    tier_units: float = 3.2              # n counts units of (tier rows / this): the paper's 12.8M-sample tiers
                                         # with a / normaliser = 0.025 / 100K, i.e. one unit = 4M samples
    max_repeats: int = 1_000_000         # the most times a budget may show a kept pool's rows: the law's repetition
                                         # decay has left them no utility long before, and each repeat is evaluated


@dataclass(frozen=True)
class RunDefaults:
    """``curate run``: the one-command pipeline."""
    out: str = "curate-run"              # the output folder (workspace, exports, report)
    engine: str = "single"               # single (this process) | ray


BACKEND = BackendDefaults()
BATCH = BatchDefaults()
JUDGE = JudgeDefaults()
EMBED = EmbedDefaults()
DEITA = DeitaDefaults()
ANN = AnnDefaults()
SELECT = SelectDefaults()
KMEANS = KMeansDefaults()
DECONTAMINATE = DecontaminateDefaults()
HEURISTICS = HeuristicDefaults()
MINHASH = MinHashDefaults()
NORMALIZER = NormalizerDefaults()
SIGNAL = SignalDefaults()
SCORER = ScorerDefaults()
TRAIN_SCORER = TrainScorerDefaults()
DISTIL = DistilDefaults()
EVOL = EvolDefaults()
TAG = TagDefaults()
REPORT = ReportDefaults()
POOL = PoolDefaults()
WORKSPACE = WorkspaceDefaults()
PROGRESS = ProgressDefaults()
SCALE = ScaleDefaults()
TRAIN = TrainDefaults()
LESS = LessDefaults()
MINING = MiningDefaults()
PLAN = PlanDefaults()
RUN = RunDefaults()
