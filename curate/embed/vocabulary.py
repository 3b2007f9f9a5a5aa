"""How much of a text set an embedding model's vocabulary covers: the share of ``[UNK]`` tokens.

The packaged all-MiniLM-L6-v2 has an English WordPiece vocabulary: most Chinese, Japanese, Arabic and Hindi text
becomes ``[UNK]`` or single letters, and unrelated texts of one such language then embed close together (DEITA
admission and semantic dedup take them for near-duplicates). The embedding step records the share and warns above
``EMBED.max_unknown_token_share``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from curate.defaults import EMBED
from curate.embed.encoder import TEXT_CHARS, model_folder

TOKENIZER_BATCH = 4096  # texts tokenised at a time


def _tokenizer(model: str | None):
    """(tokenizer, unknown token id, special token ids) of ``model``'s ``tokenizer.json``; None when there is none
    with an unknown token to read (a Hub name; a byte-level BPE model has no unknown token)."""
    try:
        path = Path(model_folder(model)) / "tokenizer.json"
    except ValueError:  # a Hub name: no folder to read
        return None
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    spec = json.loads(path.read_text(encoding="utf-8")).get("model", {})
    tokenizer = Tokenizer.from_file(str(path))
    if spec.get("type") == "Unigram":  # XLM-R and other SentencePiece vocabularies name the token by its id
        unk_id = spec.get("unk_id")
    else:  # WordPiece, BPE: by its text
        unk_id = tokenizer.token_to_id(spec["unk_token"]) if spec.get("unk_token") else None
    if unk_id is None:
        return None
    tokenizer.no_truncation()
    tokenizer.no_padding()
    special = {tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "<s>", "</s>")} - {None}
    return tokenizer, unk_id, special


def _unknown_counts(texts: list[str], model: str | None):
    """Each text's (tokens, unknown tokens) under ``model``'s tokenizer (first ``TEXT_CHARS`` characters), or None."""
    found = _tokenizer(model)
    if found is None:
        return None
    tokenizer, unk_id, special = found
    counts: list[tuple[int, int]] = []
    for start in range(0, len(texts), TOKENIZER_BATCH):
        for enc in tokenizer.encode_batch([t[:TEXT_CHARS] for t in texts[start:start + TOKENIZER_BATCH]]):
            ids = [i for i in enc.ids if i not in special]
            counts.append((len(ids), ids.count(unk_id)))
    return counts


def unknown_token_share(texts: list[str], model: str | None,
                        sample: int = EMBED.vocabulary_sample_texts) -> float | None:
    """The share of the tokens of ``texts`` (up to ``sample`` of them, evenly spaced; each text's first
    ``TEXT_CHARS`` characters) that the tokenizer of ``model`` (the packaged default or a folder) maps to its unknown
    token (``unk_token`` in ``tokenizer.json``'s model, ``unk_id`` in a Unigram one); None when there is no
    ``tokenizer.json`` with one to read (a Hub name; a byte-level BPE model has no unknown token). Scripts the vocabulary splits into single letters (Arabic, Devanagari) are not counted."""
    if len(texts) > sample:
        texts = [texts[i] for i in np.linspace(0, len(texts) - 1, sample).astype(np.int64)]
    counts = _unknown_counts(texts, model)
    if counts is None:
        return None
    total, unknown = sum(c[0] for c in counts), sum(c[1] for c in counts)
    return unknown / total if total else 0.0


def with_unknown_tokens(texts: list[str], model: str | None) -> list[str]:
    """The texts of which the tokenizer of ``model`` reads some token as unknown (``[UNK]``): their vectors say
    little (the packaged model gives "翻译", "编程" and "物理" one vector); [] when it has no unknown token."""
    counts = _unknown_counts(texts, model)
    return [] if counts is None else [t for t, (_, unknown) in zip(texts, counts, strict=True) if unknown]
