"""Training data for a scorer: labelled turns from a label set or from a judge column, and ordered pairs.

DEITA's loop: Evol labels (``ws.labels("evol_complexity")``) or a judge's column -> a scorer -> the pool.
A judge column of a multi-turn pool gives one label per scored turn (``ws.turn_values``); the turns of one
row, and every answer to one instruction, stay on one side of every split (groups = the row's first
instruction: answers to a held-out question must not train the scorer); Evol variants of one seed stay
together (groups = the seed instruction).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from curate.errors import ScorerOptionError, WorkspaceError
from curate.rows import Turn
from curate.scorers.features import finite_number, to_turn, turn_number, turn_text, unreadable, with_columns
from curate.scorers.label_scales import JudgeScale

# Pool columns that hold the rows themselves, never labels.
POOL_TEXT_COLUMNS = ("id", "conversation", "format")

@dataclass(repr=False)
class TrainingData:
    """(turn, score) pairs to fit on, the group of each (row id or Evol seed), and what was left out."""
    turns: list[Turn]
    scores: list[float]
    groups: list[str]
    reads: list[str]
    source: str                                    # "labels <name>" or "column <name>"
    imitates: dict[str, Any] = field(default_factory=dict)
    skipped: Counter = field(default_factory=Counter)  # reason -> turns left out
    rows: int = 0                                  # rows (label records, or pool rows) read
    columns: list[str] = field(default_factory=list)   # numeric columns read as features (Scorer ``columns``)
    numbers: list[dict[str, float]] = field(default_factory=list)  # their values, one dict per kept turn
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (harder, easier) kept turns, ordered by construction
    scale: JudgeScale | None = None                # the judge's scale the labels are read on (train_scorer sets it)
    skipped_example: dict[str, str] = field(default_factory=dict)  # reason -> where it first held, and the value

    def skip(self, reason: str, example: str | None = None) -> None:
        """Count one turn left out for ``reason``; ``example``: where, and the value (the first one is kept)."""
        self.skipped[reason] += 1
        if example is not None:
            self.skipped_example.setdefault(reason, example)

    def skipped_text(self, top: int = 3) -> str:
        """The most common reasons turns were left out, with the first value each refused: one line."""
        return "; ".join(f"{n:,} x {why}" + (f" (e.g. {self.skipped_example[why]})" if why in self.skipped_example
                                             else "") for why, n in self.skipped.most_common(top))

    def __repr__(self) -> str:
        left = f", left out {sum(self.skipped.values()):,}" if self.skipped else ""
        return f"TrainingData({self.source}: {len(self.scores):,} labels in {len(set(self.groups)):,} groups{left})"

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def labelled(self) -> int:
        """Turns with a label; the others (score NaN) only enter ordered ``pairs``."""
        return sum(math.isfinite(s) for s in self.scores)

    def extend(self, other: TrainingData) -> None:
        """Append ``other``'s turns and its ordered pairs (e.g. Evol chains beside a judge column's labels)."""
        offset = len(self)
        self.turns += other.turns
        self.scores += other.scores
        self.groups += other.groups
        self.numbers += other.numbers
        self.pairs += [(a + offset, b + offset) for a, b in other.pairs]
        self.skipped.update(other.skipped)
        self.skipped_example = {**other.skipped_example, **self.skipped_example}
        self.rows += other.rows
        self.join_duplicate_groups()

    def join_duplicate_groups(self) -> None:
        """Put turns whose texts read are identical in one group, the group of the first of them: a split then never
        has one text on both sides. Groups by row or seed id alone kept repeats apart (a pool's repeated row, two Evol
        seeds of one instruction), and a held-out figure counted texts the scorer had been fitted on. The turn moves,
        not its group: joining whole groups chained every conversation with a follow-up as common as "continue" into
        one group (50 conversations, 1 group), which no split can hold out."""
        first: dict[tuple[str | None, ...], str] = {}
        self.groups = [first.setdefault(tuple(turn_text(turn, r) for r in self.reads), group)
                       for turn, group in zip(self.turns, self.groups, strict=True)]

    def leave_out_outside(self, low: float, high: float, reason: str) -> int:
        """Leave out every label outside the judge's scale ``low..high``, counted under ``reason``, never clipped: a
        turn that is also in an ordered pair stays for its pairs, unlabelled (NaN). Returns how many were left out."""
        outside = [i for i, s in enumerate(self.scores) if math.isfinite(s) and not low <= s <= high]
        if not outside:
            return 0
        in_pairs = {i for pair in self.pairs for i in pair}
        for i in outside:
            if i in in_pairs:
                self.scores[i] = math.nan
        drop = {i for i in outside if i not in in_pairs}
        keep = [i for i in range(len(self)) if i not in drop]
        new_index = {old: new for new, old in enumerate(keep)}
        self.turns = [self.turns[i] for i in keep]
        self.scores = [self.scores[i] for i in keep]
        self.groups = [self.groups[i] for i in keep]
        self.numbers = [self.numbers[i] for i in keep]
        self.pairs = [(new_index[a], new_index[b]) for a, b in self.pairs]
        self.skipped[reason] += len(outside)
        return len(outside)

    def examples(self) -> list[Any]:
        """What the scorer fits on: the turns, or with ``columns`` dict rows carrying the columns' numbers."""
        return [with_columns(t, n) for t, n in zip(self.turns, self.numbers, strict=True)]

    def keep(self, turn: Turn, score: float, group: str, numbers: dict[str, float | None]) -> bool:
        """Keep one labelled turn, or count why it is left out (a text the scorer reads, or a column's number, absent)."""
        why = unreadable(turn, self.reads, {name: numbers.get(name) for name in self.columns})
        if why:
            self.skipped[why] += 1
        else:
            self.turns.append(turn)
            self.scores.append(score)
            self.groups.append(group)
            self.numbers.append({name: float(numbers[name]) for name in self.columns})
            return True
        return False


