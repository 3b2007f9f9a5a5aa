"""Checks of a prompt file beyond its parse: its bytes, its request parameters, the variables its template reads,
and a user's override that a search by name would skip. Each is a :class:`PromptError` naming the file."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curate.errors import ConfigError


class PromptError(ConfigError):
    """A prompt file is missing, malformed, or was rendered without a variable it needs: a setting refused (a
    ConfigError, exit 78), as a re-run fails the same way until the file or the option naming it is fixed."""


# Request parameters a prompt's params commonly set, and what each must be (checked at load, naming the file).
PARAM_CHECKS: dict[str, tuple[Any, str]] = {
    "max_tokens": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "max_completion_tokens": (lambda v: _is_int(v) and v >= 1, "a whole number >= 1"),
    "temperature": (lambda v: _is_number(v) and 0 <= v <= 2, "a number from 0 to 2"),
    "top_p": (lambda v: _is_number(v) and 0 < v <= 1, "a number above 0, at most 1"),
    "top_logprobs": (lambda v: _is_int(v) and 0 <= v <= 20, "a whole number from 0 to 20"),
    "presence_penalty": (lambda v: _is_number(v) and -2 <= v <= 2, "a number from -2 to 2"),
    "frequency_penalty": (lambda v: _is_number(v) and -2 <= v <= 2, "a number from -2 to 2"),
    "seed": (lambda v: _is_int(v), "a whole number"),
    "logprobs": (lambda v: isinstance(v, bool), "true or false"),
    "stop": (lambda v: isinstance(v, str) or (isinstance(v, list) and all(isinstance(s, str) for s in v)),
             "a string or a list of strings"),
}


def check_param_values(params: dict[str, Any], where: str) -> None:
    """A PromptError naming the first of ``params`` (a prompt's front matter) that is not what its request takes."""
    for key, value in params.items():
        if key in PARAM_CHECKS and not PARAM_CHECKS[key][0](value):
            raise PromptError(f"{where}: params.{key} must be {PARAM_CHECKS[key][1]}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    import math

    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


# The variables a judge gives every call of a turn (a pool column a prompt reads is one of its inputs too); a
# prompt reads ``response`` and ``history`` only by declaring them: a turn without a reply then fails before any
# call, and the history is built for a prompt that asks for it.
ROW_VARIABLES = ("instruction", "response", "system", "turn", "conversation", "history")
DECLARED_ONLY = ("response", "history")


def read_variables(sections: list[tuple[str, Any, int]], globals_: Any) -> tuple[str, ...]:
    """The variables the template's ``sections`` (role, parsed template, line) read from outside, in order of first
    use: the inputs of a prompt file that declares none."""
    from jinja2 import meta, nodes

    found: dict[str, None] = {}
    for _, section, _ in sections:
        outside = meta.find_undeclared_variables(section) - set(globals_)
        for node in sorted(section.find_all(nodes.Name), key=lambda n: n.lineno):
            if node.name in outside:
                found.setdefault(node.name)
    return tuple(found)


def check_read_variables(sections: list[tuple[str, Any, int]], inputs: Sequence[str], globals_: Any,
                         where: str) -> None:
    """Every variable the template's ``sections`` (role, parsed template, its marker's line in the file) read is one
    of its ``inputs``, given to every call (``ROW_VARIABLES`` but response and history), or guarded by ``is
    defined``: a ``{{ response }}`` left out of them was rendered empty for a row without a reply (and paid for),
    and the judge's provenance said it read no response. The error names the first use's line."""
    from jinja2 import meta, nodes

    given = set(ROW_VARIABLES) - set(DECLARED_ONLY)
    for role, section, line in sections:
        guarded = {test.node.name for test in section.find_all(nodes.Test)  # {% if x is defined %}: optional
                   if test.name in ("defined", "undefined") and isinstance(test.node, nodes.Name)}
        undeclared = meta.find_undeclared_variables(section) - set(inputs) - set(globals_) - given - guarded
        if undeclared:
            first = min((n for n in section.find_all(nodes.Name) if n.name in undeclared), key=lambda n: n.lineno)
            raise PromptError(f"{where}:{line + first.lineno - 1}: in the {role} message: {first.name!r} is "
                              f"undefined: to read a pool field or a column, list it in the prompt's inputs (now "
                              f"{list(inputs)})")


def read_prompt_file(path: Path) -> str:
    """A prompt file's text: UTF-8, a byte-order mark dropped (Windows editors write one); bad bytes are an
    error naming the file and line."""
    data = path.read_bytes()
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PromptError(f"{path}:{line}: not UTF-8 (byte {data[exc.start]:#04x}); save the file as UTF-8") from None


def check_not_misplaced(folder: Path, name: str, searched: list[Path]) -> None:
    """A user folder's file that was meant to override prompt ``name`` but is not where a search finds it: an
    evol prompt (``evol/deepen``) at the folder's top, or a file declaring ``name`` under another file name.
    Either was skipped in silence and the built-in sent instead."""
    if folder == searched[-1]:  # the built-ins
        return
    declared = name.replace("/", "_")  # the name a copy of the built-in declares (evol/deepen: evol_deepen)
    declares = re.compile(rf"^name:[ \t]*['\"]?{re.escape(declared)}['\"]?[ \t\r]*$", re.MULTILINE)
    for path in sorted(folder.glob("*.md")):
        head = path.read_bytes()[:4096].decode("utf-8", "replace")
        if declares.search(head.split("\n---", 1)[0]):
            subfolder = name.rsplit("/", 1)[0] if "/" in name else None
            fix = (f"give the folder above it, {folder.parent}, as the prompt folder" if subfolder == folder.name
                   else f"move or rename it to {folder / name}.md")
            raise PromptError(f"{path}: declares name: {declared}, but the prompt {name!r} is read from "
                              f"{name}.md inside a prompt folder: {fix} (else the built-in {name!r} is used)")
