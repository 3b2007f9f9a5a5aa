"""MoDS necessity end to end on real rows, on the CPU: every stage through curate's own API.

Rows: ``MODS_ROWS`` (default 600) drawn from ../shared/data/pool_30k.jsonl (seeded). Stages:
  1. quality: the shipped quality scorer (offline); embeddings: MiniLM;
  2. ``good``: threshold at the median quality (MoDS' quality filter); ``seed``: k-center greedy, ``MODS_SEED`` rows;
  3. the seed model: SmolLM2-135M-Instruct LoRA-tuned on the seed (``ws.fine_tune``), merged into a folder;
  4. its answers to the other good rows (the ``answer`` prompt, vLLM in-process, ``MODS_MAX_TOKENS`` tokens);
  5. those answers judged by the same quality scorer (``reading_replies``);
  6. ``necessity``: rows whose answer scores below the good threshold (the bar the pool's replies had to
     pass) or never finished (``answers=``), ``MODS_BUDGET`` of them by k-center from the seed outward.
Prints each stage's time, the answer scores beside the pool replies' on the same rows, a few rows of each
kind, and a RESULT line. It measures that the pipeline runs and what it picks; not whether the picks
train a better model (that needs the GPU downstream harness, evals/downstream.py).

    python evals/run_mods.py            (log: evals/results/run_mods.log)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(os.environ.get("CURATE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
WORK = Path(os.environ.get("MODS_WORK", "/tmp/mods_run"))


def env(name: str, default: int) -> int:
    return int(os.environ.get(name, default))


def main() -> None:
    from curate.llm.backends import VLLMBackend
    from curate.llm.judges import Judge
    from curate.scorers import load_default
    from curate.session import Workspace

    n_rows, n_seed, budget = env("MODS_ROWS", 600), env("MODS_SEED", 60), env("MODS_BUDGET", 60)
    max_tokens = env("MODS_MAX_TOKENS", 768)
    times: dict[str, float] = {}

    def stage(name: str, start: float) -> None:
        times[name] = round(time.time() - start, 1)
        print(f"[{name}] {times[name]} s", flush=True)

    lines = (DATA / "pool_30k.jsonl").read_text().splitlines()
    picked = random.Random(0).sample(lines, n_rows)
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(parents=True)
    (WORK / "pool.jsonl").write_text("\n".join(picked) + "\n")
    ws = Workspace(WORK / "ws")
    ws.load(WORK / "pool.jsonl")

    t = time.time()
    quality = load_default("quality")
    ws.apply(quality, progress=False)
    ws.embed(progress=False)
    stage("quality_and_embed", t)

    good = ws.select(method="threshold", name="good", sort_by="quality", quantile=0.5)
    bar = good.provenance["info"]["min_score"] if "info" in good.provenance else good.provenance["min_score"]
    seed = ws.select(method="kcenter", name="seed", input_selection="good", budget=n_seed)
    print(f"pool {len(ws)} rows; good {len(good.ids)} (quality >= {bar:.3f}); seed {len(seed.ids)}")

    t = time.time()
    model = ws.fine_tune("seed", WORK / "seed-model", device="cpu", progress=False, epochs=2, max_length=512)
    stage("fine_tune_seed", t)

    others = [i for i in good.ids if i not in set(seed.ids)]
    t = time.time()
    engine = VLLMBackend(model)
    try:
        ws.apply(Judge("answer", engine, column="seed_answer", params={"max_tokens": max_tokens}), others,
                 progress=False)
    finally:
        engine.close()
    stage("answers", t)
    answers = ws.column("seed_answer", others)
    failed = sum(a is None or a[0] is None for a in answers)
    failure_codes = Counter(f.code.value for fails in ws.failures("seed_answer", others) for f in fails)
    tokens = ws.column_provenance("seed_answer").get("tokens") or {}

    t = time.time()
    ws.apply(quality.reading_replies("seed_answer"), others, progress=False)
    stage("judge_answers", t)
    answer_scores = np.array([v if v is not None else np.nan for v in ws.row_values("seed_answer_quality", others)])
    pool_scores = np.array(ws.row_values("quality", others), dtype=float)

    mods = ws.select(method="necessity", name="mods", input_selection="good", seed="seed",
                     answer_score="seed_answer_quality", max_answer_score=bar, budget=budget, answers="seed_answer")
    reasons = {f"{d}/{r}": n for (d, r), n in mods.reasons().items()}
    necessary = mods.provenance.get("necessary_rows", mods.provenance.get("info", {}).get("necessary_rows"))
    print(f"answers: {len(others)} rows, {failed} without an answer {dict(failure_codes)}, tokens {tokens}")
    print(f"answer quality mean {np.nanmean(answer_scores):.3f} (median {np.nanmedian(answer_scores):.3f}) vs the "
          f"pool's replies on the same rows {pool_scores.mean():.3f}; answers scoring below the bar: {necessary}")
    print(f"selection mods: {len(mods.ids)} rows; reasons {reasons}")
    by_id = {r["id"]: r for r in mods.rows()}
    convs = dict(zip(others, ws.conversations(others), strict=True))
    for label, want in (("necessary (added)", lambda r: r["detail"].get("part") == "necessity"),
                        ("answered well", lambda r: r["reason"] == "answered_well")):
        shown = [i for i in others if i in by_id and want(by_id[i])][:3]
        for rid in shown:
            k = others.index(rid)
            print(f"--- {label}: answer {answer_scores[k]:.2f}, pool reply {pool_scores[k]:.2f}")
            print("  instruction:", json.dumps(convs[rid][0]["content"][:160]))
            print("  seed answer:", json.dumps(((answers[k] or [None])[0] or "")[:200]))
    print(f"RESULT rows={len(ws)} good={len(good.ids)} seed={len(seed.ids)} answered={len(others) - failed} "
          f"truncated={failure_codes.get('truncated', 0)} max_tokens={max_tokens} "
          f"answer_quality_mean={np.nanmean(answer_scores):.3f} pool_quality_mean_same_rows={pool_scores.mean():.3f} "
          f"necessary={necessary} unfinished={mods.provenance['unfinished_answers']} selected={len(mods.ids)} "
          + " ".join(f"{k}_s={v}" for k, v in times.items()))


if __name__ == "__main__":  # vLLM's engine spawns a process
    main()
