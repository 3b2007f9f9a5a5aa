"""Readers for the real judge-label sets the default scorers learn from (shared by training and benchmark).

complexity: FLASK 1,740 instructions with GPT-4-annotated difficulty, five ordered levels
            (simple lifestyle < advanced lifestyle < formal education < major level < expert level);
            the two rows marked -1 (unknown) are dropped. Labels 1..5.
quality:    Auto-J 960 Chatbot-Arena (query, response) pairs with GPT-4 quality ratings 1..10.

Both map linearly onto DEITA's 1-6 scale: complexity 1 + (level - 1) * 5/4, quality 1 + (rating - 1) * 5/9.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
FLASK_LEVELS = ["simple lifestyle knowledge", "advanced lifestyle knowledge", "formal education knowledge",
                "major level knowledge", "expert level knowledge"]
FLASK = "flask_1740_difficulty_skills.jsonl"
AUTOJ = "autoj_960_gpt4_quality.jsonl"

SPECS: dict[str, dict[str, Any]] = {
    "complexity": {
        "file": FLASK, "reads": ["instruction"], "label_range": (1, 5), "output_range": (1, 6),
        "imitates": {"judge": "complexity", "model": "gpt-4", "label_set": "FLASK instruction difficulty (5 ordered levels)",
                     "source": FLASK, "scale_map": "level 1..5 -> 1 + (level - 1) * 5/4 on DEITA's 1-6 scale"},
    },
    "quality": {
        "file": AUTOJ, "reads": ["instruction", "response"], "label_range": (1, 10), "output_range": (1, 6),
        "imitates": {"judge": "quality", "model": "gpt-4", "label_set": "Auto-J GPT-4 quality ratings 1-10 (Chatbot Arena)",
                     "source": AUTOJ, "scale_map": "rating 1..10 -> 1 + (rating - 1) * 5/9 on DEITA's 1-6 scale"},
    },
}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def require(data: Path, name: str) -> Path:
    path = Path(data) / name
    if not path.exists():
        sys.exit(f"real judge labels not found: {path} is absent (pass --data DIR holding {name}); nothing measured")
    return path


def load_labels(name: str, data: Path = DATA) -> tuple[list[dict[str, str]], list[float], list[str]]:
    """(rows, labels, groups) for a default scorer; rows with the same group (query) must stay together."""
    records = _read_jsonl(require(data, SPECS[name]["file"]))
    if name == "complexity":
        records = [r for r in records if r["difficulty"] in FLASK_LEVELS]
        rows = [{"instruction": r["instruction"]} for r in records]
        labels = [float(FLASK_LEVELS.index(r["difficulty"]) + 1) for r in records]
        return rows, labels, [r["instruction"] for r in records]
    rows = [{"instruction": r["query"], "response": r["response"]} for r in records]
    return rows, [float(r["gpt4_score"]) for r in records], [r["query"] for r in records]


CACHE = Path.home() / ".cache" / "curate" / "evals"


def cache_path(scorer, texts: dict[str, list[str]], cache: Path = CACHE) -> Path:
    import hashlib

    h = hashlib.sha256(str(scorer.embed_model or "all-MiniLM-L6-v2").encode())
    for name in scorer.reads:
        h.update(name.encode())
        for t in texts[name]:
            h.update(hashlib.sha256(t.encode()).digest())
    return Path(cache) / f"embed-{h.hexdigest()[:24]}.npz"


def cached_embed(scorer, rows: list[dict[str, str]], cache: Path = CACHE) -> dict:
    """``scorer.embed(rows)`` with the MiniLM embeddings kept on disk, keyed by the texts and the model.

    Only the embeddings are cached (the slow part); lengths and text statistics are recomputed.
    """
    import numpy as np

    from curate.embed import encode
    from curate.scorers import input_texts

    texts = input_texts(rows, scorer.reads)
    path = cache_path(scorer, texts, cache)
    if path.exists():
        with np.load(path) as z:
            embeddings = {k: z[k] for k in z.files}
    else:
        embeddings = {name: encode(texts[name], model=scorer.embed_model, batch_size=scorer.batch_size)
                      for name in scorer.reads}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, **embeddings)
        tmp.replace(path)
    return scorer.measure(texts, embeddings)
