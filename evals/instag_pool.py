"""InsTag on a whole pool the way curate does it at scale (issue 15's downstream InsTag row).

An LLM tags a random sample of the workspace's rows (``curate tag`` on those ids: the InsTag prompt, raw tags
normalised), a small tagger (logistic heads on MiniLM embeddings of the user turns,
:func:`curate.tags.train_tagger`) learns those tags and tags every row (column ``tags_predicted``), and InsTag's
complexity-first diverse sampling selects ``--budget`` rows as selection ``instag``.

    python3 evals/instag_pool.py WORKSPACE [--sample 2000] [--budget 2000] [--backend vllm-batch|local]
    python3 evals/instag_pool.py WORKSPACE --export-requests in.jsonl      (then, on a GPU machine without vLLM:
        python3 evals/hf_run_batch.py -i in.jsonl -o out.jsonl --model SMOLLM2_FOLDER)
    python3 evals/instag_pool.py WORKSPACE --replay out.jsonl               (tags from those outputs, then the rest)

The default tagger LLM is the packaged SmolLM2-135M-Instruct (the only LLM this machine has): its tags are
much weaker than InsTag's (a 7B tagger or GPT-4), which the closing figures must say. Prints the tagger's
held-out agreement with the LLM's tags and a RESULT line with the selection's tag coverage vs random.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def export_backend(path: Path):
    """vLLM's batch backend that only writes its requests (the batch JSONL its runner reads) to ``path``."""
    from curate.codes import FailureCode
    from curate.llm.base import failure_result
    from curate.llm.batch import batch_line
    from curate.llm.local import SERVED_NAME
    from curate.llm.vllm_batch import VLLMBatchBackend

    class Export(VLLMBatchBackend):
        written = 0

        async def run(self, requests, on_done) -> None:
            with open(path, "ab") as fh:
                fh.writelines(batch_line(r, self.model) for r in requests)
            self.written += len(requests)
            for r in requests:  # answered later, elsewhere: these failures stay in memory (no workspace here)
                on_done(r, failure_result("exported for a batch run elsewhere", FailureCode.MODEL_ERROR))

    return Export(model_dir=path.parent, served_name=SERVED_NAME)


def replay_backend(path: Path):
    """vLLM's batch backend reading a runner's output file made elsewhere (evals/hf_run_batch.py on the GPU
    machine) instead of running vLLM here: curate's own batch reader and response cache take the lines."""
    from curate.llm.local import SERVED_NAME
    from curate.llm.vllm_batch import VLLMBatchBackend

    class Replay(VLLMBatchBackend):
        kind = "vllm-batch-replay"

        def command(self, input_path: Path, output_path: Path) -> list[str]:
            return [sys.executable, "-c", f"import shutil; shutil.copy({str(path)!r}, {str(output_path)!r})"]

        def describe(self) -> dict:
            return {"backend": self.kind, "model": self.model, "output_file": str(path),
                    "runner": "evals/hf_run_batch.py (transformers, greedy, no guided decoding)"}

    return Replay(model_dir=path.parent, served_name=SERVED_NAME)


def export_requests(ws, sample: list[str], path: Path) -> int:
    """Write the InsTag requests of ``sample``'s user turns (as the tagger would send them) to ``path``."""
    from curate.llm.runner import run_prompt
    from curate.rows import turns
    from curate.tags import Tagger

    path.unlink(missing_ok=True)
    prompt = Tagger().prompt
    variables = [{"instruction": t.instruction} for conv in ws.conversations(sample) for t in turns(conv)]
    backend = export_backend(path)
    run_prompt(prompt, variables, backend, ws.cache_dir, progress=False, validation_retries=0)
    return backend.written


def tag_sample(ws, sample: list[str], kind: str, replay: Path | None):
    """The InsTag LLM tagger over ``sample``: vLLM's batch runner here, a replayed runner output, or the
    embedded vLLM server."""
    from curate.tags import Tagger

    if replay is not None:
        return ws.apply(Tagger(replay_backend(replay)), ids=sample, retry_failed=True)
    if kind == "vllm-batch":
        from curate.llm.vllm_batch import VLLMBatchBackend

        return ws.apply(Tagger(VLLMBatchBackend()), ids=sample)
    from curate.llm.local import LocalServer

    server = LocalServer()
    try:
        return ws.apply(Tagger(server.lazy_backend(concurrency=32)), ids=sample)
    finally:
        server.stop()


def main() -> None:
    from curate import tags as instag
    from curate.session import Workspace

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--sample", type=int, default=2000)
    ap.add_argument("--budget", type=int, default=2000)
    ap.add_argument("--backend", default="vllm-batch", choices=("vllm-batch", "local"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export-requests", type=Path, help="only write the sample's tagger requests (batch JSONL) here")
    ap.add_argument("--replay", type=Path, help="a batch runner's output for those requests (evals/hf_run_batch.py)")
    args = ap.parse_args()

    ws = Workspace.open(args.workspace)
    ids = ws.ids
    sample = [ids[i] for i in sorted(np.random.default_rng(args.seed).permutation(len(ids))[:args.sample])]
    if args.export_requests:
        n = export_requests(ws, sample, args.export_requests)
        print(f"wrote {n} requests for {len(sample)} rows to {args.export_requests} (cached ones left out)")
        return
    t = time.time()
    res = tag_sample(ws, sample, args.backend, args.replay)
    print(f"LLM tagging: {len(sample)} sampled rows, {res.computed} computed, {res.failed} failed, "
          f"{time.time() - t:.0f} s", flush=True)
    norm = instag.normalize(ws)
    for s in norm.report:
        print(f"  normalise {s.step}: {s.tags_in} -> {s.tags_out} tags {s.params}")
    clf, agreement = instag.train_tagger(ws, tags_column="tags", seed=args.seed)
    print("small tagger held-out agreement with the LLM's tags: "
          + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in agreement.items()))
    t = time.time()
    instag.predict_tags(ws, clf, column="tags_predicted")
    print(f"tagged {len(ids)} rows with the small tagger in {time.time() - t:.0f} s")
    sel = ws.select(method="instag", name="instag", budget=args.budget, tags_column="tags_predicted")
    rep = instag.coverage_report(ws, "instag", tags_column="tags_predicted", seeds=10)
    print(f"RESULT instag_pool rows={len(ids)} llm_tagged={len(sample)} labels={agreement['labels']} "
          f"tagger_micro_f1={agreement['micro_f1']:.3f} kept={len(sel.ids)} coverage={rep['coverage']:.3f} "
          f"random_coverage={rep['random_coverage_mean']:.3f} tags_per_query={rep['tags_per_query']:.2f}")


if __name__ == "__main__":
    main()
