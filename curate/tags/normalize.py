"""InsTag normalisation: learn a raw -> canonical tag mapping, store it, and write the row-level ``tags``.

:class:`Normalizer` learns the mapping from rows' raw tag lists (frequency filter, rule aggregation,
semantic aggregation with DBSCAN, association aggregation with FP-Growth) and reports what each step
did. :func:`~curate.tags.normalize_step.normalize` fits it on a workspace's ``tags_raw`` (per-turn tag lists),
stores the mapping as the workspace artifact ``instag_mapping`` and applies
:class:`~curate.tags.normalize_step.NormalizeStep`, which writes column ``tags``: each row's canonical tags, the union
over its turns.

InsTag (Lu et al. 2023) released neither its normalisation nor its sampling code; this is our own
implementation of the procedure its paper describes. Defaults: :data:`curate.defaults.NORMALIZER`.
"""

from __future__ import annotations

import html
import json
import math
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import regex

from curate.defaults import NORMALIZER
from curate.storage.files import atomic_write_bytes
from curate.tags.aggregate import (
           ASSOCIATION_MODES,
           EmbedFn,
           association_merges,
           check_stemmer_language,
           pick,
           semantic_merges,
)
from curate.tags.metrics import TagLists
from curate.tags.tagger import dedupe

MAPPING_ARTIFACT = NORMALIZER.mapping_artifact

# Rule aggregation's words: runs of letters/digits (with their combining marks: Devanagari, Tamil, decomposed
# accents); a word ending in a letter keeps a run of '#'/'+' right after it when no letter follows (C#, C++, F#,
# Notepad++, C++17 -> "c++ 17"), so C, C# and C++ stay apart; anything else ("a+b", "#tag", "C/C++") separates.
SYMBOL_SUFFIX_CHARS = "#+"
SYMBOL_WORD = regex.compile(r"[\p{L}\p{N}\p{M}]*[\p{L}\p{M}][#+]+(?![\p{L}\p{M}])|[\p{L}\p{N}\p{M}]+")
INVISIBLE = regex.compile(r"\p{Cf}")  # soft hyphen, zero-width space, word joiner, BOM, bidi marks: not separators


@dataclass
class StepReport:
    """What one normalisation step did: distinct tags before and after, and the parameters it used."""

    step: str
    tags_in: int
    tags_out: int
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""


