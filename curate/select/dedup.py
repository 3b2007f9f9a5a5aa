"""Deduplication selectors: ``exact`` (text hash: the same text up to invisible differences), ``minhash`` (near-duplicate text),
``semantic`` (near-duplicate embeddings).

Which copy of a duplicate group is kept follows the walk order: pool order by default, or best score
first when ``sort_by`` is given (recorded in the selection's provenance). The order never depends on
which score columns the workspace happens to hold, so a command keeps the same copies before and after
scoring.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata

import numpy as np

from curate.codes import Decision, Reason
from curate.defaults import ANN, DEITA, EMBED, MINHASH, SELECT
from curate.errors import OptionError
from curate.select.admission import REJECTED, admit
from curate.select.ann_check import missed_duplicates
from curate.select.clusters import fit_kmeans
from curate.select.inputs import id_order, iter_texts, score_detail, vectors
from curate.select.lsh import BandIndex
from curate.select.products import hnsw_products
from curate.select.progress import walked
from curate.select.registry import SelectorResult, register
from curate.select.sort_key import rows_by_score
from curate.select.unspaced import split_unspaced

# Characters that show nothing: zero-width space, word joiner, a byte-order mark inside the text, soft hyphen (a
# hyphenation hint). ZWJ and ZWNJ (U+200D, U+200C) are not among them: they change emoji and Indic/Persian words.
INVISIBLE = dict.fromkeys(map(ord, "\u200b\u2060\ufeff\u00ad"))


def normalise_text(text: str) -> str:
    """Unicode NFKC, case-folded, whitespace collapsed, ``INVISIBLE`` characters dropped: the text MinHash shingles,
    and the ``exact`` selector's key with ``ignore_case_and_spacing``."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text.translate(INVISIBLE)).casefold()).strip()


_TRAILING_SPACE = re.compile(r"[ \t\f\v]+$", re.MULTILINE)
_BLANK_LINES = re.compile(r"\n{3,}")


def exact_key(text: str, ignore_case_and_spacing: bool = False) -> bytes:
    """The hash exact dedup groups rows by. By default texts that read the same are one: Unicode NFC, ``INVISIBLE``
    characters (zero-width space, word joiner, BOM, soft hyphen) dropped, CRLF line ends as LF, whitespace at line
    ends and around the text dropped, a run of blank lines as one (so a message's trailing newline, between messages
    in a conversation's text, counts for nothing); case, indentation and full-width against half-width forms count
    (code that differs only in indentation, a case-sensitive task, is not a duplicate). ``ignore_case_and_spacing``:
    :func:`normalise_text` (NFKC, so full-width forms as half-width; case-folded, every run of whitespace one space)."""
    if ignore_case_and_spacing:
        key = normalise_text(text)
    else:
        lines = _TRAILING_SPACE.sub("", unicodedata.normalize("NFC", text.translate(INVISIBLE)).replace("\r\n", "\n"))
        key = _BLANK_LINES.sub("\n\n", lines).strip()
    return hashlib.sha256(key.encode()).digest()


def walk_order(ws, rows: np.ndarray, sort_by: str | None) -> tuple[np.ndarray, np.ndarray, dict]:
    """``rows`` in the order a dedup walks them (pool order, or by ``sort_by`` best first), their scores
    (NaN without ``sort_by``) and the provenance that says which."""
    if sort_by is None:
        return rows, np.full(len(rows), np.nan), {"sort_by": None, "order": "pool"}
    perm, scores = rows_by_score(ws, rows, sort_by)
    return rows[perm], scores.values[perm], {"sort_by": scores.sort_by, "order": "score"}


@register("exact")
def exact_dedup(ws, rows: np.ndarray, text: str = "conversation", sort_by: str | None = None,
                ignore_case_and_spacing: bool = False) -> SelectorResult:
    """Exact dedup on a hash of the text (:func:`exact_key`); the first copy in the walk order is kept."""
    ordered, values, info = walk_order(ws, rows, sort_by)
    ids = ws.ids
    first: dict[bytes, int] = {}
    out = SelectorResult(info={"text": text, "ignore_case_and_spacing": ignore_case_and_spacing, **info})
    for k, (p, t) in enumerate(zip(ordered.tolist(), iter_texts(ws, ordered, text), strict=True)):
        h = exact_key(t, ignore_case_and_spacing)
        if h in first:
            out.add(p, Decision.DUPLICATE, Reason.EXACT_DUPLICATE, {"witness": ids[first[h]], **score_detail(values[k])})
        else:
            first[h] = p
            out.add(p, Decision.KEPT, Reason.SELECTED, score_detail(values[k]))
    return out


