"""A stand-in for ``python -m vllm.entrypoints.openai.run_batch`` where vLLM is not installed (the lent GPU machine).

Reads the OpenAI batch JSONL that curate's batch backends write (``custom_id``, ``body`` with ``messages``,
``max_tokens``, ``temperature``), generates greedily with transformers (left-padded batches, sorted by
length), and writes the same output lines vLLM's runner writes (``response.status_code`` 200 and a
chat-completion ``body``), so curate reads them back through its own batch reader and response cache.
What it cannot do, it says: no guided decoding (``response_format`` only stops a sequence once its first
JSON object closes; the prompt's parser judges the text and records a failure when it is not valid), no
logprobs, greedy only.

    python3 evals/hf_run_batch.py -i in.jsonl -o out.jsonl --model HF_FOLDER [--batch 64]
"""

from __future__ import annotations

import argparse
import json
import time
import uuid


def closing_brace(text: str) -> int | None:
    """Index just past the first top-level JSON object's closing brace, or None."""
    feed = JsonObjectEnd.__new__(JsonObjectEnd)
    feed.depth, feed.started, feed.in_string, feed.escape, feed.done = [0], [False], [False], [False], [False]
    for k, ch in enumerate(text):
        feed._feed(0, ch)
        if feed.done[0]:
            return k + 1
    return None


class JsonObjectEnd:
    """Per-sequence stop once the first top-level JSON object of the new text has closed (braces outside
    strings balanced again): vLLM's guided decoding ends there; without it a small model repeats itself
    until ``max_tokens``."""

    def __init__(self, tok, prompt_len: int, rows: int):
        self.tok, self.prompt_len = tok, prompt_len
        self.depth, self.started, self.in_string, self.escape = [0] * rows, [False] * rows, [False] * rows, [False] * rows
        self.done = [False] * rows
        self.seen = prompt_len

    def _feed(self, row: int, text: str) -> None:
        for ch in text:
            if self.done[row]:
                return
            if self.in_string[row]:
                if self.escape[row]:
                    self.escape[row] = False
                elif ch == "\\":
                    self.escape[row] = True
                elif ch == '"':
                    self.in_string[row] = False
            elif ch == '"' and self.started[row]:
                self.in_string[row] = True
            elif ch == "{":
                self.depth[row] += 1
                self.started[row] = True
            elif ch == "}" and self.started[row]:
                self.depth[row] -= 1
                self.done[row] = self.depth[row] == 0

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        for pos in range(self.seen, input_ids.shape[1]):
            for row in range(input_ids.shape[0]):
                if not self.done[row]:
                    self._feed(row, self.tok.decode([int(input_ids[row, pos])], skip_special_tokens=True))
        self.seen = input_ids.shape[1]
        return torch.tensor(self.done, device=input_ids.device)


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, StoppingCriteriaList

    ap = argparse.ArgumentParser()
    ap.add_argument("-i", required=True)
    ap.add_argument("-o", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--served-model-name", default="smollm2-135m-instruct")
    args = ap.parse_args()

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(args.model)
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.to(device).eval()
    lines = [json.loads(x) for x in open(args.i, encoding="utf-8") if x.strip()]
    prompts = [tok.apply_chat_template(x["body"]["messages"], tokenize=False, add_generation_prompt=True) for x in lines]
    order = sorted(range(len(lines)), key=lambda i: len(prompts[i]))
    started = time.time()
    with open(args.o, "w", encoding="utf-8") as out:
        for b in range(0, len(order), args.batch):
            idx = order[b:b + args.batch]
            max_new = max(int(lines[i]["body"].get("max_tokens") or 512) for i in idx)
            enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            json_mode = any(lines[i]["body"].get("response_format") for i in idx)
            stop = StoppingCriteriaList([JsonObjectEnd(tok, enc["input_ids"].shape[1], len(idx))]) if json_mode else None
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.pad_token_id,
                                     stopping_criteria=stop)
            for row, i in enumerate(idx):
                new = gen[row, enc["input_ids"].shape[1]:]
                cap = int(lines[i]["body"].get("max_tokens") or 512)
                ids = new.tolist()[:cap]
                stops = [k for k, t in enumerate(ids) if t in (tok.eos_token_id, tok.pad_token_id)]
                finished = bool(stops)  # generation pads after the end of sequence
                ids = ids[:stops[0]] if stops else ids
                text = tok.decode(ids, skip_special_tokens=True)
                if stop and stop[0].done[row]:  # cut after the closing brace (the stop fires at its token)
                    end = closing_brace(text)
                    text, finished = (text[:end], True) if end else (text, finished)
                body = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "model": args.served_model_name,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                     "finish_reason": "stop" if finished else "length", "logprobs": None}],
                        "usage": {"prompt_tokens": int(enc["attention_mask"][row].sum()), "completion_tokens": len(ids),
                                  "total_tokens": int(enc["attention_mask"][row].sum()) + len(ids)}}
                out.write(json.dumps({"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": lines[i]["custom_id"],
                                      "response": {"status_code": 200, "request_id": uuid.uuid4().hex, "body": body},
                                      "error": None}) + "\n")
            print(f"{min(b + args.batch, len(order))}/{len(order)} requests, {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
