"""The ``dsir`` selector: data selection by importance resampling toward target texts (Xie et al. 2023)."""

from __future__ import annotations

import os

import numpy as np
import regex

from curate.codes import Decision, Reason
from curate.defaults import SELECT
from curate.errors import CurateError, OptionError, python_and_cli
from curate.rows import TEXT_KINDS
from curate.select.inputs import in_id_order, target_file, text_lines, texts
from curate.select.registry import SelectorResult, register
from curate.select.unspaced import split_unspaced

_WORD_OR_PUNCT = regex.compile(r"\w+|[^\w\s]+")  # nltk's wordpunct_tokenize, which DSIR's own code hashes
TOKENS = ("lowercased words and runs of punctuation (nltk's wordpunct, as DSIR's code), each character of a script "
          "written without spaces (Chinese, Japanese, Thai...) a word of its own")


def dsir_words(text: str) -> list[str]:
    """The words DSIR hashes (``TOKENS``): ``I ate 1 apple.`` is ``i ate 1 apple .``; ``我喜欢苹果`` five words."""
    return split_unspaced(_WORD_OR_PUNCT.findall(text))


def hashed_ngrams(texts: list[str], num_buckets: int = 10_000, ngram: int = 2):
    """Sparse (texts x buckets) counts of hashed 1..ngram-grams of :func:`dsir_words` (sklearn's stable murmur
    hashing). scikit-learn's own words (two characters and up) dropped ``a``, ``I`` and digits, and read a run of
    Chinese as one word: a Chinese row shared no feature with a target unless it was the same run."""
    from sklearn.feature_extraction.text import HashingVectorizer

    vec = HashingVectorizer(n_features=num_buckets, ngram_range=(1, ngram), alternate_sign=False, norm=None,
                            lowercase=True, tokenizer=dsir_words, token_pattern=None)
    return vec.transform(texts)


@register("dsir")
def dsir(ws, rows: np.ndarray, budget: int, target: list[str] | str | os.PathLike, text: str = "instruction",
         num_buckets: int = 10_000, ngram: int = 2, seed: int = SELECT.seed) -> SelectorResult:
    """DSIR: importance weights p_target/p_raw over hashed n-grams, then Gumbel top-k resampling.

    ``target``: the target texts, or a file of them (one per line; its name or a ``Path``). Detail ``score``: a row's log
    importance weight; ``key``: the weight plus its Gumbel noise (what the ranking sorts by). The noise is drawn over
    the rows in row-id order: the same rows and seed give the same sample whatever the pool file's order.
    """
    if text not in TEXT_KINDS:  # row_text's words named `--text`, an option curate select does not have
        raise OptionError(f"dsir: {python_and_cli('text=', '--param text=')} must be one of {', '.join(TEXT_KINDS)}, "
                          f"not {text!r}")
    if num_buckets < 1 or ngram < 1:  # sklearn's hashing divides by num_buckets: 0 killed the process (SIGFPE)
        raise OptionError(f"dsir: num_buckets and ngram must be >= 1, not {num_buckets} and {ngram}")
    if isinstance(target, os.PathLike):  # a Path was "not a list of texts or a file"
        target = os.fspath(target)
    if isinstance(target, str):
        target = text_lines(target_file("dsir", target), "dsir")
    if not isinstance(target, list | tuple) or not all(isinstance(t, str) for t in target):
        raise CurateError(f"dsir: target must be a list of texts or a file of them, not {target!r}"[:200])
    if not target:
        raise OptionError("dsir needs target texts")
    rows = in_id_order(ws, rows)
    raw = hashed_ngrams(texts(ws, rows, text), num_buckets, ngram)
    tgt = hashed_ngrams(target, num_buckets, ngram)
    p_raw = np.asarray(raw.sum(axis=0)).ravel() + 1.0
    p_tgt = np.asarray(tgt.sum(axis=0)).ravel() + 1.0
    logratio = np.log(p_tgt / p_tgt.sum()) - np.log(p_raw / p_raw.sum())
    logw = raw @ logratio
    keys = logw + np.random.default_rng(seed).gumbel(size=len(rows))
    out = SelectorResult(info={"num_buckets": num_buckets, "ngram": ngram, "target_texts": len(target),
                               "seed": seed, "score": "log importance weight", "tokens": TOKENS})
    for i, j in enumerate(np.argsort(-keys, kind="stable").tolist()):
        if i < budget:
            out.add(rows[j], Decision.KEPT, Reason.SELECTED, {"score": float(logw[j]), "key": float(keys[j])})
        else:  # the draw's keys in order: the budget filled before this row's
            out.add(rows[j], Decision.NOT_REACHED, Reason.BUDGET_FILLED,
                    {"score": float(logw[j]), "key": float(keys[j]), "budget": budget})
    return out
