"""InsTag: open-ended intent tags, their normalisation, diversity/complexity metrics, tag-coverage sampling.

The pieces, in the order a session uses them:

- :func:`tag` asks an LLM judge (prompt ``prompts/instag.md``) for each user turn's intent tags and
  writes column ``tags_raw`` (one list per row, all user turns) and ``tags_raw_failure``.
- :class:`Normalizer` learns a raw -> canonical tag mapping (frequency filter, rule aggregation,
  semantic aggregation with DBSCAN, association aggregation with FP-Growth), reports what each step
  did, saves the mapping as JSON and applies it to new rows; :func:`normalize` writes column ``tags``.
- Metrics: :func:`coverage`, :func:`tags_per_query`, :func:`tag_frequency`, :func:`random_coverage`,
  :func:`coverage_report`.
- :func:`instag_sample` / :func:`instag_select`: complexity-first diverse sampling.
- :class:`TagClassifier`: a small multi-label tagger over sentence embeddings, so a large pool can be
  tagged without LLM calls once a sample has LLM tags.

InsTag (Lu et al. 2023) released neither its normalisation nor its sampling code; this is our own
implementation of the procedure its paper describes.
"""

from __future__ import annotations

import html
import json
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

TagLists = Sequence[Sequence[str] | None]
EmbedFn = Callable[[list[str]], np.ndarray]

#: pool size (rows) at which the paper's absolute thresholds (alpha=20, min support=40) apply unscaled
REFERENCE_POOL_ROWS = 10_000
#: most tags the judge may give one query (the paper's pool averaged a few; its 6K sample 16.6 per row)
MAX_TAGS_PER_QUERY = 10
# Rule aggregation's words: runs of letters/digits; a word ending in a letter keeps a run of '#'/'+' right
# after it when no letter follows (C#, C++, F#, Notepad++, C++17 -> "c++ 17"), so C, C# and C++ stay apart;
# everything else ("a+b", "1+1", "#tag", "C/C++") is a separator.
SYMBOL_SUFFIX_CHARS = "#+"
SYMBOL_WORD = re.compile(r"[^\W_]*[^\W\d_][#+]+(?![^\W\d_])|[^\W_]+")


# -- the judge's output schema ----------------------------------------------------------------------
class IntentTag(BaseModel):
    """One intent of a user query."""

    tag: str = Field(min_length=1, max_length=60)
    explanation: str = Field(max_length=200)


class IntentTags(BaseModel):
    """The tagging judge's answer: the query's intent tags (an object, so JSON-schema decoding works)."""

    # bounded, so schema-guided decoding closes the list (a tiny model otherwise repeats tags until max_tokens)
    tags: list[IntentTag] = Field(min_length=1, max_length=MAX_TAGS_PER_QUERY)


# -- tagging with an LLM judge ----------------------------------------------------------------------
def _dedupe(tags: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(tags))


def tag(ws, backend, *, prompt: str = "instag", column: str = "tags_raw", ids: list[str] | None = None,
        cache_path: str | Path | None = None, progress: bool = True, params: dict | None = None) -> dict[str, Any]:
    """Tag every user turn of the rows (default: whole pool) with the LLM judge; write ``column``.

    Each row gets the tags of all its user turns (order kept, duplicates removed). A row any of whose
    turns failed gets ``None`` and the failures (turn number, reason) in ``<column>_failure``; a row
    with no failure has ``None`` there. Returns a summary (rows, turns, failures, cached calls, cost).
    """
    from curate.llm.judges import run_prompt
    from curate.pools import user_turns
    from curate.llm.prompts import load_prompt

    loaded = load_prompt(prompt)
    ids = ws.ids if ids is None else list(ids)
    convs = ws.conversations()
    variables: list[dict[str, str]] = []
    owners: list[tuple[int, int]] = []  # (row position in ids, turn number)
    for r, rid in enumerate(ids):
        for t, (instruction, _response) in enumerate(user_turns(convs[ws.index[rid]])):
            variables.append({"instruction": instruction})
            owners.append((r, t))
    from curate.llm.judges import workspace_cache_path

    cache = Path(cache_path) if cache_path is not None else workspace_cache_path(ws)
    results = run_prompt(loaded, variables, backend, cache, progress=progress, params=params)

    row_tags: list[list[str] | None] = [[] for _ in ids]
    row_fail: list[list[str]] = [[] for _ in ids]
    for (r, t), res in zip(owners, results, strict=True):
        if res.failure is not None:
            raw_text = res.text if res.text is not None else json.dumps(res.raw, default=str)
            row_fail[r].append(f"turn {t + 1}: {res.failure}; raw output: {raw_text[:300]}")
            continue
        row_tags[r].extend(it.tag.strip() for it in res.parsed.tags if it.tag.strip())  # type: ignore[union-attr]
    values = [None if fail else _dedupe(tags or []) for tags, fail in zip(row_tags, row_fail, strict=True)]
    failures = ["; ".join(f) if f else None for f in row_fail]
    cost = sum(res.cost_usd for res in results if not res.cached)  # cached calls were paid before
    prov = {"kind": "instag_tags", "prompt": loaded.name, "prompt_version": loaded.version,
            "prompt_fingerprint": loaded.fingerprint, "model": getattr(backend, "model", None),
            "turns": len(variables), "failed_rows": sum(1 for f in failures if f), "cost_usd": cost}
    ws.add_column(column, values, prov, ids=ids)
    ws.add_column(f"{column}_failure", failures, {**prov, "kind": "instag_failures"}, ids=ids)
    return {"rows": len(ids), "turns": len(variables), "failed_rows": prov["failed_rows"],
            "cached_calls": sum(1 for res in results if res.cached), "cost_usd": cost}


