"""The ``decontaminate`` selector: drop pool rows that contain text of an evaluation set (benchmark leakage).

A row is contaminated when one of its messages shares a run of ``ngram`` consecutive words with a target
text (GPT-3's and NeMo Curator's test: 13 words), or contains a whole target text shorter than that but of
at least ``min_words`` words (NeMo Curator matches short task texts whole, down to 8 words). Words are the
``\\w+`` runs of the NFKC case-folded text, so case, punctuation and spacing never hide a match. Runs never
cross a message boundary. Target texts under ``min_words`` words cannot be matched safely ("Write a poem."
is in many honest rows); they are counted in the selection's provenance, never matched silently.
``min_overlap`` trades recall for precision: a row then has to hold that share of one target's runs (a long
evaluation text sharing one line of boilerplate code with a row no longer drops it).

Why hand-written: the peers' versions are whole-pipeline stages (NeMo Curator's ``TaskDecontamination`` on
Dask, splitting pretraining documents around each match); an SFT row is dropped whole, and an index of the
targets' word runs keyed by their first ``min_words`` words finds every match in one pass over the pool.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import DECONTAMINATE
from curate.errors import CurateError
from curate.rows import TEXT_KINDS
from curate.select.registry import SelectorResult, register

_WORD = re.compile(r"\w+")
_ROLES = {"instruction": ("user",), "response": ("assistant",), "conversation": ("user", "assistant", "system")}


def words(text: str) -> list[str]:
    """The words n-grams are made of: ``\\w+`` runs of the NFKC case-folded text."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).casefold())


class TargetIndex:
    """Every word run of the target texts that makes a row contaminated, keyed by its first ``min_words`` words."""

    def __init__(self, targets: Sequence[Sequence[str]], ngram: int, min_words: int):
        if not 1 <= min_words <= ngram:
            raise CurateError(f"decontaminate: need 1 <= min_words <= ngram, not min_words={min_words}, ngram={ngram}")
        self.ngram, self.min_words = ngram, min_words
        self.runs: dict[tuple[str, ...], dict[tuple[str, ...], list[int]]] = {}
        self.sizes: list[int] = []  # distinct runs of each target
        for k, segments in enumerate(targets):
            own: dict[tuple[str, ...], None] = {}
            for segment in segments:
                w = words(segment)
                if len(w) >= min_words:
                    n = min(ngram, len(w))
                    own.update(dict.fromkeys(tuple(w[i:i + n]) for i in range(len(w) - n + 1)))
            for run in own:
                self.runs.setdefault(run[:min_words], {}).setdefault(run, []).append(k)
            self.sizes.append(len(own))
        self.too_short = self.sizes.count(0)  # targets none of whose texts reach min_words words

    def __len__(self) -> int:
        return sum(len(v) for v in self.runs.values())

    def matches(self, segments: Iterable[str]) -> dict[int, dict[tuple[str, ...], None]]:
        """Target number -> its runs found in ``segments`` (in text order)."""
        m = self.min_words
        found: dict[int, dict[tuple[str, ...], None]] = {}
        for segment in segments:
            w = words(segment)
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


def target_segments(target: list[str] | str) -> list[list[str]]:
    """Each target as its texts: a list of strings (one text each), a ``.txt`` file (one per line), or any file
    curate loads (a record's messages, prompts and reference answers alike)."""
    if isinstance(target, str):
        path = Path(target)
        if not path.exists():
            raise CurateError(f"decontaminate: target {target!r} is not a file")
        if path.suffix == ".txt":
            return [[ln] for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        from curate.pools import read

        return [[m["content"] for m in r["conversation"]] for r in read(path).rows]
    if not isinstance(target, list | tuple) or not all(isinstance(t, str) for t in target):
        raise CurateError(f"decontaminate: target must be a list of texts or a file, not {target!r}"[:200])
    return [[t] for t in target]


@register("decontaminate")
def decontaminate(ws, rows: np.ndarray, target: list[str] | str, text: str = "conversation",
                  ngram: int = DECONTAMINATE.ngram, min_words: int = DECONTAMINATE.min_words,
                  min_overlap: float = DECONTAMINATE.min_overlap) -> SelectorResult:
    """Keep the rows that share no ``ngram``-word run (nor a whole target of ``min_words`` words or more) with the
    target texts in their ``text`` (``instruction``, ``response`` or ``conversation``). ``min_overlap`` > 0 asks
    more: a row is dropped only when it holds at least that share of one target's runs (0.5: more than half of
    the evaluation text, the diff test of Phi-1 and Cosmopedia). Detail of a dropped row: the target's number
    (1-based, in file order), the first shared words and ``overlap``, the share of the target's runs found."""
    if text not in TEXT_KINDS:
        raise CurateError(f"decontaminate: text must be one of {', '.join(TEXT_KINDS)}, not {text!r}")
    if not 0 <= min_overlap <= 1:
        raise CurateError(f"decontaminate: min_overlap is a share of a target's word runs in [0, 1], not {min_overlap!r}")
    targets = target_segments(target)
    if not targets:
        raise CurateError("decontaminate needs target texts")
    index = TargetIndex(targets, ngram, min_words)
    digest = hashlib.sha256("\x1e".join("\x1f".join(t) for t in targets).encode()).hexdigest()[:16]
    out = SelectorResult(info={"text": text, "ngram": ngram, "min_words": min_words, "min_overlap": min_overlap,
                               "target_texts": len(targets),
                               "target_sha256": digest, "targets_too_short": index.too_short,
                               "target_runs": len(index)})
    ids = ws.ids
    roles = _ROLES[text]
    for p, conversation in zip(rows.tolist(), ws.conversations([ids[p] for p in rows.tolist()]), strict=True):
        match = index.contamination((m["content"] for m in conversation if m["role"] in roles), min_overlap)
        if match is None:
            out.add(p, Decision.KEPT, Reason.SELECTED)
        else:
            k, run, share = match
            out.add(p, Decision.REJECTED, Reason.CONTAMINATED,
                    {"target": k + 1, "shared_words": " ".join(run), "overlap": round(share, 4),
                     "target_text": " ".join(targets[k])[:120]})
    return out
