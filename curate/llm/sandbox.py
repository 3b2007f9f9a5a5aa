"""The sandbox prompt templates render in: Jinja's immutable sandbox, with ``*``, ``**`` and widths bounded.

Jinja's sandbox keeps a template from reaching Python's internals, and bounds ``range``; it does not bound
``'a' * 10**10`` (24 GB, then the OOM killer), ``10 ** 10**8`` (a power that never finishes), or a width:
``'x'|center(10**12)``, ``'%0300000000d' % 1``, ``'{:>9999999999}'.format(1)``.
"""

from __future__ import annotations

import re
from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_REPEATED_CHARS = 10_000_000  # 'a' * n in a template: above this, a sandbox error (24 GB and the OOM killer)
MAX_POWER_BITS = 1 << 16  # 10 ** n: no number of more bits (a big enough power never finishes)
# a %-format's conversions: the width and precision of each (digits, or * taken from the arguments)
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})  # str methods padded to an int


def _check_ints(values: Any, what: str) -> None:
    """A SecurityError when one of ``values`` is an int (a width) over MAX_REPEATED_CHARS."""
    from jinja2.exceptions import SecurityError

    if any(isinstance(v, int) and not isinstance(v, bool) and v > MAX_REPEATED_CHARS for v in values):
        raise SecurityError(f"{what}: a width over the sandbox's {MAX_REPEATED_CHARS:,} characters")


def _percent_widths(fmt: str) -> tuple[list[int], bool]:
    """The widths and precisions a %-format spells out, and whether one comes from the arguments (``*``)."""
    widths, star = [], False
    for found in _PERCENT.finditer(fmt):
        for group in found.groups():
            star = star or group == "*"
            widths += [int(group)] if group and group != "*" else []
    return widths, star


def _format_widths(fmt: str) -> tuple[list[int], bool]:
    """The numbers in a ``str.format`` string's format specs, and whether a spec takes one from the arguments."""
    import string

    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:  # the format itself fails, with its own error
        return [], False
    specs = [spec for _, name, spec, _ in fields if name is not None and spec]
    return [int(n) for spec in specs if "{" not in spec for n in re.findall(r"\d+", spec)], any("{" in s for s in specs)


def _check_percent(fmt: Any, args: Any, what: str) -> None:
    """A %-format's spelt widths bounded, and the arguments' ints when a width comes from them; the values
    formatted are data (a row's number is no width)."""
    if isinstance(fmt, str):
        widths, star = _percent_widths(fmt)
        _check_ints(widths, what)
        if star:
            _check_ints(args if isinstance(args, tuple) else (args,), what)


def _bounded(name: str, filter_: Any) -> Any:
    """Filter ``name`` with its width bounded: ``format``'s format string, ``center``/``indent``'s int arguments."""
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        if name == "format":
            _check_percent(value, tuple(kwargs.values()) or args, "the format filter")
        else:
            _check_ints((*args, *kwargs.values()), f"the {name} filter")
        return filter_(value, *args, **kwargs)

    return bounded


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with ``*`` and ``**`` bounded: a prompt file is code, but not a memory bomb."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in ("center", "indent", "format"):  # the filters that pad to a width they are given
            self.filters[name] = _bounded(name, self.filters[name])

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (Jinja's names)
        if isinstance(getattr(__obj, "__self__", None), str) and getattr(__obj, "__name__", "") in _PADDING_METHODS:
            _check_ints((*args, *kwargs.values()), f"str.{__obj.__name__}")  # 'x'.center(n), .ljust, .zfill ...
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:  # '{:>n}'.format(...): Jinja wraps it as it is read
        wrapped = super().wrap_str_format(value)
        if wrapped is None:
            return None
        what = f"str.{value.__name__}"
        widths, nested = _format_widths(value.__self__)
        _check_ints(widths, what)
        if not nested:
            return wrapped

        def checked(*args: Any, **kwargs: Any) -> str:  # '{:>{}}'.format(1, n): a width from the arguments
            _check_ints((*args, *kwargs.values(), *(v for a in args if isinstance(a, dict) for v in a.values())), what)
            return wrapped(*args, **kwargs)

        return checked

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        from jinja2.exceptions import SecurityError

        if operator == "*":
            seq, times = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_REPEATED_CHARS:
                raise SecurityError(f"a repetition of {len(seq) * times:,} items is over the sandbox's "
                                    f"{MAX_REPEATED_CHARS:,}")
        elif operator == "%":
            _check_percent(left, right, "a % format")
        elif isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
                right * max(abs(left).bit_length(), 1) > MAX_POWER_BITS:
            raise SecurityError(f"{left} ** {right} is over the sandbox's {MAX_POWER_BITS:,} bits")
        return super().call_binop(context, operator, left, right)
