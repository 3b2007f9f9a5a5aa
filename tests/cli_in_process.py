"""`curate ARGS` run through the real entry point (curate.cli.main: its error lines, exit codes, output streams)
inside the test process, for tests of what a command does and says. A fresh interpreter costs ~2 s of CPU per
command (importing curate, pandas, datasets, openai again); tests of signals, pipes, file descriptors, concurrent
processes or import-time behaviour start a real process instead."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from collections.abc import Mapping


def curate_in_process(*args, cwd=None, env: Mapping[str, str] | None = None,
                      input: str | None = None) -> subprocess.CompletedProcess:  # noqa: A002 (subprocess.run's name)
    """What ``subprocess.run([python, -m, curate.cli, *args], capture_output=True, text=True)`` returns, run by
    ``curate.cli.main()`` here: ``env`` replaces the environment and ``cwd`` the working folder for the call; both,
    the signal handlers and hooks main() installs and its interrupt flags are put back afterwards. An exception
    main() lets through (a bug: a traceback in a real process) is raised into the test."""
    import typer.rich_utils as rich_utils

    import curate.cli as cli
    from curate.cli import common

    argv = ["curate", *map(str, args)]
    out, err = io.BytesIO(), io.BytesIO()
    streams = tuple(io.TextIOWrapper(buffer, encoding="utf-8", write_through=True) for buffer in (out, err))
    saved_signals = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    saved = (sys.argv, sys.stdin, sys.stdout, sys.stderr, sys.unraisablehook, os.getcwd(), dict(os.environ))
    # main() sets typer's help width for its process's pipes; a later CliRunner(terminal_width=200) must not get 120
    saved_help = (rich_utils.MAX_WIDTH, rich_utils._get_rich_console)
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        if cwd is not None:
            os.chdir(cwd)
        sys.argv = argv
        sys.stdin = io.TextIOWrapper(io.BytesIO((input or "").encode()), encoding="utf-8")
        sys.stdout, sys.stderr = streams  # kept referenced: a wrapper collected closes its buffer
        try:
            cli.main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        sys.argv, sys.stdin, sys.stdout, sys.stderr, sys.unraisablehook, cwd_before, environ = saved
        rich_utils.MAX_WIDTH, rich_utils._get_rich_console = saved_help
        os.chdir(cwd_before)
        if env is not None:
            os.environ.clear()
            os.environ.update(environ)
        for signum, handler in saved_signals.items():
            signal.signal(signum, handler)
        common.interrupt_requested, common.interrupt_signal = False, int(signal.SIGINT)
    return subprocess.CompletedProcess(argv, code, out.getvalue().decode(), err.getvalue().decode())
