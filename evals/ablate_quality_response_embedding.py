"""The response's own MiniLM embedding as features of the quality ridge: does it lift held-out and zero-shot
agreement with GPT-4 enough to pay for a second embedding pass in ``curate run`` (issue 13)?

    python evals/ablate_quality_response_embedding.py [--data ../shared/data]

The shipped quality ridge (evals/train_default_scorers.py) embeds only the instruction, which admission computes
anyway; the response enters through its length and text statistics. This refits the same head (same split,
sources, pair loss) with the response's embedding added (plus the instruction-response cosine), for each
embedding weight of a small grid, chosen on the val groups, and prints the test figures per source and
zero-shot (one source left out of training, measured on all of its rows) beside the shipped features and
response length. The 18,117 labelled responses are embedded in one call and cached (evals cache): ~1 h on 2 CPU
cores, 8 s on an H200 (``--export`` writes them, ``--vectors`` stores the vectors made there; checked against
this machine's ``curate.embed.encode``: cosine >= 0.999999 on 100 of them). Last line: ``RESULT ...``.

Measured (evals/results/issue13_quality_response_embedding.log): no. The val choice (weight 0.05) leaves MT-bench
and pairs where they were and lowers every zero-shot figure: MT-bench all rows 0.366 (shipped 0.383), Auto-J
0.237 (0.247), pairs within one instruction 0.664 / 0.631 (0.687 / 0.638). Not adopted: ``curate run`` keeps
embedding instructions only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import quality_ablation as Q  # noqa: E402
import scorer_label_data as D  # noqa: E402
import train_default_scorers as T  # noqa: E402

from curate.scorers import Scorer  # noqa: E402

SHIPPED = "shipped features (instruction embedded)"
WEIGHTS = (0.02, 0.05, 0.2)  # embedding weight (penalty scale of the embedding columns) tried with the response embedded


def make_with_response(name: str, **cfg) -> Scorer:
    return Scorer(reads=["instruction", "response"], head="ridge", features=T.FEATURES,
                  embed_inputs=["instruction", "response"], label_range=(1, 10), output_range=(1, 6), name="quality",
                  imitates=T.IMITATES["quality"], embedding_weight=cfg.get("embedding_weight", 1.0),
                  alpha=cfg.get("alpha", 10.0))


_RESPONSES: dict[str, np.ndarray] = {}


def labelled_responses(pairs, singles) -> list[str]:
    """Every labelled response, once, sorted: embedded in one call (and one cache file), then looked up."""
    return sorted({r["response"] for rows in singles.values() for r in rows} | {q[s] for q in pairs for s in "ab"})


def embed_responses(texts: list[str]) -> None:
    _RESPONSES.update(zip(texts, T.encode_cached(texts), strict=True))


def features_with_response(scorer: Scorer, instructions: list[str], responses: list[str] | None) -> np.ndarray:
    emb = {"instruction": T.embedded(instructions), "response": np.stack([_RESPONSES[t] for t in responses])}
    return scorer.featurize(scorer.measure({"instruction": instructions, "response": responses}, emb))


def export_command(args: argparse.Namespace) -> None:
    """Write the labelled responses to embed elsewhere (the lent GPU), in the order ``encode_cached`` keys."""
    pairs, singles = T.quality_sets(args.data)
    texts = labelled_responses(pairs, singles)
    args.export.parent.mkdir(parents=True, exist_ok=True)
    args.export.write_text("\n".join(json.dumps(t) for t in texts) + "\n")
    print(f"{len(texts):,} responses -> {args.export}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=D.DATA)
    ap.add_argument("--export", type=Path, help="only write the responses to embed (JSON lines) to this file")
    ap.add_argument("--vectors", type=Path, help="their embeddings (.npy, rows in --export order), made elsewhere: "
                    "stored in the evals cache as if computed here")
    args = ap.parse_args()
    if args.export:
        return export_command(args)
    pairs, singles = T.quality_sets(args.data)
    texts = labelled_responses(pairs, singles)
    if args.vectors:
        T.CACHE.mkdir(parents=True, exist_ok=True)
        np.save(T.cache_path(texts), np.load(args.vectors).astype(np.float32))
    embed_responses(texts)
    base_make, base_features = T.make, T._features
    shipped = dict(T.GRID["quality"][0])
    t0 = time.perf_counter()
    rows = {SHIPPED: Q.measure(shipped, pairs, singles)}
    T.make = lambda name, **cfg: make_with_response(name, **cfg) if name == "quality" else base_make(name, **cfg)
    T._features = features_with_response
    try:
        for w in WEIGHTS:
            rows[f"+ response embedding, weight {w}"] = Q.measure(dict(shipped, embedding_weight=w), pairs, singles)
    finally:
        T.make, T._features = base_make, base_features
    print(f"({time.perf_counter() - t0:.0f} s; zero-shot = source left out of training, all of its rows)")
    Q.print_rows(rows, SHIPPED)

if __name__ == "__main__":
    main()
