"""Defaults of models curate trains or runs: embeddings, model signals, trained scorers, distillation, fine-tuning, LESS, Instruction Mining."""

from __future__ import annotations

from dataclasses import dataclass


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


EMBED = EmbedDefaults()
SIGNAL = SignalDefaults()
SCORER = ScorerDefaults()
TRAIN_SCORER = TrainScorerDefaults()
DISTIL = DistilDefaults()
TRAIN = TrainDefaults()
LESS = LessDefaults()
MINING = MiningDefaults()
