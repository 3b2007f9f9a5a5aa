"""The ``decontaminate`` selector: drop pool rows that contain text of an evaluation set (benchmark leakage).

A row is contaminated when one of its messages shares a run of ``ngram`` consecutive words with a target
text (GPT-3's and NeMo Curator's test: 13 words), or contains a whole target text shorter than that but of
at least ``min_words`` words (NeMo Curator matches short task texts whole, down to 8 words). Words are the
``\\w+`` runs of the NFKC case-folded text, so case, punctuation and spacing never hide a match. Runs never
cross a message boundary. A target under ``min_words`` words ("Write a poem.") is in many honest rows, so it
matches only a message that says exactly it (counted in the provenance as ``targets_matched_whole``).
``min_overlap`` trades recall for precision: a row then has to hold that share of one target's runs (a long
evaluation text sharing one line of boilerplate code with a row no longer drops it). ``max_cosine_similarity``
adds recall: a row whose embedding is that close to a target's is dropped too, which catches the copies whose
words were re-formatted (an ``Input:`` label between a prompt and its input breaks every run) or reworded.

Why hand-written: the peers' versions are whole-pipeline stages (NeMo Curator's ``TaskDecontamination`` on
Dask, splitting pretraining documents around each match); an SFT row is dropped whole, and an index of the
targets' word runs keyed by their first ``min_words`` words finds every match in one pass over the pool.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import DECONTAMINATE, EMBED
from curate.errors import CurateError, InputError, OptionError, python_and_cli
from curate.rows import TEXT_KINDS, Conversation, row_text
from curate.select.admission import unit_rows
from curate.select.dedup import INVISIBLE
from curate.select.inputs import target_file, text_lines, vectors
from curate.select.registry import SelectorResult, register

_WORD = re.compile(r"\w+")
BLOCK_ROWS = 65_536  # rows compared with every target at once by max_cosine_similarity
_ROLES = {"instruction": ("user",), "response": ("assistant",), "conversation": ("user", "assistant", "system")}


def words(text: str) -> list[str]:
    """The words n-grams are made of: ``\\w+`` runs of the NFKC case-folded text, its ``INVISIBLE`` characters
    dropped (a zero-width space splits no word): MinHash dedup's normalisation,
    :func:`curate.select.dedup.normalise_text`, less its whitespace collapse (it cannot change the runs and doubled
    the time of this, the pass's hot path)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text.translate(INVISIBLE)).casefold())


class TargetIndex:
    """Every word run of the target texts that makes a row contaminated, keyed by its first ``min_words`` words, and
    the whole user messages of the targets too short for runs."""

    def __init__(self, targets: Sequence[Conversation], ngram: int, min_words: int):
        if not 1 <= min_words <= ngram:
            raise OptionError(f"decontaminate: need 1 <= min_words <= ngram, not min_words={min_words}, ngram={ngram}")
        self.min_words = min_words
        self.runs: dict[tuple[str, ...], dict[tuple[str, ...], list[int]]] = {}
        self.whole: dict[tuple[str, ...], list[int]] = {}
        self.sizes: list[int] = []  # distinct runs (or whole messages) of each target
        self.matched_whole = 0      # targets matched only as a whole message
        self.without_words = 0      # targets with no word at all ("???"): nothing can match them
        for k, conversation in enumerate(targets):
            own: dict[tuple[str, ...], None] = {}
            for message in conversation:
                w = words(message["content"])
                if len(w) >= min_words:
                    n = min(ngram, len(w))
                    own.update(dict.fromkeys(tuple(w[i:i + n]) for i in range(len(w) - n + 1)))
            for run in own:
                self.runs.setdefault(run[:min_words], {}).setdefault(run, []).append(k)
            if not own:  # "Write a poem." is in many honest rows, so a short target matches only a message saying it
                own = dict.fromkeys(w for w in (tuple(words(m["content"])) for m in conversation if m["role"] == "user")
                                    if w)
                for message in own:
                    self.whole.setdefault(message, []).append(k)
                self.matched_whole += bool(own)
                self.without_words += not own
            self.sizes.append(len(own))

    def __len__(self) -> int:
        return sum(len(v) for v in self.runs.values())

    def matches(self, segments: Iterable[str]) -> dict[int, dict[tuple[str, ...], None]]:
        """Target number -> its runs (or whole messages) found in ``segments`` (in text order)."""
        m = self.min_words
        found: dict[int, dict[tuple[str, ...], None]] = {}
        for segment in segments:
            w = words(segment)
            for k in self.whole.get(tuple(w), ()):
                found.setdefault(k, {})[tuple(w)] = None
            for i in range(len(w) - m + 1):
                candidates = self.runs.get(tuple(w[i:i + m]))
                if candidates:
                    for run, targets in candidates.items():
                        if tuple(w[i:i + len(run)]) == run:
                            for k in targets:
                                found.setdefault(k, {})[run] = None
        return found

    def contamination(self, segments: Iterable[str], min_overlap: float) -> tuple[int, tuple[str, ...], float] | None:
        """(target number, the first shared run, the share of the target's runs found) for the target most present
        in ``segments`` when that share reaches ``min_overlap`` (0: any shared run), else None."""
        found = self.matches(segments)
        if not found:
            return None
        k = max(found, key=lambda t: (len(found[t]) / self.sizes[t], -t))
        share = len(found[k]) / self.sizes[k]
        return (k, next(iter(found[k])), share) if share >= min_overlap else None


def read_targets(target: list[str] | str | os.PathLike) -> list[Conversation]:
    """Each target as a conversation: a list of strings (one user message each), a ``.txt`` file (one per line), a
    benchmark file of prompt ``turns`` (MT-bench's and Arena-Hard's shape), or any file curate loads (a record's
    prompts and reference answers alike); a file by its name or as a ``Path``."""
    if isinstance(target, os.PathLike):  # a Path (`curate run --decontaminate` hands one over) was "not a file"
        target = os.fspath(target)
    if isinstance(target, str):
        path = target_file("decontaminate", target, folder=True)  # a datasets folder is a file curate loads
        if path.suffix == ".txt":
            return [[{"role": "user", "content": ln}] for ln in text_lines(path, "decontaminate")]
        from curate.pools import read
        from curate.pools.readers import records

        first = next(records(target), None)
        if first is not None and isinstance(first[1], dict) and isinstance(first[1].get("turns"), list):
            return [_prompt_turns(target, location, record) for location, record, _ in records(target)]
        return [r["conversation"] for r in read(path).rows]
    if not isinstance(target, list | tuple) or not all(isinstance(t, str) for t in target):
        raise CurateError(f"decontaminate: target must be a list of texts or a file, not {target!r}"[:200])
    return [[{"role": "user", "content": t}] for t in target]


def _prompt_turns(path: str, location: str, record: Any) -> Conversation:
    """A benchmark record's ``turns`` (texts, or objects with ``content``) as user messages."""
    if isinstance(record, Exception):  # a line that is not JSON: the reader's own words for it
        raise InputError(path, location, str(record))
    turns = record.get("turns") if isinstance(record, dict) else None
    texts = [t.get("content") if isinstance(t, dict) else t for t in turns] if isinstance(turns, list) else None
    if not texts or not all(isinstance(t, str) for t in texts):
        raise InputError(path, location, "expected 'turns': a list of prompt texts (or of objects with 'content'), "
                                         "as in the file's first record")
    return [{"role": "user", "content": t} for t in texts]


def nearest_targets(ws, rows: np.ndarray, targets: list[Conversation], embeddings: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's most similar target (index) and that cosine similarity, in the embedding set ``embeddings``: the
    targets are embedded as that set's rows were (its model, backend and text), through the workspace's cache."""
    # the encoder loads only when the embedding test is asked for
    from curate.embed.cache import encode_cached

    prov = ws.embedding_sets.get(embeddings)
    if prov is None:
        raise CurateError(f"decontaminate: max_cosine_similarity compares embeddings, and the workspace has no set "
                          f"{embeddings!r}: run `curate embed {ws.path}` first")
    kind = prov.get("text")
    if kind not in TEXT_KINDS:
        raise CurateError(f"decontaminate: the embedding set {embeddings!r} does not say which text of a row it embeds "
                          f"(its provenance has text={kind!r}); embed with `curate embed --name {embeddings}`")
    texts = [row_text(t, kind) for t in targets]
    empty = sum(not t.strip() for t in texts)
    if empty:  # e.g. a set of embedded responses and targets that are prompts only: nothing to compare
        raise CurateError(f"decontaminate: {empty} of {len(texts)} targets have no {kind} text to compare with the "
                          f"embedding set {embeddings!r}, which embeds each row's {kind}")
    matrix, _, _ = encode_cached(texts, ws.cache_dir, prov.get("model"), backend=prov.get("backend"))
    target_vectors = unit_rows(matrix)
    best, nearest = np.full(len(rows), -np.inf, np.float32), np.zeros(len(rows), np.int64)
    for start in range(0, len(rows), BLOCK_ROWS):  # rows x targets in blocks: the full matrix may not fit
        sims = vectors(ws, embeddings, rows[start:start + BLOCK_ROWS]) @ target_vectors.T
        nearest[start:start + len(sims)] = sims.argmax(axis=1)
        best[start:start + len(sims)] = sims.max(axis=1)
    return nearest, best


@register("decontaminate")
def decontaminate(ws, rows: np.ndarray, target: list[str] | str | os.PathLike, text: str = "conversation",
                  ngram: int = DECONTAMINATE.ngram, min_words: int = DECONTAMINATE.min_words,
                  min_overlap: float = DECONTAMINATE.min_overlap, max_cosine_similarity: float | None = None,
                  embeddings: str | None = None) -> SelectorResult:
    """Keep the rows that share no ``ngram``-word run with the target texts in their ``text`` (``instruction``,
    ``response`` or ``conversation``), nor hold a whole target of ``min_words`` words or more, nor have a message
    that is a shorter target's whole user message. ``min_overlap`` > 0 asks more: a row is dropped only when it
    holds at least that share of one target's runs (0.5: more than half of the evaluation text, the diff test of
    Phi-1 and Cosmopedia). ``max_cosine_similarity``: also drop a row whose embedding (set ``embeddings``) has a
    cosine above it with a target's (a reworded or re-formatted copy; default set ``curate.defaults.EMBED.name``). Detail of a dropped row: the target's number
    (1-based, in file order) and either the first shared words and ``overlap`` (the share of the target's runs
    found) or ``similarity``."""
    if embeddings is not None and max_cosine_similarity is None:  # read by the embedding test alone: it did nothing
        raise CurateError(f"decontaminate: embeddings={embeddings!r} is the embedding set of max_cosine_similarity, "
                          "and none is given: give max_cosine_similarity too, or leave embeddings out")
    embeddings = EMBED.name if embeddings is None else embeddings
    if text not in TEXT_KINDS:
        raise OptionError(f"decontaminate: {python_and_cli('text=', '--param text=')} must be one of "
                          f"{', '.join(TEXT_KINDS)}, not {text!r}")
    if not 0 <= min_overlap <= 1:
        raise OptionError(f"decontaminate: min_overlap is a share of a target's word runs in [0, 1], not {min_overlap!r}")
    if max_cosine_similarity is not None and not -1 <= max_cosine_similarity <= 1:
        raise OptionError(f"decontaminate: max_cosine_similarity must be a cosine in [-1, 1], not {max_cosine_similarity!r}")
    targets = read_targets(target)
    if not targets:
        raise OptionError("decontaminate needs target texts")
    index = TargetIndex(targets, ngram, min_words)
    nearest, similarity = (None, None) if max_cosine_similarity is None else nearest_targets(ws, rows, targets,
                                                                                               embeddings)
    digest = hashlib.sha256(json.dumps(targets, sort_keys=True).encode()).hexdigest()[:16]
    out = SelectorResult(info={"text": text, "ngram": ngram, "min_words": min_words, "min_overlap": min_overlap,
                               "max_cosine_similarity": max_cosine_similarity,
                               "embeddings": None if max_cosine_similarity is None else embeddings,
                               "target_texts": len(targets), "target_sha256": digest,
                               "targets_matched_whole": index.matched_whole,
                               "targets_without_words": index.without_words, "target_runs": len(index)})
    ids = ws.ids
    roles = _ROLES[text]
    for j, (p, conversation) in enumerate(zip(rows.tolist(), ws.conversations([ids[p] for p in rows.tolist()]),
                                              strict=True)):
        match = index.contamination((m["content"] for m in conversation if m["role"] in roles), min_overlap)
        if match is not None:
            k, run, share = match
            detail = {"target": k + 1, "shared_words": " ".join(run), "overlap": round(share, 4)}
        elif similarity is not None and similarity[j] > max_cosine_similarity:
            k = int(nearest[j])
            detail = {"target": k + 1, "similarity": round(float(similarity[j]), 4),
                      "max_cosine_similarity": max_cosine_similarity}
        else:
            out.add(p, Decision.KEPT, Reason.SELECTED)
            continue
        detail["target_text"] = " ".join(m["content"] for m in targets[k])[:120]
        out.add(p, Decision.REJECTED, Reason.CONTAMINATED, detail)
    return out