# -- normalisation ----------------------------------------------------------------------------------
@dataclass
class StepReport:
    """What one normalisation step did: distinct tags before and after, and the parameters it used."""

    step: str
    tags_in: int
    tags_out: int
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def scaled_threshold(paper_value: int, n_rows: int, reference_rows: int = REFERENCE_POOL_ROWS,
                     floor: int = 1) -> int:
    """The paper's absolute count threshold scaled to a pool of ``n_rows`` rows.

    Rule: pools of at least ``reference_rows`` rows use ``paper_value`` unchanged; smaller pools use
    ``max(floor, ceil(paper_value * n_rows / reference_rows))`` (the same share of the pool).
    """
    if n_rows >= reference_rows:
        return paper_value
    return max(floor, math.ceil(paper_value * n_rows / reference_rows))


class Normalizer:
    """Learn a raw -> canonical intent-tag mapping (fit) and apply it to rows (transform).

    Steps, in the paper's order, each optional (set it to ``False``/``None`` to skip):

    1. frequency filter: drop raw tags seen in fewer than ``min_frequency`` rows (paper: 20). For pools
       smaller than ``reference_rows`` the threshold is scaled by :func:`scaled_threshold` and a warning says so.
    2. rule aggregation: lowercase, runs of non-alphanumerics to one space (except a ``#``/``+`` suffix,
       so ``C#``, ``C++`` and ``C`` stay apart), each word stemmed with the Snowball stemmer; tags with the
       same stemmed key merge, named by their most frequent surface form.
    3. semantic aggregation: embed the tags (``embed``; default :func:`curate.embed.encode`), DBSCAN with
       cosine distance ``eps`` (paper: 0.05); each cluster merges into its most frequent member.
    4. association aggregation: FP-Growth (mlxtend) over the rows' tag sets with ``min_support`` rows
       (paper: 40, scaled like alpha) and rules of confidence >= ``min_confidence`` (paper: 0.99).
       ``association_mode="mutual"`` merges a pair only when both A->B and B->A hold (the tags always
       co-occur); ``"implication"`` also folds A into B when only A->B holds.

    Ties when choosing a canonical member: higher row count, then shorter, then alphabetical.
    """

    def __init__(self, *, min_frequency: int | None = 20, scale_small_pools: bool = True,
                 reference_rows: int = REFERENCE_POOL_ROWS, rules: bool = True, stemmer_language: str = "english",
                 semantic: bool = True, eps: float = 0.05, embed: EmbedFn | None = None,
                 association: bool = True, min_support: int = 40, min_confidence: float = 0.99,
                 association_mode: str = "mutual"):
        if association_mode not in ("mutual", "implication"):
            raise ValueError(f"association_mode must be 'mutual' or 'implication', not {association_mode!r}")
        self.params = {"min_frequency": min_frequency, "scale_small_pools": scale_small_pools,
                       "reference_rows": reference_rows, "rules": rules, "stemmer_language": stemmer_language,
                       "semantic": semantic, "eps": eps, "association": association, "min_support": min_support,
                       "min_confidence": min_confidence, "association_mode": association_mode}
        self.embed = embed
        self.mapping: dict[str, str | None] = {}   # raw tag -> canonical (None: dropped)
        self.key_map: dict[str, str] = {}          # rule key -> canonical, for raw tags unseen at fit time
        self.report: list[StepReport] = []
        self.fitted_rows = 0

    # rule aggregation ------------------------------------------------------------------------------
    def _stemmer(self):
        import snowballstemmer

        if not hasattr(self, "_stem"):
            self._stem = snowballstemmer.stemmer(self.params["stemmer_language"])
        return self._stem

    @staticmethod
    def surface(tag: str) -> str:
        """Lowercase, every other run of non-alphanumerics (underscore included) turned into one space, except
        a ``#``/``+`` suffix that names something (``C#``, ``C++``, ``Notepad++``: see :data:`SYMBOL_WORD`)."""
        return " ".join(SYMBOL_WORD.findall(tag.lower()))

    def rule_key(self, tag: str) -> str:
        """The rule-aggregation key: the surface form with each word stemmed (a symbol suffix is kept
        as is after the stemmed word, so ``C++`` and ``C`` keep different keys)."""
        words = self.surface(tag).split()
        if not self.params["rules"]:
            return " ".join(words)
        cores = [w.rstrip(SYMBOL_SUFFIX_CHARS) for w in words]
        stems = self._stemmer().stemWords(cores)
        return " ".join(stem + word[len(core):] for stem, core, word in zip(stems, cores, words, strict=True))

    # fit -------------------------------------------------------------------------------------------
    def fit(self, rows: TagLists) -> Normalizer:
        """Learn the mapping from rows' raw tag lists (``None`` rows are ignored)."""
        p = self.params
        sets = [set(r) for r in rows if r]
        self.fitted_rows = n_rows = len(sets)
        self.report = []
        raw_counts = Counter(t for s in sets for t in s)
        current: dict[str, str | None] = {t: t for t in raw_counts}  # raw -> current name

        def names() -> set[str]:
            return {v for v in current.values() if v is not None}

        def name_counts() -> Counter:
            counts: Counter = Counter()
            for s in sets:
                counts.update({current[t] for t in s if current[t] is not None})
            return counts

        def rename(old_to_new: dict[str, str]) -> None:
            for raw, name in current.items():
                if name is not None and name in old_to_new:
                    current[raw] = old_to_new[name]

        # 1. frequency filter
        if p["min_frequency"]:
            alpha = p["min_frequency"]
            note = ""
            if p["scale_small_pools"] and n_rows < p["reference_rows"]:
                alpha = scaled_threshold(p["min_frequency"], n_rows, p["reference_rows"])
                note = (f"pool of {n_rows:,} rows < {p['reference_rows']:,}: alpha scaled from "
                        f"{p['min_frequency']} to {alpha} = max(1, ceil({p['min_frequency']} * rows / {p['reference_rows']:,}))")
                warnings.warn(f"InsTag frequency filter: {note}", stacklevel=2)
            before = len(names())
            for raw, c in raw_counts.items():
                if c < alpha:
                    current[raw] = None
            self.report.append(StepReport("frequency_filter", before, len(names()), {"alpha": alpha}, note))

        # 2. rule aggregation
        if p["rules"]:
            before = names()
            counts = name_counts()
            groups: dict[str, list[str]] = {}
            for name in before:
                groups.setdefault(self.rule_key(name), []).append(name)
            old_to_new: dict[str, str] = {}
            for members in groups.values():
                surf: Counter = Counter()
                for m in members:
                    surf[self.surface(m)] += counts[m]
                canon = _pick(surf)
                old_to_new.update({m: canon for m in members})
            rename(old_to_new)
            self.report.append(StepReport("rule_aggregation", len(before), len(names()),
                                          {"stemmer": f"snowball/{p['stemmer_language']}"}))

        # 3. semantic aggregation
        if p["semantic"]:
            before = sorted(names())
            if len(before) > 1:
                from sklearn.cluster import DBSCAN

                embed = self.embed
                if embed is None:
                    from curate.embed import encode as embed
                vectors = np.asarray(embed(before), dtype=np.float64)
                labels = DBSCAN(eps=p["eps"], min_samples=1, metric="cosine").fit(vectors).labels_
                counts = name_counts()
                old_to_new = {}
                clusters: dict[int, list[str]] = {}
                for name, lab in zip(before, labels, strict=True):
                    clusters.setdefault(int(lab), []).append(name)
                for members in clusters.values():
                    canon = _pick(Counter({m: counts[m] for m in members}))
                    old_to_new.update({m: canon for m in members})
                rename(old_to_new)
            self.report.append(StepReport("semantic_aggregation", len(before), len(names()),
                                          {"eps": p["eps"], "metric": "cosine", "algorithm": "DBSCAN(min_samples=1)",
                                           "embed": getattr(self.embed, "__name__", "curate.embed.encode")}))

        # 4. association aggregation
        if p["association"]:
            before = len(names())
            support = p["min_support"]
            note = ""
            if p["scale_small_pools"] and n_rows < p["reference_rows"]:
                support = scaled_threshold(p["min_support"], n_rows, p["reference_rows"], floor=2)
                note = (f"pool of {n_rows:,} rows < {p['reference_rows']:,}: min support scaled from "
                        f"{p['min_support']} to {support} rows = max(2, ceil({p['min_support']} * rows / {p['reference_rows']:,}))")
                warnings.warn(f"InsTag association aggregation: {note}", stacklevel=2)
            merges = self._association_merges(sets, current, support)
            rename(merges)
            self.report.append(StepReport("association_aggregation", before, len(names()),
                                          {"min_support_rows": support, "min_confidence": p["min_confidence"],
                                           "mode": p["association_mode"]}, note))

        self.mapping = dict(current)
        self.key_map = {}
        for raw, canon in self.mapping.items():
            if canon is not None:
                self.key_map.setdefault(self.rule_key(raw), canon)
        return self

    def _association_merges(self, sets: list[set[str]], current: dict[str, str | None], support: int) -> dict[str, str]:
        """FP-Growth pair rules -> {merged tag: tag it merges into} (union-find, so merges chain)."""
        import pandas as pd
        from mlxtend.frequent_patterns import association_rules, fpgrowth
        from mlxtend.preprocessing import TransactionEncoder

        p = self.params
        transactions = [sorted({current[t] for t in s if current[t] is not None}) for s in sets]
        transactions = [t for t in transactions if t]
        if len(transactions) < 2:
            return {}
        enc = TransactionEncoder()
        onehot = enc.fit(transactions).transform(transactions, sparse=True)
        df = pd.DataFrame.sparse.from_spmatrix(onehot, columns=enc.columns_)
        itemsets = fpgrowth(df, min_support=support / len(transactions), use_colnames=True, max_len=2)
        if itemsets.empty or itemsets["itemsets"].map(len).max() < 2:
            return {}
        rules = association_rules(itemsets, num_itemsets=len(transactions), metric="confidence",
                                  min_threshold=p["min_confidence"])
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

        pairs = sorted(implied)
        for a, b in pairs:
            if p["association_mode"] == "mutual" and (b, a) not in implied:
                continue
            ra, rb = find(a), find(b)
            if ra == rb:
                continue
            keep = _pick(Counter({ra: counts[ra], rb: counts[rb]}))
            if p["association_mode"] == "implication" and (b, a) not in implied:
                keep = rb  # a always comes with b: fold a into b
            drop = ra if keep == rb else rb
            parent[drop] = keep
        return {x: find(x) for x in parent}

    # transform -------------------------------------------------------------------------------------
    def _canon(self, raw: str) -> str | None:
        if raw in self.mapping:
            return self.mapping[raw]
        return self.key_map.get(self.rule_key(raw))

    def transform(self, rows: TagLists) -> list[list[str] | None]:
        """Map each row's raw tags to canonical tags (order kept, duplicates and dropped tags removed).

        Raw tags unseen at fit time map through their rule key when a fitted tag shares it, else drop.
        ``None`` rows (tagging failed) stay ``None``.
        """
        if not self.mapping and not self.report:
            raise ValueError("Normalizer is not fitted; call fit() or load() first")
        out: list[list[str] | None] = []
        for r in rows:
            if r is None:
                out.append(None)
                continue
            out.append(_dedupe([c for c in (self._canon(t) for t in r) if c is not None]))
        return out

    def fit_transform(self, rows: TagLists) -> list[list[str] | None]:
        return self.fit(rows).transform(rows)

    @property
    def vocabulary(self) -> list[str]:
        """The canonical tags, alphabetical."""
        return sorted({c for c in self.mapping.values() if c is not None})

    # persistence -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"kind": "curate.tags.Normalizer", "version": 1, "params": self.params, "fitted_rows": self.fitted_rows,
                "report": [asdict(s) for s in self.report], "mapping": self.mapping, "key_map": self.key_map}

    def save(self, path: str | Path) -> Path:
        """Write the learned mapping, parameters and step report as JSON."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, ensure_ascii=False))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, embed: EmbedFn | None = None) -> Normalizer:
        data = json.loads(Path(path).read_text())
        if data.get("kind") != "curate.tags.Normalizer":
            raise ValueError(f"{path}: not a saved curate Normalizer")
        norm = cls(**data["params"], embed=embed)
        norm.mapping = data["mapping"]
        norm.key_map = data["key_map"]
        norm.report = [StepReport(**s) for s in data["report"]]
        norm.fitted_rows = data["fitted_rows"]
        return norm

    def report_lines(self) -> list[str]:
        return [f"{s.step}: {s.tags_in:,} -> {s.tags_out:,} tags {s.params}" + (f" ({s.note})" if s.note else "")
                for s in self.report]

    def _repr_html_(self) -> str:
        rows = "".join(f"<tr><td>{html.escape(s.step)}</td><td>{s.tags_in:,}</td><td>{s.tags_out:,}</td>"
                       f"<td>{html.escape(json.dumps(s.params))}</td><td>{html.escape(s.note)}</td></tr>"
                       for s in self.report)
        return (f"<div><b>InsTag Normalizer</b> ({self.fitted_rows:,} rows, {len(self.vocabulary):,} canonical tags)"
                f"<table><tr><th>step</th><th>tags in</th><th>tags out</th><th>params</th><th>note</th></tr>"
                f"{rows}</table></div>")

    def __repr__(self) -> str:
        return f"Normalizer(fitted_rows={self.fitted_rows}, tags={len(self.vocabulary)})"


def _pick(counts: Counter) -> str:
    """Canonical member: highest count, then shortest, then alphabetical."""
    return min(counts, key=lambda t: (-counts[t], len(t), t))


def normalize(ws, normalizer: Normalizer | None = None, *, source: str = "tags_raw", column: str = "tags",
              refit: bool = True, mapping_path: str | Path | None = None) -> Normalizer:
    """Fit (unless ``refit=False``) and apply ``normalizer`` to column ``source``; write ``column``.

    The mapping is saved as JSON (default ``WS/cache/instag_mapping.json``) and named in the provenance.
    """
    normalizer = normalizer or Normalizer()
    raw = ws.column(source)
    if refit:
        normalizer.fit(raw)
    values = normalizer.transform(raw)
    path = normalizer.save(Path(mapping_path) if mapping_path else ws.cache_dir / "instag_mapping.json")
    prov = {"kind": "instag_normalized", "source": source, "source_provenance": ws.column_provenance(source)
            if ws.has_column(source) else None, "mapping_file": str(path), "params": normalizer.params,
            "steps": [asdict(s) for s in normalizer.report], "canonical_tags": len(normalizer.vocabulary)}
    # Raw tags that map to nothing (rare ones the frequency filter removed, or unseen with refit=False) are
    # left out of ``column``; count them so the provenance says how much was dropped.
    dropped = Counter(t for r in raw if r for t in r if normalizer._canon(t) is None)
    prov.update(dropped_tag_occurrences=sum(dropped.values()), dropped_distinct_tags=len(dropped))
    ws.add_column(column, values, prov)
    return normalizer


# -- metrics ---------------------------------------------------------------------------------------
def all_tags(rows: TagLists) -> set[str]:
    return {t for r in rows if r for t in r}


def coverage(selected: TagLists, universe: TagLists | set[str]) -> float:
    """Diversity: |union of the selected rows' tags| / |all tags of the pool|."""
    total = universe if isinstance(universe, set) else all_tags(universe)
    if not total:
        return 0.0
    return len(all_tags(selected) & total) / len(total)


