"""The merge algorithms behind the InsTag :class:`~curate.tags.normalize.Normalizer` (pure functions).

Semantic aggregation clusters tag embeddings with DBSCAN (cosine); association aggregation mines pair
rules with FP-Growth (mlxtend). Both return which tag merges into which; :func:`pick` names a group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import numpy as np

EmbedFn = Callable[[list[str]], np.ndarray]
ASSOCIATION_MODES = ("mutual", "implication")


def check_stemmer_language(language: str) -> None:
    """A ValueError naming Snowball's languages unless ``language`` is one of them."""
    import snowballstemmer

    if language not in snowballstemmer.algorithms():
        raise ValueError(f"stemmer language {language!r}: Snowball has {', '.join(snowballstemmer.algorithms())}")


def pick(counts: Counter) -> str:
    """Canonical member: highest count, then shortest, then alphabetical."""
    return min(counts, key=lambda t: (-counts[t], len(t), t))


def semantic_merges(names: list[str], counts: Counter, embed: EmbedFn, eps: float) -> dict[str, str]:
    """DBSCAN(min_samples=1, cosine distance ``eps``) over the embedded ``names``: each cluster merges into
    its most frequent member. Returns {name: canonical name} for every name."""
    from sklearn.cluster import DBSCAN

    vectors = np.asarray(embed(names), dtype=np.float64)
    labels = DBSCAN(eps=eps, min_samples=1, metric="cosine").fit(vectors).labels_
    clusters: dict[int, list[str]] = {}
    for name, lab in zip(names, labels, strict=True):
        clusters.setdefault(int(lab), []).append(name)
    out: dict[str, str] = {}
    for members in clusters.values():
        canon = pick(Counter({m: counts[m] for m in members}))
        out.update({m: canon for m in members})
    return out


def association_merges(transactions: list[list[str]], support: int, min_confidence: float,
                       mode: str = "mutual") -> dict[str, str]:
    """FP-Growth pair rules over the rows' tag sets -> {merged tag: tag it merges into} (union-find, so
    merges chain). ``support`` is in rows. ``mode="mutual"`` merges a pair only when both A->B and B->A
    hold; ``"implication"`` also folds A into B when only A->B holds."""
    import pandas as pd
    from mlxtend.frequent_patterns import association_rules, fpgrowth
    from mlxtend.preprocessing import TransactionEncoder

    transactions = [t for t in transactions if t]
    if len(transactions) < 2:
        return {}
    enc = TransactionEncoder()
    onehot = enc.fit(transactions).transform(transactions, sparse=True)
    df = pd.DataFrame.sparse.from_spmatrix(onehot, columns=enc.columns_)
    # mlxtend turns the fraction back into rows with ceil(fraction * n): 7/25*25 is 7.000000000000001, which asked
    # for 8 rows; half a row below the count rounds up to exactly ``support`` for every n
    itemsets = fpgrowth(df, min_support=(support - 0.5) / len(transactions), use_colnames=True, max_len=2)
    if itemsets.empty or itemsets["itemsets"].map(len).max() < 2:
        return {}
    # a tag in every row makes mlxtend's certainty 0/0, which it replaces by 0 (np.where) after numpy warned
    # "invalid value encountered in divide" on every call; only confidence is read here
    with np.errstate(divide="ignore", invalid="ignore"):
        rules = association_rules(itemsets, num_itemsets=len(transactions), metric="confidence",
                                  min_threshold=min_confidence)
    implied: set[tuple[str, str]] = set()
    for a, b in zip(rules["antecedents"], rules["consequents"], strict=True):
        if len(a) == 1 and len(b) == 1:
            implied.add((next(iter(a)), next(iter(b))))
    counts: Counter = Counter(t for tr in transactions for t in tr)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in sorted(implied):
        if mode == "mutual" and (b, a) not in implied:
            continue
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        keep = pick(Counter({ra: counts[ra], rb: counts[rb]}))
        if mode == "implication" and (b, a) not in implied:
            keep = rb  # a always comes with b: fold a into b
        drop = ra if keep == rb else rb
        parent[drop] = keep
    return {x: find(x) for x in parent}
