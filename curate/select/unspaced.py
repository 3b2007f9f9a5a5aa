"""Scripts written without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Burmese): the text rules
that count words count each of their characters as one (a Chinese character carries about a word)."""

from __future__ import annotations

import regex

# the Japanese long-vowel mark belongs to no one script, so it is named
UNSPACED = regex.compile(r"[\p{Han}\p{Hiragana}\p{Katakana}\p{Thai}\p{Lao}\p{Khmer}\p{Myanmar}\u30fc]")
_UNSPACED_OR_RUN = regex.compile(UNSPACED.pattern + r"|(?:(?!" + UNSPACED.pattern + r").)+")


def split_unspaced(words: list[str]) -> list[str]:
    """``words`` with each word holding characters of an unspaced script split into those characters (one word
    each) and the runs between them; a list without such characters comes back as it is."""
    if not has_unspaced(words):
        return words
    return [part for w in words for part in (_UNSPACED_OR_RUN.findall(w) if UNSPACED.search(w) else (w,))]


def has_unspaced(words: list[str]) -> bool:
    """True when ``words`` hold a character of an unspaced script: one pass over their joined text, none for ASCII
    (most texts; a regex per word tripled MinHash shingling's time)."""
    joined = "".join(words)
    return not joined.isascii() and UNSPACED.search(joined) is not None


def unspaced_count(text: str) -> int:
    """How many characters of unspaced scripts ``text`` holds."""
    return len(UNSPACED.findall(text))