def tags_per_query(rows: TagLists) -> float:
    """Complexity: mean number of tags per tagged row (rows whose tagging failed are left out)."""
    counts = [len(r) for r in rows if r is not None]
    return float(np.mean(counts)) if counts else 0.0


def tag_frequency(rows: TagLists) -> list[tuple[str, int]]:
    """(tag, rows carrying it), most frequent first, ties alphabetical."""
    counts = Counter(t for r in rows if r for t in set(r))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def random_coverage(rows: TagLists, size: int, seeds: int | Sequence[int] = 10) -> tuple[float, float]:
    """Coverage of uniform random selections of ``size`` rows: (mean, std) over the seeds."""
    seed_list = range(seeds) if isinstance(seeds, int) else seeds
    universe = all_tags(rows)
    values = []
    for s in seed_list:
        pick = np.random.default_rng(s).choice(len(rows), size=min(size, len(rows)), replace=False)
        values.append(coverage([rows[i] for i in pick], universe))
    return float(np.mean(values)), float(np.std(values))


def coverage_report(ws, selection: str | list[str], *, tags_column: str = "tags", seeds: int = 10) -> dict[str, Any]:
    """A selection's tag coverage and tags per query, beside random selections of the same size."""
    ids = ws.selection(selection).ids if isinstance(selection, str) else list(selection)
    rows = ws.column(tags_column)
    chosen = [rows[ws.index[i]] for i in ids]
    mean, std = random_coverage(rows, len(ids), seeds)
    return {"rows": len(ids), "coverage": coverage(chosen, rows), "random_coverage_mean": mean,
            "random_coverage_std": std, "random_seeds": seeds, "tags_per_query": tags_per_query(chosen),
            "pool_tags_per_query": tags_per_query(rows), "pool_tags": len(all_tags(rows))}


