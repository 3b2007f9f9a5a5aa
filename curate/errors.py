"""Errors curate raises on purpose: each carries a message a user can act on."""

from __future__ import annotations


class CurateError(Exception):
    """Base class: the CLI prints these as one clean line, never a traceback."""


class InputError(CurateError):
    """Bad input data; the message names the file and the line (or row)."""

    def __init__(self, path: str, location: str, reason: str):
        self.path = path
        self.location = location
        self.reason = reason
        super().__init__(f"{path}: {location}: {reason}")


class OptionError(CurateError, ValueError):
    """An option's value is not one curate can use (a ValueError too, as Python's own checks raise)."""


class WorkspaceError(CurateError):
    """A workspace is missing, damaged, or asked for something it does not hold."""


class ScorerError(CurateError):
    """A trained scorer cannot be built, fitted, loaded or applied."""


def python_and_cli(python: str, cli: str) -> str:
    """How a message names an option a user gives either way, Python first: ``python_and_cli("api_key_env=",
    "--api-key-env")`` is ``api_key_env= (CLI: --api-key-env)``; a user of ``import curate`` is not told of a flag
    alone. Messages only the command line can raise name the flag alone."""
    return f"{python} (CLI: {cli})"
