"""The command's output into a pipe whose reader left (``curate export ws --out - | head``): told apart from other
broken pipes, so the command can end as a Unix tool killed by SIGPIPE does (exit 141, nothing said)."""

from __future__ import annotations

import codecs
import contextlib
import os
import re
import select
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console


class OutputClosed(Exception):  # noqa: N818  (not an error of curate's: the reader chose to stop)
    """The reader of standard output (or error) went away (``curate export ws --out - | head``); ``fds``: which."""

    def __init__(self, fds: list[int]):
        super().__init__(f"reader of descriptor(s) {fds} closed")
        self.fds = fds


class BrokenPipeElsewhere(Exception):  # noqa: N818  (it carries the OSError, reported as its line)
    """EPIPE from a pipe or socket other than the command's own output: typer exits 1 silently on any EPIPE."""


def closed_outputs() -> list[int]:
    """Standard output and error (1, 2) where they are a pipe or socket whose reading end is closed (poll says
    POLLERR of a pipe without readers); a file, a device or a terminal never is."""
    poller = select.poll()
    for fd in (1, 2):
        poller.register(fd, select.POLLOUT)
    return sorted(fd for fd, revents in poller.poll(0) if revents & (select.POLLERR | select.POLLHUP))


def exited_by_rich_broken_pipe(exc: SystemExit) -> bool:
    """The SystemExit(1) of a rich Console that is no :class:`OutputConsole` (typer prints ``--help`` through its own):
    rich's ``on_broken_pipe`` raised it, standard output already pointed at /dev/null by it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or exc.code != 1:
        return False
    code = tb.tb_frame.f_code
    return code.co_name == "on_broken_pipe" and code is Console.on_broken_pipe.__code__


HOLD_LIMIT = 16 * 1024  # characters of a summary held back in a pipe: 64 KiB (Linux's pipe buffer) of UTF-8 at most, so
# one write always fits


class OutputConsole(Console):
    """rich's Console, whose broken pipe is :class:`OutputClosed` (rich's own handling exits 1, a failure to a shell
    with ``set -o pipefail``, where the raw writes' broken pipe exits 141), and which wraps no line where its output
    is no terminal: rich broke lines at 80 columns in a log or a pipe ("max cosine similarity \\n0.9)"), which
    grep then missed. ``soft_wrap`` given True keeps every line whole on a terminal too.

    Under :func:`held_output` a standard output that is no terminal gets the command's lines in one write when it
    ends (up to ``HOLD_LIMIT``, streamed beyond): rich writes and flushes each print, so ``curate info ws | head -1``
    raced head's exit, 0 or 141 from one run to the next; one write into the pipe's buffer always lands whole."""

    _held: list[str] | None = None  # None: not holding; else the text rendered and not yet written
    _held_size = 0

    @property
    def soft_wrap(self) -> bool:  # type: ignore[override]  (rich's Console keeps a plain attribute)
        return self._soft_wrap_given or not self.is_terminal

    @soft_wrap.setter
    def soft_wrap(self, value: bool) -> None:
        self._soft_wrap_given = value

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more is written: the reader left
        raise OutputClosed(closed_outputs() or [2 if self.stderr else 1])

    def _write_buffer(self) -> None:
        if self._held is None or self._buffer_index or self.is_terminal or self.is_jupyter:
            super()._write_buffer()
            return
        with self._lock:
            text = self._render_buffer(self._buffer[:])
            del self._buffer[:]
            self._held.append(text)
            self._held_size += len(text)
        if self._held_size > HOLD_LIMIT:  # more than a pipe holds: written now, streamed from here on
            self.release(hold=False)

    def release(self, hold: bool = False) -> None:
        """Write what is held in one write; ``hold``: keep holding what follows."""
        text, self._held, self._held_size = "".join(self._held or ()), [] if hold else None, 0
        if text and not self.quiet:
            try:
                self.file.write(text)
                self.file.flush()
            except BrokenPipeError:
                self.on_broken_pipe()


@contextlib.contextmanager
def held_output(console: OutputConsole, hold: bool) -> Iterator[None]:
    """``console``'s lines held while a command runs (``hold``; a command that prints its progress as it goes, whose
    lines a ``| tee`` log must show live, streams) and written at its end in one write, also when it fails: a reader
    that left then changes nothing, the failure's code stands."""
    if not hold:
        yield
        return
    console.release(hold=True)
    try:
        yield
    except BaseException:
        with contextlib.suppress(OutputClosed):
            console.release()
        raise
    console.release()


def _replace_unencodable(exc: UnicodeError) -> tuple[str | bytes, int]:
    """An output stream's encode error handler: a surrogate-escaped byte (an undecodable file name) goes out as the
    byte it was, as ``surrogateescape`` writes it; any other character the encoding lacks (an em dash in ASCII or
    latin-1) as ``?``, as ``replace`` writes it."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    if all("\udc80" <= ch <= "\udcff" for ch in exc.object[exc.start:exc.end]):
        return codecs.lookup_error("surrogateescape")(exc)
    return "?" * (exc.end - exc.start), exc.end


codecs.register_error("curate-replace", _replace_unencodable)


def tolerate_unencodable_output() -> None:
    """Make standard output and error write a character their encoding lacks as ``?`` (PYTHONIOENCODING=ascii,
    LC_ALL=C, a latin-1 log) instead of raising UnicodeEncodeError: a command whose work is done must not fail on
    its summary line. A stream that cannot be reconfigured (a test runner's) is left as it is."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if callable(reconfigure):
            with contextlib.suppress(ValueError, OSError):
                reconfigure(errors="curate-replace")


HELP_WIDTH = 120  # columns of --help where stdout is no terminal and $COLUMNS unset: every option's name whole
_TRAILING_SPACES = re.compile(r"[ \t]+(?=\n|$)")


class PlainHelpConsole(Console):
    """typer's help console where its output is no terminal (a pipe, a CI log): no blank line before the usage, no
    line padded with spaces to the width (rich pads every line of its panels)."""

    _started = False

    def _render_buffer(self, buffer: Any) -> str:
        text = _TRAILING_SPACES.sub("", super()._render_buffer(buffer))
        if not self._started:
            text, self._started = text.lstrip("\n"), bool(text.strip("\n"))
        return text


def plain_help_when_piped() -> None:
    """typer's ``--help`` into a pipe or a log: 120 columns wide, not rich's 80 (``curate run --help | grep`` found
    ``--max-cosine-simil…`` and ``https://api.openai.co…``), unless $COLUMNS or $TERMINAL_WIDTH says a width; and
    plain (:class:`PlainHelpConsole`). A terminal's help is rich's as it was."""
    import typer.rich_utils as rich_utils

    original = getattr(rich_utils, "_get_rich_console", None)
    if original is None or getattr(original, "curate_plain", False):
        return
    if rich_utils.MAX_WIDTH is None and "COLUMNS" not in os.environ and not sys.stdout.isatty():
        rich_utils.MAX_WIDTH = HELP_WIDTH

    def help_console(stderr: bool = False) -> Console:
        console = original(stderr=stderr)
        if not console.is_terminal:
            console.__class__ = PlainHelpConsole  # typer builds it with its theme; only the rendering differs
        return console

    help_console.curate_plain = True  # type: ignore[attr-defined]
    rich_utils._get_rich_console = help_console