# -- complexity-first diverse sampling -------------------------------------------------------------
def instag_sample(tag_lists: TagLists, budget: int, ids: Sequence[str] | None = None
                  ) -> tuple[list[int], list[str], list[str], list[int]]:
    """Complexity-first diverse sampling over positions ``0..n-1``.

    Order rows by tag count descending, ties by id (``ids``, default the position) ascending. Sweep that
    order, taking a row whenever its tags add at least one tag not yet covered in this sweep; the covered
    set resets at each new sweep; stop at ``budget`` rows or when no tagged row is left. Rows with no tags
    (empty list or ``None``) never qualify.

    Returns (positions in rank order, decisions, reasons, ranks): kept rows first in the order they were
    taken, then the others in tag-count order.
    """
    n = len(tag_lists)
    key_ids = list(ids) if ids is not None else [f"{i:012d}" for i in range(n)]
    sets = [set(r) if r else set() for r in tag_lists]
    order = sorted(range(n), key=lambda i: (-len(sets[i]), key_ids[i]))
    remaining = [i for i in order if sets[i]]
    kept: list[int] = []
    reasons: dict[int, str] = {}
    sweep = 0
    while remaining and len(kept) < budget:
        sweep += 1
        covered: set[str] = set()
        left: list[int] = []
        for i in remaining:
            if len(kept) >= budget:
                break
            new = sets[i] - covered
            if new:
                kept.append(i)
                covered |= sets[i]
                shown = ", ".join(sorted(new)[:5]) + (", ..." if len(new) > 5 else "")
                reasons[i] = f"sweep {sweep}: {len(sets[i])} tags, {len(new)} new in this sweep ({shown})"
            else:
                left.append(i)
        remaining = left
    kept_set = set(kept)
    positions = kept + [i for i in order if i not in kept_set]
    decisions, why = [], []
    for i in positions:
        if i in kept_set:
            decisions.append("kept")
            why.append(reasons[i])
        elif not sets[i]:
            decisions.append("no_tags")
            why.append("row has no tags (or tagging failed): never qualifies")
        else:
            decisions.append("not_reached")
            why.append(f"budget of {budget} rows reached first ({len(sets[i])} tags)")
    return positions, decisions, why, list(range(len(positions)))