@functools.lru_cache(maxsize=8)
def _minhash_template(num_perm: int, seed: int):
    """A MinHash whose permutations every signature of these settings shares: datasketch draws them afresh for each
    MinHash made with a seed (255 of a row's 430 microseconds), and each kept one held its own 1 KB copy."""
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=seed)


def shingle_words(text: str) -> list[str]:
    """The words MinHash shingles: :func:`normalise_text` split at spaces, and each character of a script written
    without spaces a word of its own (so a 3-word shingle of Chinese is 3 characters; text with none is unchanged)."""
    return split_unspaced(normalise_text(text).split(" "))


def shingles(text: str, shingle: int) -> set[str]:
    """A text's ``shingle``-grams of :func:`shingle_words` (one gram of all its words when it has fewer)."""
    words = shingle_words(text)
    return {" ".join(words[i:i + shingle]) for i in range(max(1, len(words) - shingle + 1))}


def shingle_minhash(text: str, shingle: int, num_perm: int, seed: int):
    """The MinHash (datasketch) of a text's :func:`shingles`."""
    from datasketch import MinHash

    grams = shingles(text, shingle)
    template = _minhash_template(num_perm, seed)
    mh = MinHash(num_perm=num_perm, seed=seed, permutations=template.permutations, scheme=template.scheme)
    mh.update_batch([g.encode() for g in grams])
    return mh


def lsh_index(threshold: float, num_perm: int, false_positive_weight: float):
    """datasketch's ``MinHashLSH`` whose band layout weighs a false positive ``false_positive_weight`` against a
    missed pair ``1 - false_positive_weight`` (the ``minhash`` selector and the Ray engine read the same bands)."""
    from datasketch import MinHashLSH

    if not 0.0 < false_positive_weight < 1.0:
        raise OptionError(f"minhash: false_positive_weight is a weight in (0, 1), not {false_positive_weight!r}")
    return MinHashLSH(threshold=threshold, num_perm=num_perm,
                      weights=(false_positive_weight, 1.0 - false_positive_weight))


@register("minhash")
def minhash_dedup(ws, rows: np.ndarray, threshold: float = MINHASH.threshold, text: str = MINHASH.text,
                  shingle: int = MINHASH.shingle, num_perm: int = MINHASH.num_perm, sort_by: str | None = None,
                  seed: int = MINHASH.seed, false_positive_weight: float = MINHASH.false_positive_weight) -> SelectorResult:
    """Near-duplicate text (MinHash LSH over word shingles, datasketch; in Chinese, Japanese, Thai... each
    character is a word, :func:`shingle_words`): a row is a duplicate when a kept row's estimated Jaccard
    similarity to it is >= ``threshold``. The LSH bands find such a kept row with high probability, not certainty (``false_positive_weight``: the band layout's trade, see ``MinHashDefaults``; at the
    default a pair at Jaccard 0.8 is found 95% of the time, 0.85 99.4%); the ``exact`` selector, or ``semantic``
    with ``index="exact"``, compares every pair."""
    if shingle < 1 or num_perm < 2 or not 0.0 < threshold <= 1.0:
        raise OptionError(f"minhash needs shingle >= 1, num_perm >= 2 and threshold in (0, 1]; got shingle={shingle}, "
                          f"num_perm={num_perm}, threshold={threshold}")

    lsh = lsh_index(threshold, num_perm, false_positive_weight)  # the band layout; the index is curate's own
    index = BandIndex(lsh.hashranges, num_perm, _minhash_template(num_perm, seed).hashvalues.dtype)
    ordered, values, info = walk_order(ws, rows, sort_by)
    ids = ws.ids
    kept: list[str] = []  # row number in the index -> id
    out = SelectorResult(info={"threshold": threshold, "shingle": shingle, "num_perm": num_perm,
                               "false_positive_weight": false_positive_weight, "bands": lsh.b, "rows_per_band": lsh.r,
                               **info})
    rows_texts = zip(ordered.tolist(), iter_texts(ws, ordered, text), strict=True)
    for k, (p, t) in enumerate(walked(rows_texts, len(ordered), "minhash")):
        signature = shingle_minhash(t, shingle, num_perm, seed).hashvalues
        keys = index.band_keys(signature)
        candidates = index.query(keys)
        hits = [(float(j), kept[c]) for j, c in zip(index.similarity(signature, candidates), candidates, strict=True)
                if j >= threshold]  # mh.jaccard: the share of equal hash values
        if hits:
            j, h = max(hits)
            out.add(p, Decision.DUPLICATE, Reason.NEAR_DUPLICATE,
                    {"witness": h, "similarity": j, "threshold": threshold, **score_detail(values[k])})
        else:
            index.insert(signature, keys)
            kept.append(ids[p])
            out.add(p, Decision.KEPT, Reason.SELECTED, score_detail(values[k]))
    return out