def _reads_of(names: Sequence[str]) -> list[str]:
    return ["instruction", "response"] if "response" in names else ["instruction"]


def from_label_set(records: Any, name: str = "labels", provenance: dict[str, Any] | None = None,
                   reads: Sequence[str] | None = None, columns: Sequence[str] = (),
                   chain_pairs: bool = False) -> TrainingData:
    """Labels from a label set (``ws.labels(name)``: Evol's ``text, score, seed_id, step, operation
    [, instruction]``) or any records with ``text``/``instruction`` (+ ``response``) and ``score``.
    ``chain_pairs``: also the order Evol complexity chains have by construction (:func:`chain_order_pairs`;
    records as :func:`chain_records` gives them); a version without a score then enters only its pairs.

    Reads: the instruction and the response when the records carry a response (``instruction`` beside
    ``text``, as Evol quality labels, or a ``response`` column), else the instruction.
    """
    records = [dict(r) for r in records]
    prov = provenance or {}
    if reads is None:
        keys = set().union(*(r.keys() for r in records)) if records else set()
        reads = _reads_of(["response"] if ("text" in keys and "instruction" in keys) or "response" in keys else [])
    data = TrainingData([], [], [], list(reads), f"labels {name}", rows=len(records), columns=list(columns))
    data.imitates = {"judge": prov.get("kind", name), "label_set": name,
                     **{k: prov[k] for k in ("method", "scale") if k in prov}}
    model = (prov.get("backend") or {}).get("model") if isinstance(prov.get("backend"), dict) else None
    if model:
        data.imitates["model"] = model
    steps = [(r.get("seed_id"), r.get("step"), r.get("operation")) for r in records]
    ordered: list[tuple[int, int]] = []
    if chain_pairs:
        if data.reads != ["instruction"] or data.columns or prov.get("kind") == "quality" or \
                not all(seed is not None and isinstance(step, int) for seed, step, _ in steps):
            raise ScorerOptionError(f"label set {name!r}: ordered pairs come from Evol complexity chains (records with "
                                    "seed_id and step, reading instructions and no columns: curate evol --kind complexity)")
        ordered = chain_order_pairs(steps)
    in_pairs = {i for pair in ordered for i in pair}
    kept: dict[int, int] = {}  # record -> its turn in data
    for i, record in enumerate(records):
        score = finite_number(record.get("score"))
        if score is None and i not in in_pairs:
            data.skip("no numeric score", f"record {i}: {repr(record.get('score'))[:40]}" if "score" in record else None)
            continue
        group = str(record.get("group") or record.get("seed_id") or record.get("instruction") or record.get("text") or i)
        if data.keep(to_turn(record), math.nan if score is None else score, group,
                     {c: finite_number(record.get(c)) for c in data.columns}):
            kept[i] = len(data) - 1
    data.pairs = [(kept[a], kept[b]) for a, b in ordered if a in kept and b in kept]
    data.join_duplicate_groups()
    return data


