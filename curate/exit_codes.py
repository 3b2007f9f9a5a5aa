"""The exit code of a failed command, by what failed: the one table for the CLI and ``OUT/run.json`` (README,
"Exit codes"; ``curate run --help``). The failure codes are BSD's sysexits.h, which schedulers and shell scripts know."""

from __future__ import annotations

from curate.errors import (
    ConfigError,
    InputError,
    NotInWorkspaceError,
    OptionError,
    RetryLaterError,
    Terminated,
    TooFewLabelsError,
)

EXIT_FAILURE = 1       # anything else (a damaged workspace, a full disk, max_cost reached ...)
EXIT_USAGE = 2         # a bad flag or argument, told before any work (click's usage errors)
EXIT_DATAERR = 65      # the input data: a source missing, unreadable or malformed (its file and line named)
EXIT_TEMPFAIL = 75     # a service did not answer (5xx, 429, timeouts, refused connections, after retries): retry later
EXIT_CONFIG = 78       # settings refused: API key, account access, model name or endpoint (HTTP 401/403/404), an option
EXIT_INTERRUPTED = 130  # 128 + SIGINT (Ctrl-C)
EXIT_OUTPUT_CLOSED = 141  # 128 + SIGPIPE: the reader of the output left (`| head`)

EXIT_TERMINATED = 143  # 128 + SIGTERM (kill, a scheduler's stop)

# the one table: `--help` prints it, README's "Exit codes" table says the same (tests/test_exit_codes.py compares them)
EXIT_CODES = {
    0: "done",
    EXIT_FAILURE: "any other failure (a damaged workspace, a full disk, --max-cost reached ...)",
    EXIT_USAGE: "the command line is wrong (an unknown option, a value outside its choices, a missing argument)",
    EXIT_DATAERR: "bad input data: the source (or a selector's target texts) is missing, unreadable or malformed (file "
                  "and line named), or too few labels to train a scorer on",
    EXIT_TEMPFAIL: "the LLM server did not answer: 5xx, 429, timeouts, connection refused, after the retries (finished "
                   "work is kept)",
    EXIT_CONFIG: "settings refused: API key, access, model name or endpoint (HTTP 401/403/404), or an option's value "
                 "(a scorer or model folder, a prompt file or folder, a device, a --name no file can take, an --out no "
                 "export or report can take or one below a file, an export --format the rows do not fit), or a name the workspace does not hold (no workspace "
                 "there; a selection, column or label set; a step not run yet: the line says which command makes it)",
    EXIT_INTERRUPTED: "interrupted by Ctrl-C (finished work is kept)",
    EXIT_TERMINATED: "terminated by SIGTERM (finished work is kept)",
    EXIT_OUTPUT_CLOSED: "the output's reader left (| head)",
}


def exit_code(error: BaseException) -> int:
    """The code a process ends with when ``error`` stops it."""
    if isinstance(error, KeyboardInterrupt):  # Terminated: 128 + its signal (143 after SIGTERM), as main() exits
        return 128 + error.signum if isinstance(error, Terminated) else EXIT_INTERRUPTED
    if hasattr(error, "show") and isinstance(getattr(error, "exit_code", None), int):  # click's: 2 for usage errors
        return error.exit_code
    if isinstance(error, InputError | TooFewLabelsError):
        return EXIT_DATAERR
    if isinstance(error, ConfigError | OptionError | NotInWorkspaceError):
        return EXIT_CONFIG
    if isinstance(error, RetryLaterError):
        return EXIT_TEMPFAIL
    return EXIT_FAILURE


def exit_codes_text() -> str:
    """The table, one line per code, for ``--help``."""
    return "Exit codes: " + "; ".join(f"{code} {what}" for code, what in EXIT_CODES.items()) + "."
