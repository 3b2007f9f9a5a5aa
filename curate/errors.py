"""Errors curate raises on purpose: each carries a message a user can act on."""

from __future__ import annotations

import os
import sys
import traceback
import warnings

TRACEBACK_ENV = "CURATE_TRACEBACK"  # set to 1: the traceback of curate's errors, in the CLI and in IPython/Jupyter


class CurateError(Exception):
    """Base class: the CLI prints these as one clean line, never a traceback; so does IPython/Jupyter
    (``_render_traceback_``), unless ``$CURATE_TRACEBACK`` is 1."""

    def _render_traceback_(self) -> list[str]:
        """What IPython shows for this error, one string a line: ``ClassName: message`` (and its notes), not the
        frames of curate's internals the message was raised from (4 to 18 of them in an audit's kernel)."""
        if os.environ.get(TRACEBACK_ENV) == "1":
            return "".join(traceback.format_exception(self)).splitlines()
        return [f"{type(self).__name__}: {self}", *getattr(self, "__notes__", ())]


class InputError(CurateError):
    """Bad input data; the message names the file and the line (or row)."""

    def __init__(self, path: str, location: str, reason: str):
        self.path = path
        self.location = location
        self.reason = reason
        super().__init__(f"{path}: {location}: {reason}")


class OptionError(CurateError, ValueError):
    """An option's value is not one curate can use (a ValueError too, as Python's own checks raise)."""


class ArgumentTypeError(OptionError, TypeError):
    """An argument of a type curate cannot use (``ws.show(3.5)``): a CurateError, one line in a notebook, and a
    TypeError too, as Python's own checks raise."""


class NotAStepError(OptionError, TypeError):
    """``ws.apply`` given an object that is not a step (a column's name, a prompt's): refused as a value given by the
    user (the CLI exits 78), a TypeError too, as Python's own checks raise."""


class ConfigError(CurateError):
    """The run's settings are refused (an API key, the account's access, a model name or an endpoint: HTTP 401, 403,
    404; a prompt file or folder): every re-run fails the same way until they are fixed."""


class RetryLaterError(CurateError):
    """A service did not answer (5xx, 429, timeouts, nothing listening, retries spent): a later re-run may finish;
    what was done is kept."""


class WorkspaceError(CurateError):
    """A workspace is missing, damaged, or asked for something it does not hold."""


class WorkspaceGoneError(WorkspaceError):
    """The workspace was removed or moved while this process used it (a WorkspaceError, exit 1, as before): a new
    workspace's first load makes it anew when another load's take-back removed it."""


class NotInWorkspaceError(WorkspaceError):
    """A command asked for what is not there: no workspace at the path, no pool, selection, column, label set or
    embeddings of that name, or no output yet of a step that must run first. The message names what is missing, what
    the workspace has and the command that makes it; the CLI exits 78, as for a refused option: every re-run fails the
    same way until the name is fixed or the step has run. A damaged workspace stays a plain WorkspaceError (exit 1)."""


class NoSuchRowError(NotInWorkspaceError, KeyError, IndexError):
    """A row id or pool position the pool lacks (``ws.show``): a NotInWorkspaceError, and the KeyError (an id) and
    IndexError (a position) it was before, its message shown as given (not quoted as a KeyError's)."""

    __str__ = Exception.__str__


class OutPathError(WorkspaceError, OptionError):
    """An output path (--out, out=) refused before anything is written: a suffix no export writes, a folder where a
    file goes or a file where a folder goes, a folder holding files curate did not write, a path inside the
    workspace. A value given by the user (an OptionError: the CLI exits 78), a WorkspaceError as before."""


class ExportFormatError(WorkspaceError, OptionError):
    """An export's ``format=`` (``--format``) or ``columns=`` (``--column``) that the rows cannot be written with: a
    row the shape cannot hold (two exchanges as alpaca), turn keys it would drop, rows without a reply, a column in
    a record field's place. A value given by the user refused (an OptionError: the CLI exits 78, as for a format no
    export writes; the same rows export with another), a WorkspaceError as before."""


