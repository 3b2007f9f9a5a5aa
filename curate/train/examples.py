"""Training examples: one token sequence per row with the positions of its response tokens.

A row's sequence is its last answered turn's chat-template request (``curate.signals.template.Prompter``:
the conversation so far rendered with the model's chat template and assistant header, then the response's
own tokens, truncated as the signals engine truncates). Earlier answered turns are trained on too when their
own request is an exact token prefix of that sequence (the usual case); otherwise they are context only and
the example counts them in ``context_only_turns``. By default no end-of-turn token is appended: the loss
covers the response tokens exactly as the signals engine scores them (the records' definition). With
``end`` (:func:`end_of_turn_ids`: the tokens the chat template closes an assistant message with, e.g.
``<|im_end|>``) each answered turn that was not truncated is trained on them too, so a model meant to answer
learns to stop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from curate.codes import Failure, FailureCode
from curate.errors import InputError, OptionError
from curate.hardware import import_torch
from curate.signals.template import Prompter
from curate.storage.step import RowInput


@dataclass(frozen=True)
class Example:
    """``ids``: the token sequence; ``positions``: indices ``j`` of response tokens (predicted from ``j - 1``)."""
    id: str
    ids: tuple[int, ...]
    positions: tuple[int, ...]
    context_only_turns: int = 0
    truncated: bool = False

    @property
    def length(self) -> int:
        """Tokens fed to the model (the last one is only predicted)."""
        return len(self.ids) - 1


def row_inputs(rows: Any) -> list[RowInput]:
    """Rows for the no-workspace entry points: ``RowInput`` as they are, pool rows (``id`` and ``conversation``, as
    ``curate.load`` gives them) or records of any shape ``curate.load`` reads (read as it reads them)."""
    from curate.pools import assign_ids, read
    from curate.rows import turns

    rows = list(rows)
    if all(isinstance(r, RowInput) for r in rows):
        return rows
    if all(isinstance(r, dict) and "id" in r and isinstance(r.get("conversation"), list) for r in rows):
        pool_rows = rows
    else:
        pool_rows = read(rows).rows  # raises InputError naming the first bad row
        assign_ids(pool_rows)  # as a load gives them: the conversation's hash
    return [RowInput(str(r["id"]), r["conversation"], turns(r["conversation"])) for r in pool_rows]


def end_of_turn_ids(prompter: Prompter) -> tuple[int, ...]:
    """The tokens the chat template writes after an assistant message's text, through its first special token
    (``<|im_end|>`` for ChatML); none when the template writes no special token there."""
    marker = "\u2063curate-end-of-answer\u2063"
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}]
    text = prompter.tokenizer.apply_chat_template(messages, tokenize=False, chat_template=prompter.chat_template)
    if marker not in text:
        return ()
    after = prompter.encode(text.split(marker, 1)[1])
    special = set(prompter.tokenizer.all_special_ids)
    stop = next((k for k, t in enumerate(after) if t in special), None)
    return () if stop is None else tuple(after[:stop + 1])


def encode_row(prompter: Prompter, row: RowInput, end: tuple[int, ...] = ()) -> Example | Failure:
    """The row's training example, or a Failure when it has no answered turn; ``end``: tokens trained after each
    answered, untruncated turn (:func:`end_of_turn_ids`)."""
    plans = prompter.plan(list(row.turns))
    if end:
        plans = [_with_end(p, end, prompter.max_length) for p in plans]
    answered = [p for p in plans if p.failure is None]
    if not answered:
        if not plans:
            return Failure(FailureCode.NO_USER_TURN, "the row has no user turn")
        return Failure(FailureCode.NO_RESPONSE, "the row has no answered turn to train on")
    last = answered[-1].conditioned
    seq = list(last.context) + list(last.target)
    positions = list(range(len(last.context), len(seq)))
    earlier: list[int] = []
    context_only = 0
    for plan in answered[:-1]:
        req = plan.conditioned
        piece = list(req.context) + list(req.target)
        if len(piece) <= len(last.context) and seq[:len(piece)] == piece:
            earlier += range(len(req.context), len(piece))
        else:
            context_only += 1
    return Example(row.id, tuple(seq), tuple(earlier + positions), context_only,
                   any(p.truncated for p in answered))


def _with_end(plan: Any, end: tuple[int, ...], max_length: int) -> Any:
    """``plan`` with ``end`` after its response, when it was answered, not truncated, and there is room."""
    req = plan.conditioned
    if plan.failure is not None or plan.truncated or len(req.context) + len(req.target) + len(end) > max_length:
        return plan
    return replace(plan, conditioned=replace(req, target=req.target + end))


def encode_rows(prompter: Prompter, rows: Sequence[RowInput], end_of_turn: bool = False
                ) -> tuple[list[Example], dict[str, Failure]]:
    """Examples of the rows that have one, and the Failure of each row that has none (by id); ``end_of_turn``:
    train each answered turn's end-of-turn tokens too."""
    end = end_of_turn_ids(prompter) if end_of_turn else ()
    examples: list[Example] = []
    skipped: dict[str, Failure] = {}
    for row in rows:
        got = encode_row(prompter, row, end)
        if isinstance(got, Failure):
            skipped[row.id] = got
        else:
            examples.append(got)
    return examples, skipped


