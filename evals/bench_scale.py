"""Benchmark: `curate run`'s single-process engine against the Ray Data engine (curate/scale).

    python evals/bench_scale.py [--rows 1000000] [--shards 16] [--infer-rows 4000] [--address ADDR]

A synthetic pool (:func:`write_pool`: alpaca rows of random words, with exact repeats, duplicates up to case
and spaces, multi-turn rows, instruction-only rows and malformed lines) is written once under ``--dir`` as
``--shards`` JSONL shards and as one JSONL file holding the same records in the same order. Then, each in
its own process (so peak memory is each engine's own):

* the stages that scale with the pool (read + normalise -> pool, exact dedup) on ``--rows`` rows:
  single process = ``pipeline.load`` + ``pipeline.dedup`` on the one file; Ray = ``RayEngine.load`` +
  ``RayEngine.dedup`` on the shards;
* embedding + scoring (the two shipped scorers and the default embedding set) on the first
  ``--infer-rows`` rows: single process = ``pipeline.score`` + ``pipeline.embed``; Ray = ``RayEngine.score``
  + ``RayEngine.embed`` (one actor per CPU). MiniLM on 2 CPU cores encodes ~100-200 rows/s, so 1M rows
  would take hours per engine; this part runs on a sample, and says so.

Then, in its own process, the CPU embedding backends (torch, onnx, onnx-int8; :func:`embed_backends`) on the
sample's texts: rows/s and agreement with torch (cosine; DEITA admitted ids that differ).

Both engines must write the same pool ids and the same dedup decisions (checked). Peak memory: the
driver process (getrusage), and every Ray worker that read shards or ran inference (their own getrusage,
reported through the data). Without ``--address`` Ray starts on this machine with every CPU.
Prints one ``RESULT`` line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's curate, also in the part processes

WORDS = ("data model train graph sort cache tree vector query index shard merge split token score rank budget "
         "filter kernel batch stream queue lock thread socket parser schema column matrix loss gradient python "
         "rust table join window lambda closure future promise channel buffer pointer heap stack").split()


def write_pool(folder: Path, rows: int, shards: int, seed: int = 0) -> tuple[Path, Path]:
    """``folder/pool.jsonl`` and ``folder/shards/part-*.jsonl`` (the same lines, split in order); reused if present."""
    whole, shard_dir = folder / "pool.jsonl", folder / "shards"
    done = folder / "done.json"
    spec = {"rows": rows, "shards": shards, "seed": seed}
    if done.exists() and json.loads(done.read_text()) == spec:
        return whole, shard_dir
    folder.mkdir(parents=True, exist_ok=True)
    shard_dir.mkdir(exist_ok=True)
    for old in shard_dir.glob("*.jsonl"):
        old.unlink()
    rnd = random.Random(seed)
    per_shard = -(-rows // shards)
    recent: list[str] = []
    with open(whole, "w", encoding="utf-8") as fh:
        out = None
        for i in range(rows):
            if i % per_shard == 0:
                if out:
                    out.close()
                out = open(shard_dir / f"part-{i // per_shard:05d}.jsonl", "w", encoding="utf-8")
            roll = rnd.random()
            words = " ".join(rnd.choices(WORDS, k=rnd.randint(5, 20)))
            answer = " ".join(rnd.choices(WORDS, k=rnd.randint(10, 60))) + "."
            if roll < 0.03 and recent:
                line = rnd.choice(recent)                                  # exact repeat
            elif roll < 0.05 and recent:
                rec = json.loads(rnd.choice(recent))
                key = "instruction" if "instruction" in rec else None
                if key:
                    rec[key] = "  " + rec[key].upper()                     # duplicate up to case and spaces
                line = json.dumps(rec)
            elif roll < 0.10:
                line = json.dumps({"messages": [{"role": "user", "content": f"Explain {words}"},
                                                {"role": "assistant", "content": answer},
                                                {"role": "user", "content": "Shorter?"},
                                                {"role": "assistant", "content": answer[:50]}]})
            elif roll < 0.12:
                line = json.dumps({"instruction": f"Describe {words} ({i})"})
            elif roll < 0.125:
                line = '{"instruction": "truncated'
            else:
                line = json.dumps({"instruction": f"How do I {words}?", "input": "", "output": answer,
                                   "source": f"gen-{i % 7}"})
            recent = (recent + [line])[-100:] if not line.startswith('{"instruction": "truncated') else recent
            fh.write(line + "\n")
            out.write(line + "\n")
        out.close()
    done.write_text(json.dumps(spec))
    return whole, shard_dir


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def part(name: str, source: str, out: Path, address: str | None) -> dict:
    """One engine's stages in this process; returns seconds per stage, rows, peak memory, ids digest."""
    import hashlib

    from curate import pipeline

    run = pipeline.Run(source, out, budget=0, report=False)
    times: dict[str, float] = {}
    engine = None
    if name.startswith("ray"):
        from curate.scale import RayEngine

        engine = RayEngine(address)
        stages = [("load", engine.load), ("dedup", lambda r: engine.dedup(r, pipeline.dedup))]
        if name.endswith("infer"):
            # the text rules run on the driver in both engines (as ``ray_plan`` keeps them); score reads their selection
            stages += [("heuristics", pipeline.text_rules), ("score", lambda r: engine.score(r, pipeline.score)),
                       ("embed", lambda r: engine.embed(r, pipeline.embed))]
    else:
        stages = [("load", pipeline.load), ("dedup", pipeline.dedup)]
        if name.endswith("infer"):
            stages += [("heuristics", pipeline.text_rules), ("score", pipeline.score), ("embed", pipeline.embed)]
    for stage, fn in stages:
        started = time.perf_counter()
        fn(run)
        times[stage] = time.perf_counter() - started
    if engine is not None:
        engine.close()
    ws = run.ws
    dedup = ws.selection("dedup")
    digest = hashlib.sha256(json.dumps([ws.ids, dedup.table.column("decision").to_pylist(),
                                        dedup.table.column("detail").to_pylist()]).encode()).hexdigest()[:16]
    result = {"part": name, "rows": len(ws), "seconds": times, "driver_peak_mb": round(peak_mb()),
              "workers_peak_mb": {k: round(v) for k, v in (engine.workers.items() if engine else [])},
              "ray_parts_s": engine.timings if engine else {},
              "digest": digest, "duplicates": dedup.decisions().get("duplicate", 0)}
    if name.endswith("infer"):
        import numpy as np

        result["scores_digest"] = float(np.nansum(ws.column_array("quality")) + np.nansum(ws.column_array("complexity")))
    return result


