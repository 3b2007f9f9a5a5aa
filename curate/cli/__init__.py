"""The `curate` command line: mirrors the Python API, one module per command group."""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import signal
import sys
import warnings

import typer
from rich.markup import escape

from curate import __version__
from curate.cli import common, evol, judge, pool, report, run, scorers, select, signals, tags  # noqa: F401  (registers the commands)
from curate.cli import plan as _plan  # noqa: F401,E402  (registers `curate plan`)
from curate.cli import train as _train  # noqa: F401,E402  (registers `curate train`)
from curate.cli.common import (
    app,
    console,
    err_console,
    on_sigint,
    quiet_swallowed_interrupt,
    reflow_help,
    sample_path,
)
from curate.cli.pipes import (
    BrokenPipeElsewhere,
    OutputClosed,
    closed_outputs,
    exited_by_rich_broken_pipe,
    held_output,
    plain_help_when_piped,
    tolerate_unencodable_output,
)
from curate.errors import KEPT_ON_INTERRUPT, TRACEBACK_ENV, CurateError, CurateWarning
from curate.exit_codes import EXIT_INTERRUPTED, EXIT_OUTPUT_CLOSED, exit_code


def _show_version(value: bool) -> None:
    if value:
        console.print(f"curate {__version__}", highlight=False)
        raise typer.Exit()


# commands whose lines tell progress as they come (a step done, a column scored, a prompt used): streamed to a pipe
# or a `tee` log; every other command's standard output is written in one write when it ends (pipes.held_output)
STREAMING_COMMANDS = frozenset({"run", "score", "tag", "evol", "embed", "signal", "train", "train-scorer", "distil",
                                "serve-local"})


@app.callback()
def _root(ctx: typer.Context,
          version: bool = typer.Option(False, "--version", callback=_show_version, is_eager=True,
                                       help="Print curate's version and exit.")) -> None:
    """The options before any command (the group's help is the Typer app's)."""
    ctx.with_resource(held_output(console, ctx.invoked_subcommand not in STREAMING_COMMANDS))


reflow_help(app)

__all__ = ["app", "main", "sample_path"]

# EXIT_OUTPUT_CLOSED (curate.exit_codes), 141 = 128 + SIGPIPE: what a shell shows for a Unix tool whose reader left
# (`yes | head`), and the convention curate's 130 and 143 follow; Python's docs (Note on SIGPIPE) exit 1 instead, which
# `set -o pipefail` cannot tell from a failure
INTERRUPTED_LINE = f"interrupted: {KEPT_ON_INTERRUPT}; re-run the same command to go on"

def _os_error_line(exc: OSError) -> str:
    """One line naming the path(s) and the OS reason, e.g. ``out/x.jsonl: No space left on device``."""
    if exc.filename is None:
        return str(exc)
    paths = f"{exc.filename} -> {exc.filename2}" if exc.filename2 is not None else str(exc.filename)
    return f"{paths}: {exc.strerror or exc}"


def _exiting(code: int) -> None:
    """From here the process only exits, with ``code``: a Ctrl-C or SIGTERM that lands now (the command's work done,
    or its failure being reported) ends it at once with ``code``. on_sigint's KeyboardInterrupt would turn a finished
    command into a failure: exit 130 or 143, or -2 (killed by SIGINT, a traceback) when it replaced the SystemExit
    on its way out. Its output is flushed first; every file is in place already. main() ends the process: a caller
    who catches its SystemExit keeps these handlers."""
    def exit_now(signum: int, frame: object) -> None:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)

    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) is on_sigint:  # not where a parent made it ignored
            signal.signal(signum, exit_now)


def _exit(code: int) -> None:
    _exiting(code)
    sys.exit(code)


def _fail(line: str, code: int = 1) -> None:
    _exiting(code)
    err_console.print(f"[red]error:[/] {escape(line)}", highlight=False, soft_wrap=True, markup=True)
    sys.exit(code)


def _output_closed(fds: list[int]) -> None:
    """The reader of the output left (``| head``): exit EXIT_OUTPUT_CLOSED with nothing said, as a Unix tool that
    SIGPIPE kills does. Python ignores SIGPIPE (a write gets EPIPE instead); as its docs' note on SIGPIPE does, the
    closed descriptors are pointed at /dev/null first, so the interpreter's last flush of what is still buffered for
    them cannot fail again ("Exception ignored ... BrokenPipeError", exit 120). No "wrote" line: not all was read."""
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in fds:
        os.dup2(null, fd)
    os.close(null)
    _exit(EXIT_OUTPUT_CLOSED)


