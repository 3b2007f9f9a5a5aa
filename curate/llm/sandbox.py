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
_NUMBER = re.compile(r"\d+")


def _check_width(value: Any, what: str) -> None:
    """A SecurityError for a width (an int argument, or a number in a format string) over MAX_REPEATED_CHARS."""
    from jinja2.exceptions import SecurityError

    numbers = [value] if isinstance(value, int) else [int(n) for n in _NUMBER.findall(value)] \
        if isinstance(value, str) else []
    if any(n > MAX_REPEATED_CHARS for n in numbers):
        raise SecurityError(f"{what}: a width over the sandbox's {MAX_REPEATED_CHARS:,} characters")


def _bounded(name: str, filter_: Any) -> Any:
    """Filter ``name`` with its width arguments (and a format string's widths) bounded."""
    def bounded(value: Any, *args: Any, **kwargs: Any) -> Any:
        for arg in (value if name == "format" else None, *args, *kwargs.values()):
            _check_width(arg, f"the {name} filter")
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
        if isinstance(getattr(__obj, "__self__", None), str):  # 'x'.center(n), .ljust, .zfill, .expandtabs
            for arg in (*args, *kwargs.values()):
                _check_width(arg, f"str.{getattr(__obj, '__name__', 'method')}")
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:  # '{:>n}'.format(...): Jinja wraps it as it is read
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            _check_width(value.__self__, f"str.{value.__name__}")
        return wrapped

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        from jinja2.exceptions import SecurityError

        if operator == "*":
            seq, times = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_REPEATED_CHARS:
                raise SecurityError(f"a repetition of {len(seq) * times:,} items is over the sandbox's "
                                    f"{MAX_REPEATED_CHARS:,}")
        elif operator == "%":
            if isinstance(left, str):
                _check_width(left, "a % format")
        elif isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
                right * max(abs(left).bit_length(), 1) > MAX_POWER_BITS:
            raise SecurityError(f"{left} ** {right} is over the sandbox's {MAX_POWER_BITS:,} bits")
        return super().call_binop(context, operator, left, right)
