"""The InsTag normaliser on many raw tags: the cost of its rule aggregation follows the distinct words, not the tags."""

from __future__ import annotations

import random

import snowballstemmer

from curate.tags import Normalizer


class CountingStemmer:
    """The English Snowball stemmer, counting the words it is asked to stem."""

    def __init__(self) -> None:
        self.stemmer = snowballstemmer.stemmer("english")
        self.words = 0

    def stemWord(self, word: str) -> str:  # noqa: N802 (snowballstemmer's name)
        self.words += 1
        return self.stemmer.stemWord(word)

    def stemWords(self, words: list[str]) -> list[str]:  # noqa: N802
        return [self.stemWord(w) for w in words]


def test_each_distinct_word_is_stemmed_once_however_many_tags_share_it():
    """Open-ended tags repeat their words ('code generation', 'code review', 'Code Generation.'): 20,000 rows' tags
    (21,555 distinct) took 31 s of pure-Python stemming, 81,157 words, in `normalize(ws)` on the project's 2-core
    machine, every refit again; each of their few hundred distinct words is stemmed once now."""
    rng = random.Random(0)
    words = ["code", "generation", "review", "data", "analysis", "creative", "writing", "math", "problem", "solving"]
    rows = [[f"{rng.choice(words)} {rng.choice(words).upper()} {rng.choice(words)}s {rng.randrange(300)}"
             for _ in range(4)] for _ in range(2_000)]
    norm = Normalizer(semantic=False, association=False)
    norm._stem = counting = CountingStemmer()
    out = norm.fit_transform(rows)
    distinct = {w for row in rows for tag in row for w in Normalizer.surface(tag).split()}
    assert counting.words <= len(distinct) < 400
    reference = Normalizer(semantic=False, association=False).fit(rows)  # the same mapping as stemming every tag
    reference.rule_key = lambda tag: " ".join(snowballstemmer.stemmer("english").stemWords(Normalizer.surface(tag).split()))
    assert norm.mapping == reference.fit(rows).mapping and out == reference.transform(rows)