def instag_select(ws, budget: int, tags_column: str = "tags", rows: Sequence[int] | None = None
                  ) -> tuple[list[str], list[str], list[str]]:
    """Selector ``method="instag"``: complexity-first diverse sampling on ``tags_column``.

    ``rows``: candidate pool positions (default: the whole pool). Returns the workspace selection triple
    (ids in rank order, decisions, reasons); tag-count ties are broken by row id.
    """
    ids = ws.ids
    candidates = list(range(len(ids))) if rows is None else [int(r) for r in rows]
    column = ws.column(tags_column)
    positions, decisions, reasons, _ = instag_sample([column[p] for p in candidates], budget,
                                                     [ids[p] for p in candidates])
    return [ids[candidates[i]] for i in positions], decisions, reasons


def _instag_selector(ws, rows, budget: int, tags_column: str = "tags"):
    """Adapter to :mod:`curate.select`'s selector signature (pool positions in, ``SelectorResult`` out)."""
    from curate.select import SelectorResult  # type: ignore[import-not-found]

    candidates = [int(r) for r in rows]
    column = ws.column(tags_column)
    tag_lists = [column[p] for p in candidates]
    positions, decisions, reasons, _ = instag_sample(tag_lists, budget, [ws.ids[p] for p in candidates])
    kept = [tag_lists[i] for i, d in zip(positions, decisions, strict=True) if d == "kept"]
    info = {"tags_column": tags_column, "coverage": coverage(kept, tag_lists),
            "tags_per_query": tags_per_query(kept), "tie_break": "row id ascending"}
    return SelectorResult([candidates[i] for i in positions], decisions, reasons, info)


