"""peft LoRA pieces shared by curate's two causal-LM fine-tunes: the learnability reference model
(:mod:`curate.signals.lora`) and the training harness (:mod:`curate.train.harness`).

They live under ``curate.signals`` because ``curate.train`` imports ``curate.signals`` (never the reverse).
"""

from __future__ import annotations

from typing import Any

from curate.errors import CurateError


def attach_lora(model: Any, rank: int, alpha: float, targets: str | list[str]) -> Any:
    """``model`` wrapped by peft with fresh trainable LoRA adapters (no dropout; peft's init: A random, B zero) on
    the modules ``targets`` names (peft's ``target_modules``: module names, a regex, or ``"all-linear"``)."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def response_logits(model: Any, input_ids: Any, attention_mask: Any, rows: Any, cols: Any) -> tuple[Any, Any]:
    """(logits, hidden) at the positions (``rows``, ``cols``) that predict the response tokens: the backbone once,
    the output head on those positions only (a peft model or a plain causal LM)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = inner.config
    plain = (not getattr(cfg, "final_logit_softcapping", None)
             and getattr(cfg, "logit_scale", None) in (None, 1, 1.0) and inner.base_model is not inner)
    if not plain:
        raise CurateError(f"{type(inner).__name__}: training needs logits = head(last hidden state) (no "
                          "soft-capping or logit scale) to train on response positions only")
    hidden = inner.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    h = hidden[rows, cols]
    return inner.get_output_embeddings()(h), h