def semantic_duplicates(x: np.ndarray, duplicate_similarity: float, index: str = "kmeans",
                        n_clusters: int | None = None, seed: int = SELECT.seed, ef: int = ANN.ef, threads: int = 1,
                        walk: np.ndarray | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """The semantic dedup walk over unit rows ``x`` (see :func:`semantic_dedup`): duplicate mask, witness (walk
    position), witness similarity, K-means labels (``kmeans`` only) and provenance, each in walk order.
    ``walk``: each row's position in the walk (``kmeans`` only; default: ``x`` is in walk order). K-means sees the
    rows in ``x``'s own order, so a caller reads them once in the order it clusters them, not twice."""
    n = len(x)
    if index in ("hnsw", "exact"):
        if walk is not None:
            raise ValueError(f"index {index!r} walks the rows of x in their order: give them so, not a walk")
        products = hnsw_products(ef=ef, threads=threads, seed=seed) if index == "hnsw" else None
        res = admit(x, -np.arange(n, dtype=np.float64), None, duplicate_similarity, None, products=products)
        duplicate = res.decision == REJECTED
        info = {"index": index} if index == "exact" else {"index": "hnsw", "ef": ef, "threads": threads, "seed": seed}
        if index == "hnsw":  # a kept row whose neighbour the graph missed was kept in silence: counted on a sample
            info["index_check"] = missed_duplicates(x, np.flatnonzero(~duplicate), duplicate_similarity,
                                                    ANN.check_rows, seed)
        return duplicate, res.witness, res.witness_similarity, None, info
    if index != "kmeans":
        raise OptionError(f"semantic: index must be {' or '.join(map(repr, SEMANTIC_INDEXES))}, not {index!r}")
    if n_clusters is not None and n_clusters < 1:
        raise OptionError(f"n_clusters must be >= 1, got {n_clusters}")
    k_c = min(n, n_clusters or max(1, int(math.sqrt(n / 4))))
    walk = np.arange(n) if walk is None else np.asarray(walk, np.int64)
    cluster, seeding = np.zeros(n, np.int64), {}  # by row of x
    if k_c > 1:
        km, seeding = fit_kmeans(x, k_c, seed)
        cluster = km.labels_
    labels = np.empty(n, np.int64)
    labels[walk] = cluster
    duplicate = np.zeros(n, bool)
    wit = np.full(n, -1, np.int64)
    wsim = np.full(n, np.nan)
    for c in range(k_c):
        members = np.flatnonzero(cluster == c)
        members = members[np.argsort(walk[members], kind="stable")]  # the cluster's rows of x in walk order
        at = walk[members]  # their walk positions (ascending): the admission scores are minus these
        res = admit(x[members], -at.astype(np.float64), None, duplicate_similarity, None)
        rej = np.flatnonzero(res.decision == REJECTED)
        duplicate[at[rej]] = True
        wit[at[rej]] = at[res.witness[rej]]
        wsim[at[rej]] = res.witness_similarity[rej]
    return duplicate, wit, wsim, labels, {"n_clusters": k_c, "seed": seed, **seeding}


SEMANTIC_INDEXES = ("kmeans", "hnsw", "exact")  # where semantic dedup looks for the kept rows


@register("semantic")
def semantic_dedup(ws, rows: np.ndarray, duplicate_similarity: float = DEITA.semantic_duplicate_similarity,
                   n_clusters: int | None = None, embeddings: str = EMBED.name, sort_by: str | None = None,
                   seed: int = SELECT.seed, index: str = "kmeans", ef: int = ANN.ef, threads: int = 1) -> SelectorResult:
    """Semantic dedup: a row is a duplicate when a kept row earlier in the walk order has cosine similarity
    above ``duplicate_similarity``. ``index`` says where kept rows are looked for:

    * ``kmeans`` (default): K-means clusters, then inside each cluster the exact admission loop (no budget);
      pairs split across clusters are missed. K-means runs over the rows in row-id order, so the same rows and
      ``seed`` make the same clusters whatever the pool file's order.
    * ``hnsw``: the admission loop over all rows with the kept rows in an hnswlib graph (cosine): each
      block of rows asks it for its nearest kept row (query beam ``ef``; ``threads`` build threads, 1 =
      reproducible) instead of comparing with every kept row; rows inside a block and rows near the
      threshold are compared exactly (:class:`curate.select.products.HnswProducts`). For pools of 1M+ rows;
      a duplicate whose kept neighbour the graph misses is kept (recall: ``evals/bench_dedup.py``); a seeded sample
      of ``ANN.check_rows`` kept rows is checked exactly and the misses found recorded (provenance ``index_check``,
      :mod:`curate.select.ann_check`).
    * ``exact``: the admission loop over all rows against every kept row: the reference; quadratic.
    """
    if index not in SEMANTIC_INDEXES:  # before the embeddings are read: it was a ValueError after, exiting 1
        raise OptionError(f"semantic: index must be {' or '.join(map(repr, SEMANTIC_INDEXES))}, not {index!r} "
                          "(--param index=...)")
    ignored = ([("n_clusters", n_clusters)] if index != "kmeans" and n_clusters is not None else []) + \
        [(k, v) for k, v, default in (("ef", ef, ANN.ef), ("threads", threads, 1)) if index != "hnsw" and v != default]
    if ignored:  # read by another index: they did nothing
        raise OptionError(f"semantic: {ignored[0][0]}={ignored[0][1]!r} is a setting of index "
                          f"{'kmeans' if ignored[0][0] == 'n_clusters' else 'hnsw'}, and index is {index!r}")
    ordered, values, info = walk_order(ws, rows, sort_by)
    by_id = id_order(ws, ordered) if index == "kmeans" else None  # walk positions in row-id order: K-means' order
    x = vectors(ws, embeddings, ordered if by_id is None else ordered[by_id])  # one copy, in the order clustered
    ids = ws.ids
    duplicate, wit, wsim, labels, how = semantic_duplicates(x, duplicate_similarity, index, n_clusters, seed, ef,
                                                            threads, walk=by_id)
    del x
    first = {"n_clusters": how.pop("n_clusters")} if "n_clusters" in how else {}  # the order it had before
    out = SelectorResult(info={**first, "duplicate_similarity": duplicate_similarity, **how, **info})
    return semantic_decisions(out, ids, ordered, values, (duplicate, wit, wsim, labels), duplicate_similarity)


def semantic_decisions(out: SelectorResult, ids: list[str], ordered: np.ndarray, values: np.ndarray,
                       walk: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None],
                       duplicate_similarity: float) -> SelectorResult:
    """``out`` with a decision per row of ``ordered`` (pool positions in walk order, their scores ``values``) from
    :func:`semantic_duplicates`' ``walk`` arrays (duplicate mask, witness walk position, similarity, clusters)."""
    duplicate, wit, wsim, labels = walk
    for m, p in enumerate(ordered.tolist()):
        detail = score_detail(values[m]) if labels is None else {"cluster": int(labels[m]), **score_detail(values[m])}
        if duplicate[m]:
            detail.update(witness=ids[ordered[wit[m]]], similarity=float(wsim[m]),
                          duplicate_similarity=duplicate_similarity)
            out.add(p, Decision.DUPLICATE, Reason.NEAR_DUPLICATE, detail)
        else:
            out.add(p, Decision.KEPT, Reason.SELECTED, detail)
    return out