class ScorerError(CurateError):
    """A trained scorer cannot be built, fitted, loaded or applied."""


class TooFewLabelsError(ScorerError):
    """Training refused before any work: the labels (or their groups) are too few for the folds and hold-out asked
    for. The data is short, not curate: the CLI exits 65 (bad input data); the message says how many there are, how
    many are needed and what to do (label more rows, fewer --folds)."""


class ScorerFolderError(ScorerError, OptionError):
    """A scorer folder (or shipped name) given to load, to start training from or to save into, or a base model
    folder, that cannot be used: missing, not a saved scorer, damaged, or a folder holding other files. A value given
    by the user refused (an OptionError: the CLI exits 78), and a ScorerError as every scorer failure."""


class ScorerOptionError(ScorerError, OptionError):
    """A scorer training setting refused before any work (a kind, epochs, folds, holdout, a column that is not there,
    a setting of another kind): an OptionError (the CLI exits 78), and a ScorerError as every scorer failure."""


class NoLabelsError(CurateError):
    """A label-making run (Evol) made no label from its seeds: the data says why. ``eliminated_by_reason``: the
    rewrites dropped, by elimination code; ``rank_failures_by_reason``: the seeds' variant sets left unscored, by
    rank-failure code; ``calls_failed``: every rewrite call failed (the backend did not answer)."""

    def __init__(self, message: str, *, seeds: int, eliminated_by_reason: dict[str, int],
                 rank_failures_by_reason: dict[str, int], calls_failed: bool = False):
        self.seeds = seeds
        self.eliminated_by_reason = dict(eliminated_by_reason)
        self.rank_failures_by_reason = dict(rank_failures_by_reason)
        self.calls_failed = calls_failed
        super().__init__(message)


class Terminated(KeyboardInterrupt):
    """A stop by a signal other than Ctrl-C's (SIGTERM: kill, a scheduler's stop): the command exits 128 +
    ``signum``, and ``OUT/run.json`` says the same code."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"terminated by signal {signum}")


class CurateWarning(UserWarning):
    """Something a call did that its caller must know although it returned: rows that failed in this call (their
    reason codes in ``<column>_failure``), records a load left out (listed in the workspace's ``rejects.jsonl``). The
    command line prints the same in its own words and does not show these."""


def warn(text: str, category: type[Warning] = CurateWarning) -> None:
    """``warnings.warn`` attributed to the first caller outside curate (a notebook cell): the warning shows once per
    line of the user's code that caused it, not once per line of curate's code ever."""
    frame, level = sys._getframe(1), 2
    root = os.path.dirname(os.path.abspath(__file__))
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(root + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(text, category, stacklevel=level)


class StillSendingWarning(RuntimeWarning):
    """A call interrupted (Ctrl-C, Jupyter's stop button) that had not stopped when the interrupt returned: it may
    still be sending requests in the background."""


class BatchClaimWarning(RuntimeWarning):
    """The openai-batch backend's claims on its submissions went wrong while a call ran: its heartbeat failed (runs of
    other machines may take them over), or a claim was taken over meanwhile (that run finishes the batch). Said this way
    to a Python API or notebook user; the command line prints it (``on_event``)."""


# What a stopped run leaves: the CLI's Ctrl-C line and the note ws.apply adds to a KeyboardInterrupt both say it
KEPT_ON_INTERRUPT = ("finished work is kept (answers in the workspace's cache, columns, vectors and files written "
                     "whole; nothing half-written replaced them)")


def python_and_cli(python: str, cli: str) -> str:
    """How a message names an option a user gives either way, Python first: ``python_and_cli("api_key_env=",
    "--api-key-env")`` is ``api_key_env= (CLI: --api-key-env)``; a user of ``import curate`` is not told of a flag
    alone. Messages only the command line can raise name the flag alone."""
    return f"{python} (CLI: {cli})"
