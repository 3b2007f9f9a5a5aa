"""Does MoDS' necessity pay on evals/downstream.py's measure? The selection made with curate's parts, the seed
model's answers made on the lent GPU, the training compared there against random and a k-center baseline.

Three modes, on the pool of evals/downstream.py (pool_30k less the held-out reference instructions):
  python3 evals/mods_downstream.py prepare DS_INPUTS OUT_DIR   (here, CPU)
      a workspace of that pool: the shipped quality scorer, MiniLM embeddings; ``good`` = quality at or above
      its median (MoDS' quality filter); ``seed`` = k-center greedy, half the downstream size, from good;
      ``kcenter`` = k-center greedy, the whole size, from good (the same diversity, no necessity); candidates =
      ``MODS_CANDIDATES`` (6,000) good rows outside the seed, seeded. Writes seed/candidates uids and
      kcenter_uids.json into OUT_DIR.
  python3 evals/mods_downstream.py answer OUT_DIR              (the GPU, after evals/device_smollm2_setup.sh)
      the seed model: curate's harness with downstream's SFT settings on the seed rows (LoRA merged); its greedy
      answers to the candidates (transformers generate, the chat template the ``answer`` prompt gets from vLLM,
      ``MODS_MAX_NEW`` 512 new tokens; an answer without end of turn by then is marked truncated). $OUT/answers.jsonl.gz
      ``MODS_REPETITION_PENALTY`` (e.g. 1.15) decodes with that penalty instead of plain greedy (as the request
      param ``repetition_penalty`` does in vLLM: prompt and answer tokens both count).
  python3 evals/mods_downstream.py select OUT_DIR ANSWERS      (here, CPU)
      the answers into the workspace (a truncated one as the failure ``truncated``, as the answer judge records
      it), judged by the shipped quality scorer (``reading_replies``), then the ``necessity`` selector: the seed
      plus half the size by k-center from the seed outward among rows answered below the good bar.
      ``<MODS_NAME>_uids.json`` (default ``mods``).
Then ``DOWNSTREAM_METHODS=random,mods,kcenter python3 evals/downstream.py run DS_INPUTS`` on the GPU with both
uid files among the inputs.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SIZE = int(os.environ.get("DOWNSTREAM_SIZE", 2000))


def candidate_pool(inputs: Path) -> list[dict]:
    """evals/downstream.py's candidates: the pool less rows whose instruction is a held-out reference's."""
    from downstream import load_pool, norm, opener

    pool = load_pool(Path(os.environ.get("DOWNSTREAM_POOL", inputs / "pool.jsonl.gz")))
    refs = [json.loads(line) for line in opener(inputs / "refs.jsonl.gz")]
    held = {norm(r["instruction"]) for r in refs} | {norm(r["instruction"])[:80] for r in refs}
    return [p for p in pool if norm(p["instruction"]) not in held and norm(p["instruction"])[:80] not in held]


def prepare(inputs: Path, out: Path) -> None:
    from curate.scorers import load_default
    from curate.session import Workspace

    out.mkdir(parents=True, exist_ok=True)
    pool = candidate_pool(inputs)
    with open(out / "pool.jsonl", "w") as fh:
        fh.writelines(json.dumps({"uid": p["uid"], "instruction": p["instruction"], "output": p["output"]}) + "\n"
                      for p in pool)
    ws = Workspace(out / "ws")
    ws.load(out / "pool.jsonl")
    t = time.time()
    ws.apply(load_default("quality"), progress=False)
    ws.embed(progress=False)
    print(f"pool {len(ws)} rows; quality and embeddings {time.time() - t:.0f} s")
    good = ws.select(method="threshold", name="good", sort_by="quality", quantile=0.5)
    seed = ws.select(method="kcenter", name="seed", input_selection="good", budget=SIZE // 2)
    kcenter = ws.select(method="kcenter", name="kcenter", input_selection="good", budget=SIZE)
    uid = dict(zip(ws.ids, ws.column("uid"), strict=True))
    rest = sorted(set(good.ids) - set(seed.ids))
    n = int(os.environ.get("MODS_CANDIDATES", 6000))
    cand = [rest[i] for i in sorted(np.random.default_rng(0).permutation(len(rest))[:n])]
    (out / "seed.json").write_text(json.dumps([uid[i] for i in seed.ids]))
    (out / "candidates.json").write_text(json.dumps([uid[i] for i in cand]))
    (out / "kcenter_uids.json").write_text(json.dumps({"how": "k-center greedy from the quality-median filter",
                                                       "uids": [uid[i] for i in kcenter.ids]}))
    print(f"good {len(good.ids)} (quality >= {good.provenance['min_score']:.3f}); seed {len(seed.ids)}; "
          f"candidates {len(cand)}; kcenter {len(kcenter.ids)}")


def answer(out: Path) -> None:
    import torch
    from downstream import load_pool, row
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.train.export import export_model
    from curate.train.harness import TrainConfig, finetune

    model_dir = Path(os.environ["DOWNSTREAM_MODEL"])
    device = os.environ.get("MODS_DEVICE", "cuda")
    by_uid = {p["uid"]: p for p in load_pool(Path(os.environ["DOWNSTREAM_POOL"]))}
    seed = json.loads((out / "seed.json").read_text())
    cand = json.loads((out / "candidates.json").read_text())
    rank = int(os.environ.get("DOWNSTREAM_RANK", 16))
    config = TrainConfig(epochs=int(os.environ.get("DOWNSTREAM_EPOCHS", 2)), learning_rate=3e-4, batch_size=16,
                         max_length=1024, lora_rank=rank, lora_alpha=2.0 * rank, seed=0, warmup_ratio=0.05,
                         record=False, end_of_turn=True)  # downstream's SFT settings; a model that answers stops
    t = time.time()
    run = finetune(model_dir, [row(u, by_uid[u]["instruction"], by_uid[u]["output"]) for u in seed],
                   Path("/tmp/mods_seed_run"), config, device=device)
    folder = export_model(run, Path("/tmp/mods_seed_model"))
    print(f"seed model: {len(seed)} rows, {time.time() - t:.0f} s", flush=True)
    tok = AutoTokenizer.from_pretrained(str(folder), padding_side="left")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype).to(device).eval()
    end = tok.convert_tokens_to_ids("<|im_end|>")
    if tok.pad_token is None:  # left padding, masked out: any token serves
        tok.pad_token = "<|im_end|>"
    max_new = int(os.environ.get("MODS_MAX_NEW", 512))
    penalty = ({"repetition_penalty": float(os.environ["MODS_REPETITION_PENALTY"])}
               if os.environ.get("MODS_REPETITION_PENALTY") else {})
    print(f"decoding: greedy{', ' + str(penalty) if penalty else ''}", flush=True)
    prompts = [tok.apply_chat_template([{"role": "user", "content": by_uid[u]["instruction"]}], tokenize=False,
                                       add_generation_prompt=True) for u in cand]
    order = sorted(range(len(cand)), key=lambda i: len(prompts[i]))
    results: dict[int, dict] = {}
    t = time.time()
    batch = int(os.environ.get("MODS_BATCH", 256))
    for k in range(0, len(order), batch):
        idx = order[k:k + batch]
        enc = tok([prompts[i] for i in idx], return_tensors="pt", padding=True, truncation=True, max_length=1024,
                  add_special_tokens=False).to(device)
        with torch.inference_mode():
            gen = model.generate(**enc, max_new_tokens=max_new, do_sample=False, eos_token_id=end,
                                 pad_token_id=tok.pad_token_id or end, **penalty)
        for j, i in enumerate(idx):
            new = gen[j, enc.input_ids.shape[1]:].tolist()
            done = end in new
            text = tok.decode(new[:new.index(end)] if done else new, skip_special_tokens=True)
            results[i] = {"uid": cand[i], "answer": text, "truncated": not done}
    print(f"answers: {len(results)} in {time.time() - t:.0f} s; truncated "
          f"{sum(r['truncated'] for r in results.values())}", flush=True)
    dest = Path(os.environ.get("OUT", "/tmp")) / "answers.jsonl.gz"
    with gzip.open(dest, "wt") as fh:
        fh.writelines(json.dumps(results[i]) + "\n" for i in range(len(cand)))


def select(out: Path, answers: Path) -> None:
    from curate.codes import Failure, FailureCode
    from curate.scorers import load_default
    from curate.session import Workspace

    ws = Workspace.open(out / "ws")
    index = dict(zip(ws.column("uid"), ws.ids, strict=True))
    got = [json.loads(line) for line in gzip.open(answers, "rt")]
    ids = [index[g["uid"]] for g in got]
    values = [[None] if g["truncated"] else [g["answer"]] for g in got]
    fails = [[Failure(FailureCode.TRUNCATED, "stopped at max_new_tokens", g["answer"], 1).to_dict()]
             if g["truncated"] else None for g in got]
    digest = hashlib.sha256(answers.read_bytes()).hexdigest()[:12]  # other answers: re-judged, never stale
    ws.add_column("seed_answer", values, {"kind": "judge", "granularity": "turn",
                                          "fingerprint": f"mods-seed-answers-{digest}"}, ids=ids)
    ws.add_column("seed_answer_failure", fails, {"kind": "failure", "of": "seed_answer"}, ids=ids)
    quality = load_default("quality")
    ws.apply(quality.reading_replies("seed_answer"), ids, progress=False)
    bar = ws.selection("good").provenance["min_score"]
    name = os.environ.get("MODS_NAME", "mods")
    mods = ws.select(method="necessity", name=name, input_selection="good", seed="seed",
                     answer_score="seed_answer_quality", max_answer_score=bar, budget=SIZE - SIZE // 2,
                     answers="seed_answer")
    uid = dict(zip(ws.ids, ws.column("uid"), strict=True))
    (out / f"{name}_uids.json").write_text(json.dumps({"how": f"MoDS: seed + necessary rows (answer < {bar:.3f})",
                                                    "uids": [uid[i] for i in mods.ids]}))
    scores = np.array([v if v is not None else np.nan for v in ws.row_values("seed_answer_quality", ids)], float)
    own = np.array(ws.row_values("quality", ids), float)
    print(f"answers {len(got)}, truncated {sum(g['truncated'] for g in got)}; answer quality mean "
          f"{np.nanmean(scores):.3f} vs the pool's replies {own.mean():.3f}; necessary "
          f"{mods.provenance['necessary_rows']} ({mods.provenance['unfinished_answers']} unfinished); mods "
          f"{len(mods.ids)} rows; reasons "
          f"{ {f'{d}/{r}': n for (d, r), n in mods.reasons().items()} }")


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode == "prepare" and len(sys.argv) == 4:
        prepare(Path(sys.argv[2]), Path(sys.argv[3]))
    elif mode == "answer" and len(sys.argv) == 3:
        answer(Path(sys.argv[2]))
    elif mode == "select" and len(sys.argv) == 4:
        select(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        sys.exit(__doc__)