def scaled_threshold(paper_value: int, n_rows: int, reference_rows: int = NORMALIZER.reference_rows,
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
       smaller than ``reference_rows`` the threshold is scaled by :func:`scaled_threshold`, noted in ``report``.
       A rare spelling of a tag kept under another spelling (same rule key) maps to that tag at the end.
    2. rule aggregation: case-folded, runs of non-alphanumerics to one space (except a ``#``/``+`` suffix,
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

    def __init__(self, *, min_frequency: int | None = NORMALIZER.min_frequency, scale_small_pools: bool = True,
                 reference_rows: int = NORMALIZER.reference_rows, rules: bool = True,
                 stemmer_language: str = NORMALIZER.stemmer_language,
                 semantic: bool = True, eps: float = NORMALIZER.eps, embed: EmbedFn | None = None,
                 association: bool = True, min_support: int = NORMALIZER.min_support,
                 min_confidence: float = NORMALIZER.min_confidence,
                 association_mode: str = "mutual"):
        if association_mode not in ASSOCIATION_MODES:
            raise ValueError(f"association_mode must be one of {ASSOCIATION_MODES}, not {association_mode!r}")
        check_stemmer_language(stemmer_language)  # was a KeyError deep in fit, after the frequency filter ran
        self.params = {"min_frequency": min_frequency, "scale_small_pools": scale_small_pools,
                       "reference_rows": reference_rows, "rules": rules, "stemmer_language": stemmer_language,
                       "semantic": semantic, "eps": eps, "association": association, "min_support": min_support,
                       "min_confidence": min_confidence, "association_mode": association_mode}
        self.embed = embed
        self.mapping: dict[str, str | None] = {}   # raw tag -> canonical (None: dropped)
        self.key_map: dict[str, str] = {}          # rule key -> canonical, for raw tags unseen at fit time
        self.report: list[StepReport] = []
        self.fitted_rows = 0
        self._stems: dict[str, str] = {}           # word -> stem: the pure-Python stemmer once per distinct word

    # rule aggregation ------------------------------------------------------------------------------
    def _stemmer(self):
        import snowballstemmer

        if not hasattr(self, "_stem"):
            self._stem = snowballstemmer.stemmer(self.params["stemmer_language"])
        return self._stem

    @staticmethod
    def surface(tag: str) -> str:
        """The name a tag is stored under: NFKC-normalised (full-width and composed forms as one), invisible format
        characters removed and lower-cased, every other run of non-alphanumerics (underscore included) turned into one
        space, except a ``#``/``+`` suffix that names something (``C#``, ``C++``, ``Notepad++``: see
        :data:`SYMBOL_WORD`). Lower-cased, not case-folded: folding wrote "Straße" as "strasse" and the Greek
        "μετάφρασης" as "μετάφρασησ" (its final sigma medial); :meth:`rule_key` folds, to match them."""
        return " ".join(SYMBOL_WORD.findall(INVISIBLE.sub("", unicodedata.normalize("NFKC", tag)).lower()))

    def rule_key(self, tag: str) -> str:
        """The rule-aggregation key: the surface form, each word stemmed (a symbol suffix kept after it: C++, C)."""
        words = self.surface(tag).casefold().split()  # "Straße" and "STRASSE" alike
        if not self.params["rules"]:
            return " ".join(words)
        cores = [w.rstrip(SYMBOL_SUFFIX_CHARS) for w in words]
        stems = [self._stems.get(c) or self._stems.setdefault(c, self._stemmer().stemWord(c)) for c in cores]
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

        # 0. a tag without a letter or digit ("&", "...", an emoji) names no intent: dropped, never the tag ""
        for raw in raw_counts:
            if not self.surface(raw):
                current[raw] = None

        # 1. frequency filter
        if p["min_frequency"]:
            alpha = p["min_frequency"]
            note = ""
            if p["scale_small_pools"] and n_rows < p["reference_rows"]:
                alpha = scaled_threshold(p["min_frequency"], n_rows, p["reference_rows"])
                note = (f"pool of {n_rows:,} rows < {p['reference_rows']:,}: alpha scaled from "
                        f"{p['min_frequency']} to {alpha} = max(1, ceil({p['min_frequency']} * rows / {p['reference_rows']:,}))")
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
                canon = pick(surf)
                old_to_new.update({m: canon for m in members})
            rename(old_to_new)
            self.report.append(StepReport("rule_aggregation", len(before), len(names()),
                                          {"stemmer": f"snowball/{p['stemmer_language']}"}))

        # 3. semantic aggregation
        if p["semantic"]:
            before = sorted(names())
            embed, unread = self.embed, []  # the packaged model gave "翻译", "编程", "物理" one vector ([UNK])
            if embed is None:
                from curate.embed import encode as embed
                from curate.embed.vocabulary import with_unknown_tokens

                unread = with_unknown_tokens(before, None)
            if len(readable := sorted(set(before) - set(unread))) > 1:
                rename(semantic_merges(readable, name_counts(), embed, p["eps"]))
            self.report.append(StepReport("semantic_aggregation", len(before), len(names()),
                                          {"eps": p["eps"], "metric": "cosine", "algorithm": "DBSCAN(min_samples=1)",
                                           "embed": getattr(self.embed, "__name__", "curate.embed.encode"),
                                           **({"not_embedded": len(unread)} if unread else {})},
                                          f"{len(unread):,} tags with words the embedding model does not know ([UNK]) "
                                          "kept apart" if unread else ""))

        # 4. association aggregation
        if p["association"]:
            before = len(names())
            support = p["min_support"]
            note = ""
            if p["scale_small_pools"] and n_rows < p["reference_rows"]:
                support = scaled_threshold(p["min_support"], n_rows, p["reference_rows"], floor=2)
                note = (f"pool of {n_rows:,} rows < {p['reference_rows']:,}: min support scaled from "
                        f"{p['min_support']} to {support} rows = max(2, ceil({p['min_support']} * rows / {p['reference_rows']:,}))")
            transactions = [sorted({current[t] for t in s if current[t] is not None}) for s in sets]
            rename(association_merges(transactions, support, p["min_confidence"], p["association_mode"]))
            self.report.append(StepReport("association_aggregation", before, len(names()),
                                          {"min_support_rows": support, "min_confidence": p["min_confidence"],
                                           "mode": p["association_mode"]}, note))

        self.mapping = dict(current)
        self.key_map = {}
        for raw, canon in self.mapping.items():
            if canon is not None:
                self.key_map.setdefault(self.rule_key(raw), canon)
        for raw, canon in self.mapping.items():  # a rare spelling of a kept tag ('coding' beside 'Coding'): the
            if canon is None and self.surface(raw):  # frequency filter counts raw strings, before rules merge them;
                self.mapping[raw] = self.key_map.get(self.rule_key(raw))  # it maps as an unseen spelling would
        return self

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
            out.append(dedupe([c for c in (self._canon(t) for t in r) if c is not None]))
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

    @classmethod
    def from_dict(cls, data: dict[str, Any], embed: EmbedFn | None = None, where: str = "mapping") -> Normalizer:
        if not isinstance(data, dict) or data.get("kind") != "curate.tags.Normalizer":
            raise ValueError(f"{where}: not a saved curate Normalizer")
        try:
            norm = cls(**data["params"], embed=embed)
            norm.mapping, norm.key_map = dict(data["mapping"]), dict(data["key_map"])
            norm.report = [StepReport(**s) for s in data["report"]]
            norm.fitted_rows = int(data["fitted_rows"])
        except (KeyError, TypeError, ValueError) as exc:  # a hand-edited or cut-short mapping
            raise ValueError(f"{where}: not a readable Normalizer mapping ({type(exc).__name__}: {exc})") from None
        return norm

    def save(self, path: str | Path) -> Path:
        """Write the learned mapping, parameters and step report as JSON (in a workspace, :func:`normalize`
        stores it as the artifact ``instag_mapping`` instead)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps(self.to_dict(), indent=1, ensure_ascii=False).encode())
        return path

    @classmethod
    def load(cls, path: str | Path, embed: EmbedFn | None = None) -> Normalizer:
        """A mapping :meth:`save` wrote; a damaged file is a ValueError naming it."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {exc.lineno}: not JSON ({exc.msg})") from None
        return cls.from_dict(data, embed, str(path))

    @classmethod
    def from_workspace(cls, ws: Any, name: str = MAPPING_ARTIFACT, embed: EmbedFn | None = None) -> Normalizer:
        """The mapping :func:`~curate.tags.normalize_step.normalize` stored in a workspace."""
        data = ws.artifact(name)
        if data is None:
            raise ValueError(f"{ws.path}: no InsTag mapping {name!r}; run `curate tags {ws.path} --normalize`")
        return cls.from_dict(data, embed, f"{ws.path} artifact {name!r}")

    def _repr_html_(self) -> str:
        from curate.report.tables import style  # the notebook views' stylesheet (class curate)
        rows = "".join(f"<tr><td>{html.escape(s.step)}</td><td>{s.tags_in:,}</td><td>{s.tags_out:,}</td>"
                       f"<td>{html.escape(json.dumps(s.params))}</td><td>{html.escape(s.note)}</td></tr>"
                       for s in self.report)
        return (f"{style()}<div><b>InsTag Normalizer</b> ({self.fitted_rows:,} rows, {len(self.vocabulary):,} "
                f"canonical tags)<table class='curate'><tr><th>step</th><th>tags in</th><th>tags out</th><th>params</th><th>note</th></tr>"
                f"{rows}</table></div>")

    def __repr__(self) -> str:
        return f"Normalizer(fitted_rows={self.fitted_rows}, tags={len(self.vocabulary)})"