def embed_backends(workspace: Path) -> dict:
    """The CPU embedding backends on the inference sample's texts (the default embedding text), in this
    process: texts/s each (after a warm-up; the ONNX export is made or loaded first), cosine of each to
    torch's vectors (mean, min), and DEITA admission (tau 0.9, random scores, budget a fifth of the rows)
    on each backend's vectors: admitted ids that differ from torch's."""
    import numpy as np

    from curate.defaults import DEITA, EMBED
    from curate.embed.encoder import encode
    from curate.rows import row_text
    from curate.select.admission import admit
    from curate.storage.workspace import Workspace

    texts = [row_text(c, EMBED.text) for c in Workspace.open(workspace).conversations()]
    scores = np.random.default_rng(0).random(len(texts))
    out, vecs = {}, {}
    for backend in ("torch", "onnx", "onnx-int8"):
        encode(texts[:64], device="cpu", backend=backend)  # warm-up: the model (and the export at first use)
        started = time.perf_counter()
        vecs[backend] = encode(texts, device="cpu", backend=backend)
        out[f"{backend}_rows_s"] = len(texts) / (time.perf_counter() - started)
    base = admit(vecs["torch"], scores, None, DEITA.max_cosine_similarity, len(texts) // 5)
    for backend in ("onnx", "onnx-int8"):
        cos = (vecs[backend] * vecs["torch"]).sum(1)
        other = admit(vecs[backend], scores, None, DEITA.max_cosine_similarity, len(texts) // 5)
        out[f"{backend}_cos_mean"], out[f"{backend}_cos_min"] = float(cos.mean()), float(cos.min())
        out[f"{backend}_deita_differ"] = len(set(base.admitted.tolist()) - set(other.admitted.tolist()))
    out["rows"], out["peak_mb"] = len(texts), round(peak_mb())
    return out


def run_part(name: str, source: Path, out: Path, address: str | None) -> dict:
    cmd = [sys.executable, __file__, "--part", name, "--source", str(source), "--out", str(out)]
    if address:
        cmd += ["--address", address]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {name}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--shards", type=int, default=16)
    ap.add_argument("--infer-rows", type=int, default=4000)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/curate-bench-scale"))
    ap.add_argument("--address", default=None)
    ap.add_argument("--part", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--source", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part == "embed-backends":
        print(json.dumps(embed_backends(args.out)))
        return
    if args.part:
        print(json.dumps(part(args.part, args.source, args.out, args.address)))
        return
    import shutil

    started = time.perf_counter()
    whole, shards = write_pool(args.dir / f"pool-{args.rows}", args.rows, args.shards)
    small_whole, small_shards = write_pool(args.dir / f"pool-{args.infer_rows}", args.infer_rows, 4)
    print(f"pools written in {time.perf_counter() - started:.0f}s ({whole.stat().st_size / 2**20:.0f} MiB); "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    runs = args.dir / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    sp = run_part("single", whole, runs / "single", None)
    rs = run_part("ray", shards, runs / "ray", args.address)
    assert sp["digest"] == rs["digest"], "the engines wrote different pools or dedup decisions"
    spi = run_part("single-infer", small_whole, runs / "single-infer", None)
    rsi = run_part("ray-infer", small_shards, runs / "ray-infer", args.address)
    assert spi["digest"] == rsi["digest"] and abs(spi["scores_digest"] - rsi["scores_digest"]) < 1e-3
    eb = run_part("embed-backends", small_whole, runs / "single-infer" / "workspace", None)

    def rate(res: dict, stages: tuple[str, ...]) -> float:
        return res["rows"] / sum(res["seconds"][s] for s in stages)

    worker_peak = max([v for res in (rs, rsi) for k, v in res["workers_peak_mb"].items() if not k.startswith("driver")],
                      default=0)
    print(f"RESULT rows={sp['rows']} single_read_dedup_rows_s={rate(sp, ('load', 'dedup')):.0f} "
          f"ray_read_dedup_rows_s={rate(rs, ('load', 'dedup')):.0f} "
          f"single_load_s={sp['seconds']['load']:.1f} ray_load_s={rs['seconds']['load']:.1f} "
          f"single_dedup_s={sp['seconds']['dedup']:.1f} ray_dedup_s={rs['seconds']['dedup']:.1f} "
          f"infer_rows={spi['rows']} single_embed_score_rows_s={rate(spi, ('score', 'embed')):.1f} "
          f"ray_embed_score_rows_s={rate(rsi, ('score', 'embed')):.1f} "
          f"single_driver_peak_mb={sp['driver_peak_mb']} ray_driver_peak_mb={rs['driver_peak_mb']} "
          f"ray_worker_peak_mb={worker_peak} same_pool_and_dedup=True "
          f"embed_torch_rows_s={eb['torch_rows_s']:.1f} embed_onnx_rows_s={eb['onnx_rows_s']:.1f} "
          f"embed_onnx_int8_rows_s={eb['onnx-int8_rows_s']:.1f} onnx_speedup={eb['onnx_rows_s'] / eb['torch_rows_s']:.2f}x "
          f"onnx_int8_speedup={eb['onnx-int8_rows_s'] / eb['torch_rows_s']:.2f}x "
          f"onnx_cos_mean/min={eb['onnx_cos_mean']:.6f}/{eb['onnx_cos_min']:.6f} "
          f"onnx_int8_cos_mean/min={eb['onnx-int8_cos_mean']:.5f}/{eb['onnx-int8_cos_min']:.5f} "
          f"deita_budget={eb['rows'] // 5}_ids_differ_onnx/int8={eb['onnx_deita_differ']}/{eb['onnx-int8_deita_differ']} "
          f"cpus={os.cpu_count()}", flush=True)


if __name__ == "__main__":
    main()
