"""The options of a `curate run` (:class:`curate.pipeline.Run`) checked before any step runs or pays: the source's
read options, the output folder and the files its last steps write, options that would be ignored in silence or
refused by a step; and, once the pool is loaded, the pool against the scores asked for."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from curate.defaults import REPORT
from curate.errors import OptionError
from curate.pools import check_read_options, run_on_error
from curate.run_record import RUN_RECORD
from curate.storage.export import check_export_path, check_run_folder

EXPORTS = {"jsonl": "selected.jsonl", "parquet": "selected.parquet", "dataset": "selected"}  # in out/


def check_run_options(run: Any) -> None:
    """``run`` (a :class:`curate.pipeline.Run`, which calls this as it is made): refuse the options a step would
    refuse, naming them before any step runs (or pays); normalise the source, ``on_error`` and ``languages`` in
    place."""
    run.source = str(run.source) if isinstance(run.source, os.PathLike) else run.source
    run.on_error = run_on_error(run.on_error, run.mapping, run.source)
    check_read_options(run.format, run.mapping, run.on_error)
    check_run_folder(Path(run.out), [*EXPORTS.values(), RUN_RECORD] + [REPORT.path] * run.report)
    for name in [*EXPORTS.values()] + [REPORT.path] * run.report:  # files the last steps could not write:
        check_export_path(Path(run.out) / name)                       # named before the first step
    if run.tag_normalizer is not None and run.tag_backend is None:  # it would normalise nothing, in silence
        raise OptionError("tag_normalizer normalises InsTag tags: give tag_backend (curate run --tags) too")
    if run.signal_model is not None and not run.signals:  # a model of no signal would be ignored in silence
        raise OptionError(f"signal_model {run.signal_model} (--signal-model) is the model of signals: give them")
    if run.embed_model is not None and not Path(run.embed_model).expanduser().is_dir():  # before any step
        raise OptionError(f"embed_model {run.embed_model} (--embed-model): no such model folder")
    if run.signals:
        from curate.signals.steps import check_run_signals
        check_run_signals(run.signals, run.signal_model)
    if isinstance(run.languages, list | tuple) and not run.languages:  # [] (the CLI's no --language): no rule
        run.languages = None
    if run.languages is not None:  # the language rule is a text rule: asking for it asks for the others
        from curate.select.heuristics import check_languages
        if not run.heuristics:  # it would run the rules switched off, or be ignored: neither is what was asked
            raise OptionError(f"languages {list(run.languages)} (--language) is a text rule: it runs with the "
                              "others, so it cannot be given with heuristics=False (--no-heuristics)")
        run.languages = check_languages(run.languages)  # a bad code: named here


def check_loaded_pool(run: Any, summary: dict[str, Any]) -> dict[str, Any]:
    """``run.loaded`` (a :class:`curate.pipeline.Run`): after either engine's load, refuse a pool quality cannot
    judge, give a score named like a pool field its own column, and check the trained scorers' input columns,
    before dedup and before any judge pays."""
    no_reply = "instruction_only" if run.heuristics else "without_reply_text"  # blank replies fail a text rule
    if "quality" in run.scores and summary["rows_read"] and summary[no_reply] == summary["rows_read"]:
        empty = summary["without_reply_text"] - summary["instruction_only"]
        what = f"without a response ({empty:,} of them with an empty one)" if empty else "without a response"
        # the pool is valid input (instruction-only pools are selected by complexity): the setting is refused, 78
        raise OptionError(f"{summary['source']}: every row is an instruction {what}, so quality has nothing "
                          "to judge and no row could be selected; select the instructions by their complexity "
                          "alone: --sort-by complexity (sort_by='complexity')")
    from curate.scorers.run_scorers import check_scorer_inputs, unshadowed_columns

    fields, unscored = run.ws.pool.column_names, [n for n in run.scores if n not in run.scorers]
    columns = unshadowed_columns(fields, unscored, "_judge" if run.backend is not None else "_score")
    if run.backend is not None:
        run.judge_columns.update(columns)
    else:
        from curate.scorers import load_default

        run.scorers.update({name: load_default(name).named(column) for name, column in columns.items()})
    check_scorer_inputs(run.ws, run.scorers.values(), computed=run.signals)
    return summary
