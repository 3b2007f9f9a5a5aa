"""Do sampling penalties let a small seed model finish its answers? (MoDS necessity on a 135M model)

evals/run_mods.py found that SmolLM2-135M fine-tuned on a seed answers most rows with a greedy loop that
never stops: 107 of 240 at 768 tokens here, 5,240 of 6,000 on the GPU, so "necessary" came to mean "answered
at all". This runs the ``answer`` prompt on the same seed model and the same rows with the shipped greedy
params and with repetition / frequency penalties (request params the in-process engine now honours), and
reports per setting: answers that finished within max_tokens, the mean completion tokens, how many of the
unfinished end in a loop (the heuristics' ``repeated_tail``), and the shipped quality scorer's mean over the
finished answers beside the pool's own replies to the same rows.

Needs evals/run_mods.py's workspace and seed model (``MODS_WORK``, default /tmp/mods_run).

    python evals/answer_penalties.py        (log: evals/results/answer_penalties.log)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

WORK = Path(os.environ.get("MODS_WORK", "/tmp/mods_run"))
ROWS = int(os.environ.get("PENALTY_ROWS", 64))
MAX_TOKENS = int(os.environ.get("PENALTY_MAX_TOKENS", 512))
SETTINGS = {  # name -> request params over the answer prompt's own (temperature 0)
    "greedy": {},
    "repetition_1.15": {"repetition_penalty": 1.15},
    "repetition_1.3": {"repetition_penalty": 1.3},
    "frequency_0.5": {"frequency_penalty": 0.5},
}


def main() -> None:
    from curate.codes import FailureCode
    from curate.defaults import HEURISTICS
    from curate.llm.backends import VLLMBackend
    from curate.llm.judges import Judge
    from curate.scorers import load_default
    from curate.select.heuristics import looping_tail
    from curate.session import Workspace

    ws = Workspace.open(WORK / "ws")
    seed = set(ws.selection("seed").ids)
    rows = [i for i in ws.selection("good").ids if i not in seed][:ROWS]
    quality = load_default("quality")
    pool = float(np.mean(ws.row_values("quality", rows)))
    print(f"{len(rows)} good rows the seed model did not train on; seed model {WORK / 'seed-model'}; "
          f"max_tokens {MAX_TOKENS}; pool replies' quality on them {pool:.3f}")
    engine = VLLMBackend(WORK / "seed-model")
    results = {}
    try:
        for name, params in SETTINGS.items():
            column = f"answer_{name.replace('.', '_')}"
            start = time.time()
            ws.apply(Judge("answer", engine, column=column, params={"max_tokens": MAX_TOKENS, **params}), rows,
                     progress=False)
            seconds = time.time() - start
            ws.apply(quality.reading_replies(column), rows, progress=False)
            fails = [f[0] if f else None for f in ws.failures(column, rows)]
            cut = [f for f in fails if f is not None and f.code is FailureCode.TRUNCATED]
            looping = sum(looping_tail(f.raw or "", HEURISTICS.max_repeated_tail_words) is not None for f in cut)
            scores = [v for v in ws.row_values(f"{column}_quality", rows) if v is not None]
            tokens = ws.column_provenance(column).get("tokens") or {}
            results[name] = {"finished": len(rows) - len(cut), "unfinished_looping": looping,
                             "quality_finished": float(np.mean(scores)) if scores else float("nan"),
                             "completion_tokens": tokens.get("completion", tokens.get("completion_tokens")),
                             "seconds": round(seconds, 1)}
            r = results[name]
            print(f"{name:16s} params {params}: finished {r['finished']}/{len(rows)}, unfinished ending in a loop "
                  f"{looping}/{len(cut)}, quality of the finished {r['quality_finished']:.3f}, "
                  f"tokens {r['completion_tokens']}, {r['seconds']} s", flush=True)
            sample = next((a for a in ws.column(column, rows) if a and a[0]), [""])[0]
            print(f"  first finished answer: {sample[:160]!r}")
    finally:
        engine.close()
    print(f"RESULT rows={len(rows)} max_tokens={MAX_TOKENS} pool_quality={pool:.3f} " + " ".join(
        f"{k}:finished={v['finished']},looping={v['unfinished_looping']},quality={v['quality_finished']:.3f}"
        for k, v in results.items()))


if __name__ == "__main__":  # vLLM's engine spawns a process
    main()