def chain_records(ws: Any, name: str, *, scored: bool = True) -> list[dict[str, Any]]:
    """Every surviving version of label set ``name``'s Evol chains, for :func:`from_label_set` with ``chain_pairs``:
    from its ``sets.jsonl`` (sets whose rank-and-score call failed included: their order holds by construction),
    else its rows. Each record: text, score (None where the set has no scores, or everywhere unless ``scored``),
    seed_id, step, operation and group (the seed's instruction, as a pool row's split group is its instruction)."""
    try:
        path = ws.label_file(name, "sets.jsonl")
    except WorkspaceError:
        path = None
    if path is None:
        records = [dict(r) for r in ws.labels(name)]
        seeds = {r.get("seed_id"): r.get("text") for r in records if r.get("step") == 0}
        for r in records:
            r["group"] = seeds.get(r.get("seed_id")) or r.get("seed_id")
    else:
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            vs = json.loads(line)
            for i, v in enumerate(vs["variants"]):
                records.append({"text": v["text"], "score": vs["scores"][i] if vs.get("scores") else None,
                                "seed_id": vs["seed_id"], "step": v["step"], "operation": v["operation"],
                                "group": vs["instruction"]})
    if not scored:
        for r in records:
            r["score"] = None
    return records


def chain_order_pairs(steps: Sequence[tuple[Any, int, Any]]) -> list[tuple[int, int]]:
    """(harder, easier) index pairs of Evol complexity variants, by construction: within one seed, each surviving
    in-depth rewrite (add a constraint, deepen, concretize, reasoning) was made from the survivor before it, so it
    asks for more than every earlier version of its chain. An in-breadth rewrite is a new task: it starts a new
    chain. ``steps``: (seed_id, step, operation) per variant."""
    from curate.evol.rules import IN_DEPTH_OPERATIONS

    by_seed: dict[Any, list[tuple[int, Any, int]]] = {}
    for k, (seed, step, operation) in enumerate(steps):
        by_seed.setdefault(seed, []).append((step, operation, k))
    pairs: list[tuple[int, int]] = []
    for variants in by_seed.values():
        chain: list[int] = []
        for step, operation, k in sorted(variants, key=lambda v: v[0]):
            if step != 0 and operation not in IN_DEPTH_OPERATIONS:
                chain = []  # the seed, or an in-breadth rewrite: a chain of its own starts here
            pairs += [(k, earlier) for earlier in chain]
            chain.append(k)
    return pairs


def column_judge(ws: Any, column: str, reads: Sequence[str] | None = None) -> tuple[list[str], dict[str, Any]]:
    """What a scorer imitating ``column`` reads (``reads``, else what the column's provenance says its
    producer read, else the instruction) and what it imitates (judge, prompt, model), from provenance.

    ``column`` is a derived column (an LLM judge's) or a column of the pool file itself: judge labels that
    came with the data (e.g. a ``gpt4_score`` field on the rows that were judged). Such a column has no
    provenance, so the scorer reads what the rows carry: instruction and response when any row has a response.
    """
    if ws.has_column(column):
        prov = ws.column_provenance(column)
        if prov.get("kind") == "scorer":  # its agreement with the judge is what a scorer trained on it cannot see
            raise ScorerOptionError(f"{ws.path}: column {column!r} holds a trained scorer's predictions (imitating "
                                    f"{prov.get('imitates')!r}), not judge labels; train on the judge's own column")
        reads = list(reads) if reads is not None else _reads_of(prov.get("reads") or [])
        imitates = {"judge": prov.get("judge", column), "column": column,
                    **{k: prov[k] for k in ("prompt", "prompt_fingerprint", "model", "label_set", "scale")
                       if prov.get(k) is not None}}
        return reads, imitates
    if ws.has_pool and column in ws.pool.column_names and column not in POOL_TEXT_COLUMNS:
        if reads is None:
            reads = _reads_of(["response"] if any(t.response for turns in ws.turns() for t in turns) else [])
        return list(reads), {"judge": column, "column": column, "from": "pool file"}
    raise ScorerOptionError(f"{ws.path}: no column {column!r}; {pool_columns_text(ws)}")


