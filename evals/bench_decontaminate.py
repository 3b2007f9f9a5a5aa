"""Benchmark: the ``decontaminate`` selector on a real pool against evaluation prompts, beside the definition.

    python evals/bench_decontaminate.py [--data ../shared/data] [--workspace /tmp/curate-decontaminate] [--rows N]

Pool: ``pool_30k.jsonl`` (loaded into ``--workspace`` once). Targets: the 805 AlpacaEval prompts and the 160
MT-bench turns. The selector (``curate.select.decontaminate``) indexes the targets' word runs by their first
``min_words`` words and walks each message once. The reference is the definition written directly: every
run of every length a target can match (13 words, and each shorter target's own length) of every message,
intersected with the targets' runs. Both run in this process on the same rows; the decisions must be the
same row for row. Prints the contaminated rows found (a sample, with the shared words) and a ``RESULT``
line: rows, contaminated (also with ``min_overlap=0.5``, and with the embedding test ``curate run`` adds, whose
extra rows are printed as a sample to read), agreement, seconds of each and their ratio. The machine is shared: times are
indicative.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.defaults import DECONTAMINATE  # noqa: E402
from curate.select.decontaminate import words  # noqa: E402
from curate.session import Workspace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def read_targets(data: Path) -> list[str]:
    alpaca = data / "alpaca_eval_805_prompts.jsonl"
    mtbench = data / "mt_bench_80_questions.jsonl"
    for path in (alpaca, mtbench):
        if not path.exists():
            raise SystemExit(f"evaluation prompts not found: {path} is absent; nothing measured")
    texts = [json.loads(ln)["instruction"] for ln in alpaca.read_text().splitlines() if ln.strip()]
    for ln in mtbench.read_text().splitlines():
        if ln.strip():
            texts.extend(json.loads(ln)["turns"])
    return texts


def by_definition(conversations: list[list[dict]], targets: list[str], ngram: int, min_words: int,
                  min_overlap: float = 0.0) -> list[bool]:
    """Contaminated or not, straight from the definition: each target's runs of its own matchable length (a target
    under ``min_words`` words: a message that says exactly it), and the share of them a row's messages hold
    (with ``min_overlap`` 0: any one). The selector's tests compare against this too."""
    def runs(w: list[str], n: int) -> set[tuple[str, ...]]:
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}

    own: list[tuple[set[tuple[str, ...]], int]] = []  # each matchable target's runs and their length
    short: set[tuple[str, ...]] = set()
    for t in targets:
        w = words(t)
        if len(w) >= min_words:
            own.append((runs(w, min(ngram, len(w))), min(ngram, len(w))))
        elif w:
            short.add(tuple(w))
    every = {}  # length -> the runs of every target of that length
    for r, n in own:
        every.setdefault(n, set()).update(r)
    out = []
    for conversation in conversations:
        message_words = [words(m["content"]) for m in conversation]
        held = {n: set().union(*(runs(w, n) for w in message_words)) for n in every}
        if any(tuple(w) in short for w in message_words):
            out.append(True)
        elif min_overlap == 0:
            out.append(any(held[n] & every[n] for n in every))
        else:
            out.append(any(len(r & held[n]) / len(r) >= min_overlap for r, n in own))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--workspace", type=Path, default=None,
                    help="default /tmp/curate-decontaminate (with --rows N: /tmp/curate-decontaminate-N)")
    ap.add_argument("--rows", type=int, default=None, help="the first N lines of the pool only (default: all)")
    args = ap.parse_args()
    pool = args.data / "pool_30k.jsonl"
    if not pool.exists():
        raise SystemExit(f"pool not found: {pool} is absent; nothing measured")
    targets = read_targets(args.data)
    folder = args.workspace or Path("/tmp/curate-decontaminate" + (f"-{args.rows}" if args.rows else ""))
    ws = Workspace(folder)
    if not len(ws):
        if args.rows:  # a slice beside the workspace, outside the project
            with pool.open() as lines:
                head = [line for _, line in zip(range(args.rows), lines, strict=False)]
            pool = folder.with_name(folder.name + "-pool.jsonl")
            pool.write_text("".join(head))
        ws.load(pool, on_error="skip")
    conversations = ws.conversations()
    print(f"pool {len(ws):,} rows; {len(targets):,} target texts (AlpacaEval prompts + MT-bench turns)", flush=True)

    t0 = time.perf_counter()
    sel = ws.select(method="decontaminate", name="decontaminated", target=targets)
    ours_s = time.perf_counter() - t0
    ours = {rid: d == "rejected" for rid, d in zip(sel.table.column("id").to_pylist(),
                                                    sel.table.column("decision").to_pylist(), strict=True)}
    t0 = time.perf_counter()
    ref = by_definition(conversations, targets, DECONTAMINATE.ngram, DECONTAMINATE.min_words)
    ref_s = time.perf_counter() - t0
    same = sum(ours[rid] == hit for rid, hit in zip(ws.ids, ref, strict=True))
    prov = sel.provenance
    print(f"selector: {sum(ours.values()):,} contaminated in {ours_s:.1f} s ({prov['target_runs']:,} target runs, "
          f"{prov['targets_matched_whole']} targets under {prov['min_words']} words matched as whole messages)")
    print(f"definition: {sum(ref):,} contaminated in {ref_s:.1f} s")
    rows = [r for r in sel.table.to_pylist() if r["decision"] == "rejected"]
    for r in rows[:8]:
        d = json.loads(r["detail"])
        print(f"  {r['id']}: target {d['target']} (overlap {d['overlap']:.2f}): \"{d['shared_words']}\"")
    overlaps = sorted(json.loads(r["detail"])["overlap"] for r in rows)
    print("share of the target's word runs each dropped row holds: quartiles "
          + ", ".join(f"{overlaps[int(q * (len(overlaps) - 1))]:.2f}" for q in (0.25, 0.5, 0.75)))
    half = ws.select(method="decontaminate", name="decontaminated_half", target=targets, min_overlap=0.5)
    n_half = half.decisions().get("rejected", 0)
    print(f"with min_overlap 0.5 (more than half of one target in the row): {n_half:,} contaminated")
    if "default" not in ws.embedding_sets:
        ws.embed(progress=False)
    t0 = time.perf_counter()
    near = ws.select(method="decontaminate", name="decontaminated_near", target=targets,
                     max_cosine_similarity=DECONTAMINATE.max_cosine_similarity)
    near_s = time.perf_counter() - t0
    by_cosine = [r for r in near.table.to_pylist() if r["decision"] == "rejected" and "similarity" in r["detail"]]
    print(f"with max_cosine_similarity {DECONTAMINATE.max_cosine_similarity} (curate run's setting): "
          f"{near.decisions().get('rejected', 0):,} contaminated in {near_s:.1f} s, {len(by_cosine):,} of them by "
          "the embedding test alone; a sample:")
    for r in by_cosine[:: max(1, len(by_cosine) // 10)][:10]:
        d = json.loads(r["detail"])
        text = ws.conversations([r["id"]])[0][0]["content"]
        print(f"  {d['similarity']:.3f} row {text[:70]!r}\n        eval {d['target_text'][:70]!r}")
    print(f"RESULT rows={len(ws)} targets={len(targets)} contaminated={sum(ours.values())} "
          f"contaminated_min_overlap_half={n_half} contaminated_with_cosine={near.decisions().get('rejected', 0)} "
          f"agreement_with_definition={same / len(ws):.4f} selector_s={ours_s:.2f} definition_s={ref_s:.2f} "
          f"speedup={ref_s / ours_s:.2f}")


if __name__ == "__main__":
    main()
