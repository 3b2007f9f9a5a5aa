"""On a CUDA machine: this branch's GPU fixes, on tiny random models (seconds). Prints one line per check.

    PYTHONPATH=. python3 evals/device_gpu_verify.py TOK_LM TOK_BERT OUT
TOK_LM: SmolLM2's tokenizer files (tokenizer.json, tokenizer_config.json, chat_template.jinja); TOK_BERT: MiniLM's
(vocab.txt, tokenizer.json, ...). Checks: a CUDA training run records bfloat16 autocast and is named apart from the
CPU's; bf16 signal values of CUDA are not served to a CPU request (float32 ones are); a cross-encoder scorer that
predicted on cuda predicts on the CPU after ``.device = "cpu"``.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

GPU = os.environ.get("VERIFY_DEVICE", "cuda")  # cpu: a dry run of this script on a machine without one


def tiny_lm(tok: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    for f in tok.iterdir():
        shutil.copy(f, out / f.name)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=2048, tie_word_embeddings=True, bos_token_id=1,
                      eos_token_id=2, pad_token_id=2)
    LlamaForCausalLM(cfg).save_pretrained(out)
    return out


def tiny_bert(tok: Path, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(out)
    for f in tok.iterdir():
        shutil.copy(f, out / f.name)
    return out


def main(tok_lm: str, tok_bert: str, out: str) -> None:
    from curate.scorers import CrossEncoderScorer
    from curate.signals import Engine
    from curate.signals.template import Request
    from curate.train import TrainConfig, finetune
    from curate.train.examples import row_inputs
    from curate.train.harness import run_folder

    root = Path(out)
    lm = tiny_lm(Path(tok_lm), root / "lm")
    rows = row_inputs([{"id": f"r{i}", "conversation": [{"role": "user", "content": f"Question {i}?"},
                                                         {"role": "assistant", "content": f"The answer is {i}."}]}
                       for i in range(8)])
    config = TrainConfig(epochs=2, batch_size=4, lora_rank=4, max_length=64)
    cuda_dir, cpu_dir = (run_folder(root / "train", lm, rows, config, d) for d in (GPU, "cpu"))
    run = finetune(lm, rows, cuda_dir, config, device=GPU)
    print("train: cuda run precision", run.info["precision"], "| folder cuda", cuda_dir.name, "cpu", cpu_dir.name,
          "| apart:", cuda_dir != cpu_dir)
    cpu_run = finetune(lm, rows, cpu_dir, config, device="cpu")
    print("train: cpu run precision", cpu_run.info["precision"])

    req = [Request((1, 2, 3, 4, 5), (6, 7, 8, 9))]
    cache = root / "cache"
    for dtype in ("bfloat16", "float32"):
        g = Engine(lm, device=GPU, dtype=dtype)
        c = Engine(lm, device="cpu", dtype=dtype)
        vg = g.logprobs(req, cache)[0]
        vc = c.logprobs(req, cache)[0]
        print(f"signal {dtype}: cuda key {g.fingerprint.split(':', 1)[1]} cpu key {c.fingerprint.split(':', 1)[1]}; "
              f"cpu request answered from cache: {c.stats['cache_hits']} of 1; max abs diff {np.abs(vg - vc).max():.2e}")

    bert = tiny_bert(Path(tok_bert), root / "bert")
    texts = [{"instruction": f"Explain item {i}", "response": "word " * (3 + i)} for i in range(12)]
    sc = CrossEncoderScorer(reads=["instruction", "response"], base=str(bert), device=GPU)
    sc.fit(texts, [float(i % 5) for i in range(12)], epochs=1)
    on_cuda = sc.predict(texts)
    sc.device = "cpu"
    try:
        on_cpu = sc.predict(texts)
        print(f"scorer: cuda then cpu predict ok, max abs diff {np.abs(on_cuda - on_cpu).max():.2e}")
    except RuntimeError as exc:
        print("scorer: cuda then cpu predict FAILED:", str(exc)[:160])
    sc.device = GPU
    print(f"scorer: back on cuda, max abs diff {np.abs(sc.predict(texts) - on_cuda).max():.2e}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