def pool_columns_text(ws: Any) -> str:
    """The columns a judge column or ``group_by`` may name, in one wording for every such error."""
    loaded = sorted(c for c in (ws.pool.column_names if ws.has_pool else []) if c not in POOL_TEXT_COLUMNS)
    return f"derived columns {sorted(ws.columns)}, pool fields {loaded}"


def number_text(value: Any) -> Any:
    """A pool field's value as a number when it is the text of one ("7.5" from a CSV file, or a mixed-type column
    kept as JSON text), as a sort key reads it; anything else unchanged."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def row_groups(ws: Any, group_by: str | None = None, turns: list[list[Turn]] | None = None) -> list[str]:
    """Each row's split group: the value of column ``group_by`` (e.g. a question id), else the row's first
    instruction, so every answer to one instruction stays on one side (a row without a user turn: its id).
    ``turns``: ``ws.turns()`` when the caller has read them already."""
    keys = ws.column(group_by) if group_by is not None else [None] * len(ws)
    return [f"{group_by}={key}" if key is not None else row[0].instruction if row else rid
            for rid, row, key in zip(ws.ids, ws.turns() if turns is None else turns, keys, strict=True)]


def from_column(ws: Any, column: str, reads: Sequence[str] | None = None, group_by: str | None = None,
                columns: Sequence[str] = ()) -> TrainingData:
    """Labels from a judge column: one (turn, score) pair per scored turn of every row.

    ``reads`` defaults to what the column's provenance says its producer read (``reads``), else the
    instruction. Turns without a numeric value (failed, JSON output) or without a text the scorer reads
    are left out and counted in ``skipped``. ``group_by``: a column (e.g. a question id in the pool file) whose
    value keeps rows together in every split, for answers to one question whose instructions differ (a
    second turn written out with its history); a row without a value is grouped by its first instruction.
    ``columns``: numeric columns (e.g. token signals) whose per-turn numbers the scorer reads as features.
    """
    reads, imitates = column_judge(ws, column, reads)
    if group_by is not None and not ws.has_column(group_by) and \
            group_by not in (ws.pool.column_names if ws.has_pool else []):  # an option's value refused, before any read
        raise ScorerOptionError(f"{ws.path}: no column {group_by!r} to group by (group_by=, --group-by); "
                                f"{pool_columns_text(ws)}")
    from_file = not ws.has_column(column)  # a field of the pool file: a CSV's numbers arrive as text
    data = TrainingData([], [], [], reads, f"column {column}", imitates, rows=len(ws), columns=list(columns))
    all_turns = ws.turns()
    feature_values = {name: ws.column(name) for name in data.columns}
    for r, (values, turns, group) in enumerate(zip(ws.turn_values(column), all_turns, row_groups(ws, group_by, all_turns),
                                                   strict=True)):
        if values is None:
            data.skipped["no value"] += len(turns)
            continue
        if len(values) != len(turns):
            data.skipped[f"{len(values)} values for a row of {len(turns)} turns"] += len(turns)
            continue
        for t, (value, turn) in enumerate(zip(values, turns, strict=True)):
            score = finite_number(number_text(value) if from_file else value)
            if score is None:
                data.skip("no numeric value", f"row {ws.ids[r]}" + (f" turn {t + 1}" if len(turns) > 1 else "")
                          + f": {repr(value)[:40]}" if value is not None else None)
            else:
                data.keep(turn, score, group, {name: turn_number(v[r], t) for name, v in feature_values.items()})
    data.join_duplicate_groups()
    return data
