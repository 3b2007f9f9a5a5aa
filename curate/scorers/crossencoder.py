"""A MiniLM cross-encoder reader, LoRA-tuned (peft), with a small head and an explicit length covariate.

The network reads ``[CLS] instruction [SEP] response [SEP]`` (or the instruction alone), mean-pools the
last layer and maps it to one score: ``head(pooled) + cov(length features)``; a small causal LM (the
``small-lm`` kind) reads the row as a chat turn through its own chat template and pools its last token.
The length term is a separate linear covariate, so the text part learns what length does not already explain.

The digit head (DEITA's own scorer, :func:`build_net` with ``digit_tokens``): the causal LM reads the row
rendered into a reader prompt (``messages``, e.g. ``prompts/quality_reader.md``) and its score is the expected
digit under its own next-token distribution over the scale's digits; the head starts as the LM's output rows of
those digits, and the pointwise loss is cross-entropy on the label as a two-hot over its neighbouring digits.

Training mixes two losses in every step (:func:`train_net`):

- pointwise: squared error against labels standardised per source (GPT-4 1-10 ratings, FLASK levels);
- pairwise: Bradley-Terry (logistic on the score difference, soft targets allowed) on preference pairs
  (AlpacaEval) and on same-task versions ordered by construction (Evol constraint chains).

Only torch, transformers, peft, safetensors and numpy are imported here (no other curate module), so
``evals/train_scorers_gpu.py`` can load this file by path on a machine without curate's dependencies.
Shipped: the LoRA adapter and the head in ``adapter.safetensors`` (fp16, < 2 MiB); the base weights come from
the installed MiniLM package. The map onto the judge's scale is :mod:`curate.scorers.readermap`'s.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from curate.defaults import SCORER
from curate.hardware import import_torch

LORA_TARGETS = ("query", "key", "value", "dense")        # BERT (MiniLM)
LM_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # a small causal LM (SmolLM2: Llama)
COV_NAMES = ("log_chars_response", "log_chars_instruction")
COV_CENTER, COV_SCALE = 6.0, 1.5   # log1p(chars) standardised with fixed constants (no data statistics)


def covariates(instructions: Sequence[str], responses: Sequence[str] | None) -> np.ndarray:
    """The length covariates of each row (response then instruction log-characters; 0 without a response)."""
    ins = np.log1p(np.array([len(t) for t in instructions], dtype=np.float32))
    res = np.log1p(np.array([len(t) for t in responses], dtype=np.float32)) if responses is not None else \
        np.full_like(ins, COV_CENTER)
    return (np.stack([res, ins], axis=1) - COV_CENTER) / COV_SCALE


def build_net(base_dir: str, *, r: int = SCORER.lora_rank, alpha: int = 2 * SCORER.lora_rank,
              dropout: float = SCORER.lora_dropout, dtype: Any = None,
              digit_tokens: Sequence[int] | None = None, digit_values: Sequence[float] | None = None,
              messages: Callable[[str, str | None], list[dict[str, str]]] | None = None):
    """The base model (float32) with fresh LoRA adapters and a zero-initialised head; with ``digit_tokens`` (the
    token ids of the scale's digits, worth ``digit_values``) a causal LM's digit head, reading rows rendered by
    ``messages(instruction, response)`` (the reader prompt's chat messages)."""
    torch = import_torch()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM

    if digit_tokens is not None:
        if messages is None or digit_values is None or len(digit_values) != len(digit_tokens):
            raise ValueError("a digit head needs the reader prompt (messages) and one value per digit token")
        lm = AutoModelForCausalLM.from_pretrained(base_dir).to(dtype or torch.float32)
        cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LM_LORA_TARGETS))
        rows = lm.get_output_embeddings().weight[list(digit_tokens)].detach().float().clone()
        return _module(digits=True)(get_peft_model(lm, cfg), rows, digit_values, messages)
    bert = AutoModel.from_pretrained(base_dir).to(dtype or torch.float32)  # a causal LM folder loads its base model
    targets = LORA_TARGETS if bert.config.model_type == "bert" else LM_LORA_TARGETS
    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets))
    return ReaderNet(get_peft_model(bert, cfg), bert.config.hidden_size)


