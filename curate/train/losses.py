"""The per-row loss of a model on rows: mean response-token NLL, on the same examples training builds (chat
template, response tokens only). Instruction Mining's held-out side and the downstream evals read it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from curate.defaults import TRAIN
from curate.hardware import import_torch, resolve_device
from curate.signals.peft_lora import response_logits
from curate.signals.template import Prompter, capped_length
from curate.storage.step import RowInput
from curate.train.examples import Example, collate, encode_row, row_inputs


def eval_loss(model: Any, tokenizer: Any, rows: Sequence[RowInput], *, batch_size: int = TRAIN.eval_batch_size,
              device: str | None = None, max_length: int = TRAIN.max_length) -> np.ndarray:
    """Per-row mean response-token NLL under ``model`` (float64, aligned to ``rows``); NaN for a row with no
    answered turn. The same examples as training (chat template, response tokens only)."""
    torch = import_torch()
    device = resolve_device(device) if device is not None else str(next(model.parameters()).device)
    rows = row_inputs(rows)
    prompter = Prompter(tokenizer, capped_length(max_length, model))
    encoded = [encode_row(prompter, r) for r in rows]
    owner = [i for i, e in enumerate(encoded) if isinstance(e, Example)]
    examples = [encoded[i] for i in owner]
    per = np.full(len(examples), np.nan)
    order = sorted(range(len(examples)), key=lambda i: -examples[i].length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    was_training = model.training
    model.eval()
    cuda = device.startswith("cuda")
    with torch.inference_mode():
        for k in range(0, len(order), batch_size):
            index = order[k:k + batch_size]
            batch = collate(examples, index, pad, device)
            if cuda and torch.cuda.is_bf16_supported():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    logits, _ = response_logits(model, batch.input_ids, batch.attention_mask, batch.rows, batch.cols)
            else:
                logits, _ = response_logits(model, batch.input_ids, batch.attention_mask, batch.rows, batch.cols)
            nll = torch.nn.functional.cross_entropy(logits.float(), batch.targets, reduction="none").double().cpu()
            for b, (s, e) in enumerate(batch.bounds):
                per[index[b]] = float(nll[s:e].mean())
    if was_training:
        model.train()
    out = np.full(len(rows), np.nan)
    out[owner] = per
    return out
