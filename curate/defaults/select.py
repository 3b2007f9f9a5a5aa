"""Defaults of selection: DEITA admission, nearest-neighbour indexes, selectors, dedup, decontamination, heuristics, QQT plans."""

from __future__ import annotations

from dataclasses import dataclass


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


DEITA = DeitaDefaults()
ANN = AnnDefaults()
SELECT = SelectDefaults()
KMEANS = KMeansDefaults()
DECONTAMINATE = DecontaminateDefaults()
MINHASH = MinHashDefaults()
HEURISTICS = HeuristicDefaults()
PLAN = PlanDefaults()