def _module(digits: bool = False):
    torch = import_torch()
    class _Reader(torch.nn.Module):
        def __init__(self, encoder, hidden: int):
            super().__init__()
            self.encoder = encoder
            self.head = torch.nn.Linear(hidden, 1)
            self.cov = torch.nn.Linear(len(COV_NAMES), 1, bias=False)
            torch.nn.init.zeros_(self.head.weight)
            torch.nn.init.zeros_(self.head.bias)
            torch.nn.init.zeros_(self.cov.weight)
            self.last_token = getattr(encoder.config, "model_type", "bert") != "bert"

        def hidden(self, batch: dict[str, Any]):
            keys = ("input_ids", "attention_mask", "token_type_ids")
            return self.encoder(**{k: batch[k] for k in keys if k in batch}).last_hidden_state

        def pooled(self, batch: dict[str, Any]):
            out = self.hidden(batch)
            if self.last_token:  # a causal LM: only the last real token has read the whole row
                mask = batch["attention_mask"]
                last = mask.shape[1] - 1 - mask.flip(1).argmax(1)
                return out[torch.arange(out.shape[0], device=out.device), last]
            mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
            return (out * mask).sum(1) / mask.sum(1).clamp(min=1.0)

        def forward(self, batch: dict[str, Any]):
            return self.head(self.pooled(batch)).squeeze(-1) + self.cov(batch["cov"]).squeeze(-1)

        def point_loss(self, batch: dict[str, Any], target):
            """(scores, loss) of a pointwise batch: squared error against the standardised labels."""
            s = self(batch)
            return s, torch.nn.functional.mse_loss(s, target)

    class _DigitReader(_Reader):
        """A causal LM answering the reader prompt; its score is the expected digit (DEITA's scorer). ``head``: the
        digit rows of the LM's output layer (trained, saved); ``cov`` stays zero: the score is the LM's own."""

        def __init__(self, lm, digit_rows, values: Sequence[float], messages):
            super().__init__(lm, digit_rows.shape[1])
            self.head = torch.nn.Linear(digit_rows.shape[1], digit_rows.shape[0])
            with torch.no_grad():
                self.head.weight.copy_(digit_rows)
                self.head.bias.zero_()
            self.register_buffer("values", torch.tensor(list(values), dtype=torch.float32), persistent=False)
            self.messages = messages

        def hidden(self, batch: dict[str, Any]):
            # the LM body alone (pooled at the last token): only the digits' logits are needed, not the vocabulary's
            lm = self.encoder.get_base_model() if hasattr(self.encoder, "get_base_model") else self.encoder
            return lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state

        def forward(self, batch: dict[str, Any]):
            return self.point_loss(batch)[0]

        def point_loss(self, batch: dict[str, Any], target=None):
            """(expected digits, cross-entropy): ``target`` on the digits' scale, as a two-hot over its two neighbours."""
            logp = torch.log_softmax(self.head(self.pooled(batch)).float(), dim=-1)
            expected = (logp.exp() * self.values).sum(-1)
            if target is None:
                return expected, None
            t = target.clamp(self.values[0], self.values[-1])
            weight = (1.0 - (t[:, None] - self.values[None, :]).abs()).clamp(min=0.0)  # digits one apart
            return expected, -(weight * logp).sum(-1).mean()

    return _DigitReader if digits else _Reader


def ReaderNet(encoder, hidden: int):  # noqa: N802 (a factory standing in for the class defined lazily)
    """The reader module: LoRA encoder + linear head on the mean-pooled output + the length covariate."""
    return _module()(encoder, hidden)


