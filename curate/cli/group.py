"""The command group every curate command runs under: its errors as lines, its help without a flag's value type, its
commands in the order a user runs them."""

from __future__ import annotations

import errno
from typing import Any

import typer.core

from curate.cli.pipes import BrokenPipeElsewhere, OutputClosed, closed_outputs


class CutShortError(ValueError):
    """An EOFError a command met (a file that ends before its data does): typer's main turns an EOFError into a
    blank line and an Abort, which exited 1 with nothing said; this one is reported as its line."""


# `curate --help`'s order: load a pool, label it (scores, tags, Evol labels), embed, select, look, export; then the
# whole chain in one command, and the rest (inspect, model signals, scorers, planning, training, the local server)
WORKFLOW = ("load", "score", "tag", "tags", "evol", "embed", "select", "report", "export",
            "run", "info", "signal", "train-scorer", "distil", "plan", "train", "serve-local")


class CommandGroup(typer.core.TyperGroup):
    """The top-level command group: an EOFError from any reader becomes :class:`CutShortError`; a broken pipe
    :class:`OutputClosed` when it is the command's output, else :class:`BrokenPipeElsewhere` (typer's own
    handling of EPIPE, exit 1 with nothing said, kept neither apart)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except OSError as exc:
            if exc.errno != errno.EPIPE:
                raise
            if fds := closed_outputs():
                raise OutputClosed(fds) from exc
            raise BrokenPipeElsewhere(str(exc)) from exc
        except EOFError as exc:
            raise CutShortError(f"input ended before its data did ({type(exc).__name__}: {exc or 'no more data'}): a "
                                "damaged or truncated file, or a worker process that died (set CURATE_TRACEBACK=1 to "
                                "see where)") from exc

    def list_commands(self, ctx: Any) -> list[str]:
        """The commands in the order a user runs them (:data:`WORKFLOW`), not the order their modules registered
        them in (evol, score, serve-local, load ...); one WORKFLOW does not name comes last, as registered."""
        names = super().list_commands(ctx)
        rank = {name: k for k, name in enumerate(WORKFLOW)}
        return sorted(names, key=lambda name: rank.get(name, len(WORKFLOW)))  # stable: unnamed ones keep their order

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _untyped_flags(command, ctx)
        return command

    def format_help(self, ctx: Any, formatter: Any) -> None:
        _untyped_flags(self, ctx)
        super().format_help(ctx, formatter)


def _untyped_flags(command: Any, ctx: Any) -> None:
    """Typer 0.29 with click 8.5 prints ``<bool>`` beside every flag in help (``--dry-run <bool>``), as if it took a
    value: an empty metavar leaves a flag's type column blank."""
    for param in [*command.params, command.get_help_option(ctx)]:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