def _interrupted() -> None:
    """Say what was kept and exit 130 at once. Not sys.exit: when Ctrl-C lands inside code an extension
    ran through PyRun_*, CPython marks the interrupt unhandled and kills itself with SIGINT at shutdown
    (status -2, not 130), and worker threads still finishing requests would hold the exit up. Everything
    worth keeping is on disk already: each response is committed to the cache, files are renamed into place."""
    import logging

    _exiting(128 + common.interrupt_signal)  # a second Ctrl-C while this line is written: the same exit
    line = INTERRUPTED_LINE if common.interrupt_signal != signal.SIGTERM else INTERRUPTED_LINE.replace(
        "interrupted:", "terminated (SIGTERM):", 1)
    err_console.print(line, highlight=False, soft_wrap=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    os._exit(128 + common.interrupt_signal)  # 130 after Ctrl-C, 143 after SIGTERM: the shell's convention


def main() -> None:
    """Entry point: CurateError, bad values and OS errors (a read-only or full disk, a file where a folder
    should be) become one clean line on stderr, never a traceback; every command exits by what failed
    (:func:`curate.exit_codes.exit_code`: 65 bad input, 75 retry later, 78 settings refused, 1 anything else, as
    ``curate run``'s ``OUT/run.json`` records); Ctrl-C exits 130 with a line saying what was kept."""
    tolerate_unencodable_output()  # a summary line with a character the log's encoding lacks must not fail the command
    plain_help_when_piped()  # --help in a pipe or a CI log: no option name cut at 80 columns
    handled = False
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where a parent made Ctrl-C ignored
        signal.signal(signal.SIGINT, on_sigint)
        handled = True
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, on_sigint)
        handled = True
    if handled:  # either signal raises KeyboardInterrupt, which a finalizer may swallow: no "Exception ignored"
        sys.unraisablehook = quiet_swallowed_interrupt
    try:
        try:
            with warnings.catch_warnings():  # the commands print failed rows and rejects in their own words
                warnings.simplefilter("ignore", CurateWarning)
                code = app(standalone_mode=False)
        except Exception:
            if common.interrupt_requested:  # an error Ctrl-C caused (e.g. an import it cut in half): still Ctrl-C
                raise KeyboardInterrupt from None
            raise
    except OutputClosed as exc:
        _output_closed(exc.fds)
    except BrokenPipeElsewhere as exc:
        _fail(_os_error_line(exc.__cause__))
    except CurateError as exc:
        _fail(str(exc), exit_code(exc))  # by what failed: 65 bad input, 75 retry later, 78 settings refused, else 1
    except OSError as exc:
        _fail(_os_error_line(exc))
    except (ValueError, OverflowError) as exc:  # bad values given to the API; CURATE_TRACEBACK=1 shows where (a bug?)
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as exc:
        if exited_by_rich_broken_pipe(exc):  # typer's help console: its reader left (`curate --help | head`)
            _output_closed(closed_outputs())  # rich pointed standard output at /dev/null already
        raise
    except pickle.UnpicklingError as exc:  # a model folder whose weights are a pickle torch refused to run
        # torch's own text advises weights_only=False, i.e. running the pickle: only what it refused is shown
        held = re.search(r"unsupported GLOBAL [^\s]+|Unsupported global: GLOBAL [^\s]+", str(exc))
        _fail("a model's weights are a pickle that does not hold weights alone" + (f" ({held.group(0)})" if held else "")
              + "; curate loads weights only: use a model folder with .safetensors weights")
    except Exception as exc:  # click's own usage errors arrive here too (typer may vendor its own click)
        show = getattr(exc, "show", None)
        if callable(show) and hasattr(exc, "exit_code"):
            _exiting(exc.exit_code)
            show()
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            _exit(1)
        raise
    # Without standalone mode typer returns exit codes instead of exiting; Ctrl-C inside a command arrives
    # as its code 130.
    if code == EXIT_INTERRUPTED or common.interrupt_requested:
        _interrupted()
    _exit(code if isinstance(code, int) else 0)  # a signal from here on is a late one: the work is done