def check_trainable(examples: Sequence[Example], skipped: dict[str, Failure]) -> None:
    """Refuse rows (:func:`encode_rows`' ``examples`` and ``skipped``) none of which has an answered turn as bad input
    data (exit 65), saying how many and why, or no rows at all (an empty selection) as a refused option (exit 78):
    both said only "nothing to train on" (exit 1)."""
    if examples:
        return
    if not skipped:
        raise OptionError("nothing to train on: no rows were given (an empty selection?)")
    codes = ", ".join(f"{code} {n:,}" for code, n in Counter(f.code for f in skipped.values()).items())
    raise InputError("the training rows", f"rows 1-{len(skipped):,}", f"none of the {len(skipped):,} rows has an "
                     f"answered turn (an assistant reply to a user message), and training learns the answers "
                     f"({codes}; first: {next(iter(skipped))})")


@dataclass
class Batch:
    """A right-padded batch: ``input_ids``/``attention_mask`` [B, L]; the response positions flattened as
    (``rows``, ``cols``) into the hidden states (the position that predicts each target), ``targets`` their
    gold ids, ``bounds`` each example's [start, end) slice of the flattened targets."""
    input_ids: Any
    attention_mask: Any
    rows: Any
    cols: Any
    targets: Any
    bounds: list[tuple[int, int]]
    index: list[int]             # which examples (indices into the run's example list)


def collate(examples: Sequence[Example], index: Sequence[int], pad_id: int, device: str) -> Batch:
    """Pad ``examples[index]`` into one batch on ``device``."""
    torch = import_torch()
    chosen = [examples[i] for i in index]
    width = max(e.length for e in chosen)
    ids = torch.full((len(chosen), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(chosen), width), dtype=torch.long)
    rows: list[int] = []
    cols: list[int] = []
    targets: list[int] = []
    bounds: list[tuple[int, int]] = []
    for b, e in enumerate(chosen):
        seq = e.ids[:-1]
        ids[b, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        mask[b, :len(seq)] = 1
        start = len(targets)
        rows += [b] * len(e.positions)
        cols += [j - 1 for j in e.positions]
        targets += [e.ids[j] for j in e.positions]
        bounds.append((start, len(targets)))
    return Batch(ids.to(device), mask.to(device), torch.tensor(rows, device=device),
                 torch.tensor(cols, device=device), torch.tensor(targets, device=device), bounds, list(index))


def split_batch(examples: Sequence[Example], index: Sequence[int], step_tokens: int | None) -> list[list[int]]:
    """``index`` cut, in order, into parts of at most ``step_tokens`` padded tokens (rows x the longest; a row
    longer than that is a part alone); None: one part."""
    if step_tokens is None:
        return [list(index)]
    parts: list[list[int]] = []
    part: list[int] = []
    width = 0
    for i in index:
        longest = max(width, examples[i].length)
        if part and longest * (len(part) + 1) > step_tokens:
            parts.append(part)
            part, longest = [], examples[i].length
        part.append(i)
        width = longest
    return parts + [part] if part else parts


def epoch_batches(examples: Sequence[Example], batch_size: int, group_size: int, seed: int, epoch: int
                  ) -> list[list[int]]:
    """The epoch's batches: a seeded shuffle (same seed and epoch, same order: a resumed run repeats it), cut
    into groups of ``group_size`` batches, each group sorted by length (less padding), batches shuffled."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(examples)).tolist()
    group = max(1, group_size) * batch_size
    out: list[list[int]] = []
    for g in range(0, len(perm), group):
        part = sorted(perm[g:g + group], key=lambda i: -examples[i].length)
        out += [part[k:k + batch_size] for k in range(0, len(part), batch_size)]
    order = rng.permutation(len(out)).tolist()
    return [out[k] for k in order]