def register() -> None:
    """Add ``instag`` to the selector registry of :mod:`curate.select` (``ws.select(method="instag")``)."""
    from curate.select import register as add_selector  # type: ignore[import-not-found]

    add_selector("instag")(_instag_selector)


# -- small tagger -----------------------------------------------------------------------------------
class TagClassifier:
    """Multi-label tagger: one-vs-rest logistic regression over sentence embeddings.

    Trained on normalised LLM tags, it tags the rest of a pool without LLM calls. Weights are stored as
    safetensors (``coef`` labels x dim, ``intercept``) with the labels and parameters in its metadata.
    """

    def __init__(self, *, C: float = 1.0, min_label_rows: int = 2, threshold: float = 0.5,
                 class_weight: str | None = "balanced", max_iter: int = 1000):
        self.params = {"C": C, "min_label_rows": min_label_rows, "threshold": threshold,
                       "class_weight": class_weight, "max_iter": max_iter}
        self.labels: list[str] = []
        self.coef: np.ndarray | None = None
        self.intercept: np.ndarray | None = None
        self.dropped_labels: list[str] = []

    def fit(self, X: np.ndarray, tag_lists: TagLists) -> TagClassifier:
        """Fit on embeddings ``X`` (rows x dim) and each row's tags; labels with too few rows are left out."""
        from sklearn.linear_model import LogisticRegression
        from sklearn.multiclass import OneVsRestClassifier
        from sklearn.preprocessing import MultiLabelBinarizer

        X = np.asarray(X, dtype=np.float64)
        keep_rows = [i for i, r in enumerate(tag_lists) if r is not None]
        rows = [list(tag_lists[i] or []) for i in keep_rows]
        counts = Counter(t for r in rows for t in set(r))
        n = len(rows)
        self.labels = sorted(t for t, c in counts.items() if self.params["min_label_rows"] <= c < n)
        self.dropped_labels = sorted(set(counts) - set(self.labels))
        if not self.labels:
            raise ValueError("no tag has enough rows (and is absent from some) to train a classifier")
        Y = MultiLabelBinarizer(classes=self.labels).fit_transform([[t for t in r if t in self.labels] for r in rows])
        base = LogisticRegression(C=self.params["C"], class_weight=self.params["class_weight"],
                                  max_iter=self.params["max_iter"])
        ovr = OneVsRestClassifier(base).fit(X[keep_rows], Y)
        self.coef = np.vstack([e.coef_.ravel() for e in ovr.estimators_]).astype(np.float32)
        self.intercept = np.array([e.intercept_[0] for e in ovr.estimators_], dtype=np.float32)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise ValueError("TagClassifier is not fitted")
        z = np.asarray(X, dtype=np.float32) @ self.coef.T + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def predict(self, X: np.ndarray, threshold: float | None = None, top_k: int | None = None) -> list[list[str]]:
        """Tags per row: labels with probability >= ``threshold``, or the ``top_k`` most probable."""
        proba = self.predict_proba(X)
        if top_k is not None:
            idx = np.argsort(-proba, axis=1, kind="stable")[:, :top_k]
            return [[self.labels[j] for j in row] for row in idx]
        thr = self.params["threshold"] if threshold is None else threshold
        return [[self.labels[j] for j in np.flatnonzero(row >= thr)] for row in proba]

    def save(self, path: str | Path) -> Path:
        from safetensors.numpy import save_file

        if self.coef is None:
            raise ValueError("TagClassifier is not fitted")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {"kind": "curate.tags.TagClassifier", "labels": json.dumps(self.labels),
                "params": json.dumps(self.params), "dropped_labels": json.dumps(self.dropped_labels)}
        save_file({"coef": self.coef, "intercept": self.intercept}, str(path), metadata=meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> TagClassifier:
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
            if meta.get("kind") != "curate.tags.TagClassifier":
                raise ValueError(f"{path}: not a saved curate TagClassifier")
            clf = cls(**json.loads(meta["params"]))
            clf.coef = fh.get_tensor("coef")
            clf.intercept = fh.get_tensor("intercept")
        clf.labels = json.loads(meta["labels"])
        clf.dropped_labels = json.loads(meta["dropped_labels"])
        return clf

    def __repr__(self) -> str:
        return f"TagClassifier(labels={len(self.labels)}, params={self.params})"


def tagger_agreement(predicted: TagLists, true: TagLists, labels: Sequence[str]) -> dict[str, float]:
    """Micro/macro F1 over ``labels``, plus how well the predicted tags reproduce the true tag coverage.

    ``coverage_true``/``coverage_pred``: share of ``labels`` covered by the union of the true/predicted
    tags; ``covered_jaccard``: Jaccard of those two covered sets; ``tags_per_query_true/pred``.
    """
    from sklearn.metrics import f1_score
    from sklearn.preprocessing import MultiLabelBinarizer

    labels = list(labels)
    label_set = set(labels)
    true_in = [[t for t in (r or []) if t in label_set] for r in true]
    pred_in = [[t for t in (r or []) if t in label_set] for r in predicted]
    mlb = MultiLabelBinarizer(classes=labels)
    yt, yp = mlb.fit_transform(true_in), mlb.transform(pred_in)
    cov_t, cov_p = all_tags(true_in), all_tags(pred_in)
    union = cov_t | cov_p
    return {"micro_f1": float(f1_score(yt, yp, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(yt, yp, average="macro", zero_division=0)),
            "coverage_true": len(cov_t) / len(labels), "coverage_pred": len(cov_p) / len(labels),
            "covered_jaccard": len(cov_t & cov_p) / len(union) if union else 1.0,
            "tags_per_query_true": tags_per_query(true_in), "tags_per_query_pred": tags_per_query(pred_in)}


def row_texts(ws, ids: list[str] | None = None) -> list[str]:
    """The text the small tagger reads for a row: its user turns, joined by blank lines (what embed() embeds)."""
    from curate.embed import row_text

    convs = ws.conversations()
    want = ws.ids if ids is None else ids
    return [row_text(convs[ws.index[i]], "instruction") for i in want]


def _row_vectors(ws, ids: list[str], embeddings: str | None) -> np.ndarray:
    if embeddings is None:
        from curate.embed import encode

        return encode(row_texts(ws, ids))
    return np.asarray(ws.embeddings(embeddings, ids=ids))


def train_tagger(ws, *, tags_column: str = "tags", embeddings: str | None = None, test_share: float = 0.2,
                 seed: int = 0, classifier: TagClassifier | None = None) -> tuple[TagClassifier, dict[str, float]]:
    """Fit a :class:`TagClassifier` on the rows that have tags; score it on a held-out share of them.

    ``embeddings``: a stored embedding set of the workspace, or ``None`` to embed the rows' user turns now.
    Returns the classifier (refitted on all tagged rows) and its held-out agreement (:func:`tagger_agreement`).
    """
    values = ws.column(tags_column)
    ids = [i for i, v in zip(ws.ids, values, strict=True) if v]
    tag_lists = [v for v in values if v]
    if len(ids) < 10:
        raise ValueError(f"only {len(ids)} rows have tags in {tags_column!r}; need at least 10 to train a tagger")
    X = _row_vectors(ws, ids, embeddings)
    perm = np.random.default_rng(seed).permutation(len(ids))
    n_test = max(1, int(round(test_share * len(ids))))
    test, train = perm[:n_test], perm[n_test:]
    clf = classifier or TagClassifier()
    clf.fit(X[train], [tag_lists[i] for i in train])
    scores = tagger_agreement(clf.predict(X[test]), [tag_lists[i] for i in test], clf.labels)
    scores.update({"train_rows": int(len(train)), "test_rows": int(n_test), "labels": len(clf.labels)})
    clf.fit(X, tag_lists)
    return clf, scores


def predict_tags(ws, classifier: TagClassifier, *, column: str = "tags_predicted", embeddings: str | None = None,
                 threshold: float | None = None, ids: list[str] | None = None) -> list[list[str]]:
    """Tag rows (default: the whole pool) with the small tagger; write ``column`` with provenance."""
    ids = ws.ids if ids is None else list(ids)
    predicted = classifier.predict(_row_vectors(ws, ids, embeddings), threshold=threshold)
    ws.add_column(column, predicted, {"kind": "instag_tagger", "labels": len(classifier.labels),
                                      "params": classifier.params, "threshold": threshold,
                                      "embeddings": embeddings or "curate.embed.encode(user turns)"}, ids=ids)
    return predicted