def _fit_parts(a: list[int], b: list[int], budget: int) -> tuple[list[int], list[int]]:
    """Trim two token lists longest-first so together they fit ``budget`` (as the BERT pair tokenizer does)."""
    if len(a) + len(b) <= budget:
        return a, b
    short = min(len(a), len(b))
    keep_short = min(short, budget // 2)
    keep_long = budget - keep_short
    return (a[:keep_short], b[:keep_long]) if len(a) <= len(b) else (a[:keep_long], b[:keep_short])


def chat_texts(tok, instructions: Sequence[str], responses: Sequence[str] | None, max_length: int,
               messages: Callable[[str, str | None], list[dict[str, str]]] | None = None) -> list[str]:
    """A causal LM reads a row as its own chat turn (the tokenizer's chat template), instruction and response
    trimmed longest-first to fit ``max_length``: a plain concatenation would not mark where the answer starts.
    ``messages(instruction, response)``: the row rendered into a reader prompt instead, ending where the model
    answers (the digit head)."""
    def render(ins: str, res: str | None) -> str:
        if messages is not None:
            return tok.apply_chat_template(messages(ins, res), tokenize=False, add_generation_prompt=True)
        msgs = [{"role": "user", "content": ins}] + ([{"role": "assistant", "content": res}] if res is not None else [])
        return tok.apply_chat_template(msgs, tokenize=False)

    overhead = len(tok(render("", "" if responses is not None else None), add_special_tokens=False)["input_ids"])
    budget = max_length - overhead
    if budget < 8:  # truncating the rendered turn would cut its template, and the last token pooled with it
        raise ValueError(f"max_length {max_length} leaves {budget} tokens for the row after the chat template's "
                         f"{overhead}; give at least {overhead + 8}")
    out = []
    for i, ins in enumerate(instructions):
        a = tok(ins, add_special_tokens=False)["input_ids"]
        b = tok(responses[i], add_special_tokens=False)["input_ids"] if responses is not None else []
        a, b = _fit_parts(a, b, budget)
        out.append(render(tok.decode(a), tok.decode(b) if responses is not None else None))
    return out


def encode_batch(tok, instructions: Sequence[str], responses: Sequence[str] | None, max_length: int,
                 device: Any = "cpu", messages: Callable[[str, str | None], list[dict[str, str]]] | None = None
                 ) -> dict[str, Any]:
    """Tokenised (instruction, response) pairs (longest part truncated first) plus the covariates.
    A tokenizer with a chat template and no separator token (a causal LM's) gets :func:`chat_texts` (with
    ``messages``: the rows rendered into a reader prompt)."""
    torch = import_torch()
    if tok.pad_token is None:  # a causal LM's tokenizer: pad with end-of-sequence (masked out of the pooling)
        tok.pad_token = tok.eos_token
    kw = {"return_token_type_ids": False} if "token_type_ids" not in tok.model_input_names else {}
    if messages is not None and not getattr(tok, "chat_template", None):
        raise ValueError("a reader prompt needs a tokenizer with a chat template (a chat model's folder)")
    if tok.sep_token is None and getattr(tok, "chat_template", None):
        enc = tok(chat_texts(tok, instructions, responses, max_length, messages), truncation=True, max_length=max_length,
                  padding=True, return_tensors="pt", add_special_tokens=False, **kw)
    elif responses is None:
        enc = tok(list(instructions), truncation=True, max_length=max_length, padding=True, return_tensors="pt", **kw)
    else:
        enc = tok(list(instructions), list(responses), truncation="longest_first", max_length=max_length,
                  padding=True, return_tensors="pt", **kw)
    out = {k: v.to(device) for k, v in enc.items()}
    out["cov"] = torch.from_numpy(covariates(instructions, responses)).to(device)
    return out


def token_lengths(tok, instructions: Sequence[str], responses: Sequence[str] | None, max_length: int) -> list[int]:
    """Tokens each row reads (its parts' tokens, capped at ``max_length``): what its batch is padded to."""
    kw = {"add_special_tokens": False, "truncation": True, "max_length": max_length}
    a = tok(list(instructions), **kw)["input_ids"]
    b = tok(list(responses), **kw)["input_ids"] if responses is not None else [()] * len(a)
    return [min(max_length, len(x) + len(y) + 3) for x, y in zip(a, b, strict=True)]  # + [CLS] [SEP] [SEP]


def predict_net(net, tok, instructions: Sequence[str], responses: Sequence[str] | None, *, max_length: int,
                batch_size: int = SCORER.predict_batch_size, device: Any = "cpu", on_rows: Callable[[int], Any] | None = None,
                pooled: bool = False, plan: Callable[[list[int]], Sequence[np.ndarray]] | None = None) -> np.ndarray:
    """Raw scores (or the pooled vectors) of rows, batched by token length. ``plan(lengths)`` groups the rows
    into batches (curate passes :func:`curate.embed.batching.token_budget_batches` on the CPU); None: batches
    of ``batch_size`` rows in length order."""
    torch = import_torch()
    n = len(instructions)
    messages = getattr(net, "messages", None)
    lengths = token_lengths(tok, instructions, responses, max_length)
    if messages is not None:  # every row also carries the reader prompt's own tokens
        empty = chat_texts(tok, [""], None if responses is None else [""], 10**6, messages)[0]
        overhead = len(tok(empty, add_special_tokens=False)["input_ids"])
        lengths = [min(max_length, k + overhead) for k in lengths]
    if plan is None:
        order = np.argsort(lengths, kind="stable")
        batches: Sequence[np.ndarray] = [order[s:s + batch_size] for s in range(0, n, batch_size)]
    else:
        batches = plan(lengths)
    out: np.ndarray | None = None
    net.eval()
    with torch.inference_mode():
        for idx in batches:
            batch = encode_batch(tok, [instructions[i] for i in idx],
                                 [responses[i] for i in idx] if responses is not None else None, max_length, device,
                                 messages)
            val = (net.pooled(batch) if pooled else net(batch)).float().cpu().numpy()
            if out is None:
                out = np.zeros((n,) + val.shape[1:], dtype=np.float32)
            out[idx] = val
            if on_rows is not None:
                on_rows(len(idx))
    return out if out is not None else np.zeros(0, dtype=np.float32)


def _take(batch: dict[str, Any], idx: Sequence[int]) -> dict[str, Any]:
    """Rows ``idx`` of an encoded batch, without the columns that are padding in all of them (as if encoded alone)."""
    out = {k: v[list(idx)] for k, v in batch.items()}
    keep = out["attention_mask"].any(0)
    return {k: v if k == "cov" else v[:, keep] for k, v in out.items()}


def _loss_passes(net, tok, pts, prs, max_length: int, pair_weight: float, device: Any, point_rank_weight: float = 0.0,
                 plan: Callable[[list[int]], Sequence[Sequence[int]]] | None = None):
    """One step's loss (the net's pointwise loss: squared error, the digit head's cross-entropy; + Bradley-Terry on
    the pair batch; + Bradley-Terry on the pointwise batch's pairs of unequal labels, times ``point_rank_weight``),
    yielded as one term per forward pass; the terms add up to the step's loss. ``plan(tokens per row)`` groups each
    batch's rows into passes (a pair's tokens: both texts'); None: one pass per batch. Both losses are means over
    rows, so a pass over k of n rows adds its mean times k/n; the ranking term compares rows across the whole
    pointwise batch, so with it that batch is one pass."""
    torch = import_torch()
    def encode(ins, res):
        return encode_batch(tok, ins, res, max_length, device, getattr(net, "messages", None))

    def passes(lengths) -> list[list[int]]:
        return [list(range(len(lengths)))] if plan is None else [[int(i) for i in p] for p in plan(lengths)]

    if pts:
        batch = encode([p[0] for p in pts], [p[1] for p in pts] if pts[0][1] is not None else None)
        y = torch.tensor([p[2] for p in pts], dtype=torch.float32, device=device)
        for idx in [list(range(len(pts)))] if point_rank_weight else passes(batch["attention_mask"].sum(1).tolist()):
            s, point_loss = net.point_loss(_take(batch, idx), y[idx])
            loss = point_loss * (len(idx) / len(pts))
            if point_rank_weight:  # every pair of the batch with unequal labels, the higher label first
                higher = y[:, None] > y[None, :]
                if bool(higher.any()):
                    margin = (s[:, None] - s[None, :])[higher]
                    loss = loss + point_rank_weight * torch.nn.functional.softplus(-margin).mean()
            yield loss
    if prs:
        if prs[0][0] is None:  # instruction-only pairs: (None, first, second) are instructions
            a, b = encode([p[1] for p in prs], None), encode([p[2] for p in prs], None)
        else:
            ins = [p[0] for p in prs]
            a, b = encode(ins, [p[1] for p in prs]), encode(ins, [p[2] for p in prs])
        target = torch.tensor([p[3] for p in prs], dtype=torch.float32, device=device)
        for idx in passes((a["attention_mask"].sum(1) + b["attention_mask"].sum(1)).tolist()):
            diff = net(_take(a, idx)) - net(_take(b, idx))
            bce = torch.nn.functional.binary_cross_entropy_with_logits(diff, target[idx])
            yield pair_weight * (len(idx) / len(prs)) * bce


def train_net(net, tok, *, points: Sequence[tuple[str, str | None, float]],
              pairs: Sequence[tuple[str, str | None, str | None, float]], max_length: int, epochs: float = SCORER.finetune_epochs,
              batch_size: int = SCORER.finetune_batch_size, lr: float = SCORER.finetune_lr,
              head_lr: float = SCORER.finetune_head_lr, weight_decay: float = SCORER.finetune_weight_decay,
              pair_weight: float = 1.0, device: Any = "cpu", seed: int = 0,
              evaluate: Callable[[], float] | None = None, eval_every: int = 0,
              log: Callable[[str], Any] | None = None, amp_dtype: Any = None, schedule_steps: int | None = None,
              stop_at: int | None = None, point_rank_weight: float = 0.0,
              on_step: Callable[[int, int], Any] | None = None, checkpoint: Any = None,
              step_plan: Callable[[list[int]], Sequence[Sequence[int]]] | None = None) -> dict[str, Any]:
    """Fine-tune ``net`` in place on mixed pointwise and pairwise batches; keep the best state by ``evaluate``.

    ``points``: (instruction, response or None, standardised label). ``pairs``: (instruction, response 1,
    response 2, P(response 1 beats response 2)); for instruction-only pairs (complexity) the instruction
    is None and the two texts are instructions: (None, harder?, easier?, P(first is harder)).
    One step = one pointwise batch + one pair batch.
    ``evaluate()`` (higher is better) runs every ``eval_every`` steps; the best state is restored.
    ``amp_dtype`` (e.g. ``torch.bfloat16`` on a GPU): mixed precision, entered afresh for each step's forward.
    One autocast around the whole loop would be wrong: autocast caches its low-precision copy of each weight
    until the context exits, so every forward would see the initial (zero) head and LoRA weights while the
    float32 weights moved on gradients taken at that start point; nothing would be fine-tuned.
    ``schedule_steps`` (default: ``epochs`` over the larger of points and pairs) sets the learning-rate schedule;
    ``stop_at`` ends training after that step: a refit on more data, stopped where an earlier run's ``evaluate``
    peaked, keeps that run's schedule. ``point_rank_weight`` adds a ranking loss over the pointwise batch (for
    labels on one scale, such as FLASK levels; not for labels standardised per source).
    ``on_step(step, steps)``: called after each step (a progress bar's update).
    ``checkpoint`` (:class:`curate.scorers.checkpoint.TrainingCheckpoint`): ``restore(parts)`` before the first step
    returns the last step a killed run finished (its adapter, optimiser, schedule and random states put back), and
    ``step_done(step, last, parts)`` saves progress as it goes, so a rerun continues instead of starting over.
    ``step_plan(tokens per row)``: a step's rows grouped into forward passes whose gradients add up
    (:func:`_loss_passes`), bounding activation memory on a CPU; the update stays one pass's up to float rounding.
    """
    torch = import_torch()
    rng = random.Random(seed)
    torch.manual_seed(seed)
    params = [{"params": [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith(("head", "cov"))],
               "lr": lr},
              {"params": list(net.head.parameters()) + list(net.cov.parameters()), "lr": head_lr}]
    opt = torch.optim.AdamW(params, weight_decay=weight_decay)
    n_items = max(len(points), len(pairs))
    steps = schedule_steps or max(1, int(math.ceil(epochs * n_items / batch_size)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, steps // 10))
                                              * max(0.0, 1 - s / steps) + 1e-3)
    best: dict[str, Any] = {"score": -math.inf, "step": 0, "state": None}
    history: list[dict[str, Any]] = []

    def draw(items, k):
        return [items[rng.randrange(len(items))] for _ in range(k)] if items else []

    def trainable_state():
        return {k: v.detach().clone() for k, v in net.state_dict().items() if "lora_" in k or k.startswith(("head", "cov"))}

    device_type = torch.device(device).type
    last = min(steps, stop_at or steps)
    parts = {"net": net, "opt": opt, "sched": sched, "rng": rng, "best": best, "history": history,
             "trainable": trainable_state, "last": last}
    done = checkpoint.restore(parts) if checkpoint is not None else 0
    for step in range(done + 1, last + 1):
        net.train()
        opt.zero_grad()
        passes, loss = _loss_passes(net, tok, draw(points, batch_size), draw(pairs, batch_size), max_length,
                                    pair_weight, device, point_rank_weight, step_plan), 0.0
        while True:  # each pass's forward under autocast, its backward outside: gradients add up over the passes
            with torch.autocast(device_type=device_type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                part = next(passes, None)
            if amp_dtype is not None:
                torch.clear_autocast_cache()  # also when a caller's (even disabled) autocast encloses this one
            if part is None:
                break
            part.backward()
            loss += float(part.detach())
        torch.nn.utils.clip_grad_norm_([p for g in params for p in g["params"]], 1.0)
        opt.step()
        sched.step()
        if on_step is not None:
            on_step(step, last)
        if evaluate is not None and eval_every and (step % eval_every == 0 or step == steps):
            score = float(evaluate())
            history.append({"step": step, "val": score, "loss": loss})
            if log:
                log(f"step {step}/{steps} loss {loss:.4f} val {score:.4f}")
            if score > best["score"]:
                best.update(score=score, step=step, state=trainable_state())
        if checkpoint is not None:
            checkpoint.step_done(step, last, parts)
    if best["state"] is not None:
        net.load_state_dict(best["state"], strict=False)
    kept = best["state"] is not None  # else the last state: no evaluate, or it never ran
    return {"steps": last, "schedule_steps": steps, "best_step": best["step"] if kept else None,
            "best_val": best["score"] if kept else None, "history": history, "resumed_after_step": done or None}


def trainable_tensors(net) -> dict[str, Any]:
    """The tensors to ship: LoRA weights (peft's adapter state) and the head, as fp16 numpy arrays."""
    from peft import get_peft_model_state_dict

    parts = {"lora": (get_peft_model_state_dict(net.encoder), np.float16), "head": (net.head.state_dict(), np.float32),
             "cov": (net.cov.state_dict(), np.float32)}
    return {f"{p}.{k}": v.detach().float().cpu().numpy().astype(dtype) for p, (state, dtype) in parts.items()
            for k, v in state.items()}
