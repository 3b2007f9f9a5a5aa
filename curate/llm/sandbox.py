"""The sandbox prompt templates render in: Jinja's immutable sandbox, with ``*``, ``**``, widths and ``range``
bounded, and no ``lipsum``.

Jinja's sandbox keeps a template from reaching Python's internals, and bounds one ``range`` to 100,000 items; it
does not bound ``'a' * 10**10`` (24 GB, then the OOM killer), ``10 ** 10**8`` (a power that never finishes), a
width: ``'x'|center(10**12)``, ``'%0300000000d' % 1``, ``'{:>9999999999}'.format(1)``, nested loops over ranges
(``range(99999)`` in ``range(99999)`` spun until killed) or ``lipsum(100000)`` (44.8M characters in 6 s). Here the
ranges of one render share ``MAX_RANGE_ITEMS``, and ``lipsum`` is no global.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from typing import Any

from jinja2 import Template
from jinja2.sandbox import ImmutableSandboxedEnvironment, safe_range

MAX_REPEATED_CHARS = 10_000_000  # 'a' * n in a template: above this, a sandbox error (24 GB and the OOM killer)
MAX_POWER_BITS = 1 << 16  # 10 ** n: no number of more bits (a big enough power never finishes)
# a %-format's conversions: the width and precision of each (digits, or * taken from the arguments)
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-+ #0]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})  # str methods padded to an int
MAX_RANGE_ITEMS = 100_000  # the items of all range() calls of one render together (nested loops multiply)
UNBOUNDED_GLOBALS = ("lipsum",)  # Jinja's default globals that make text of any size asked: not in prompt files
_RANGE_LEFT: ContextVar[list[int] | None] = ContextVar("range_items_left", default=None)


def _budgeted_range(*args: int) -> range:
    """``range`` drawing its items from the render's budget (``MAX_RANGE_ITEMS`` over all its calls)."""
    from jinja2.exceptions import SecurityError

    items = safe_range(*args)  # one range over Jinja's own bound is its SecurityError
    left = _RANGE_LEFT.get()
    if left is not None:
        left[0] -= len(items)
        if left[0] < 0:
            raise SecurityError(f"range(): the ranges of one rendering are over the sandbox's {MAX_RANGE_ITEMS:,} "
                                "items together (nested loops multiply them)")
    return items


class BudgetedTemplate(Template):
    """A template whose every render has its own range budget (``MAX_RANGE_ITEMS``)."""

    def render(self, *args: Any, **kwargs: Any) -> str:
        token = _RANGE_LEFT.set([MAX_RANGE_ITEMS])
        try:
            return super().render(*args, **kwargs)
        finally:
            _RANGE_LEFT.reset(token)


def _check_ints(values: Any, what: str) -> None:
    """A SecurityError when one of ``values`` is an int (a width) over MAX_REPEATED_CHARS."""
    from jinja2.exceptions import SecurityError

    if any(isinstance(v, int) and not isinstance(v, bool) and v > MAX_REPEATED_CHARS for v in values):
        raise SecurityError(f"{what}: a width over the sandbox's {MAX_REPEATED_CHARS:,} characters")


def _percent_widths(fmt: str) -> tuple[list[int], list[int]]:
    """The widths and precisions a %-format spells out, and the positions of the arguments it takes one from (``*``):
    each conversion takes its ``*`` arguments, then its value (``%%`` takes none)."""
    widths, stars, at = [], [], 0
    for found in _PERCENT.finditer(fmt):
        for group in found.groups():
            if group == "*":
                stars.append(at)
                at += 1
            elif group:
                widths.append(int(group))
        at += not found.group(0).endswith("%")
    return widths, stars


def _format_widths(fmt: str) -> tuple[list[int], list[tuple[int | str, str]]]:
    """The numbers a ``str.format`` string's format specs spell out, and the fields its nested fields take a width
    from: (the argument's position or keyword name, the rest of the field: ``[0]``, ``.real``), for ``{:>{}}``,
    ``{0:>{1}}``, ``{:>{w}}``, ``{:>{w[0]}}``."""
    import string

    formatter, widths, nested, auto = string.Formatter(), [], [], 0
    try:
        for _, name, spec, _ in formatter.parse(fmt):
            if name is None:
                continue
            auto += name == ""
            for _, inner, _, _ in formatter.parse(spec or ""):
                if inner is None:
                    continue
                key = re.split(r"[.\[]", inner)[0]
                nested.append((auto if key == "" else int(key) if key.isdigit() else key, inner[len(key):]))
                auto += key == ""
            if spec and "{" not in spec:
                widths += [int(n) for n in re.findall(r"\d+", spec)]
    except ValueError:  # the format itself fails, with its own error
        return [], []
    return widths, nested


def _check_percent(fmt: Any, args: Any, what: str) -> None:
    """A %-format's spelt widths bounded, and the arguments it takes a width from (``*``); the values formatted are
    data (a row's number is no width)."""
    if isinstance(fmt, str):
        widths, stars = _percent_widths(fmt)
        _check_ints(widths, what)
        values = args if isinstance(args, tuple) else (args,)
        _check_ints([values[i] for i in stars if i < len(values)], what)


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
    template_class = BudgetedTemplate

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in UNBOUNDED_GLOBALS:
            self.globals.pop(name, None)
        self.globals["range"] = _budgeted_range
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
            named = args[0] if value.__name__ == "format_map" and args and isinstance(args[0], dict) else kwargs
            _check_ints([self._field_value(args, named, key, rest) for key, rest in nested], what)
            return wrapped(*args, **kwargs)

        return checked

    def _field_value(self, args: tuple, named: Any, key: int | str, rest: str) -> Any:
        """The value a nested format field names (``w[0]``, ``0.real``), read through the sandbox's own item and
        attribute access; None when it names nothing (the format then fails with its own error)."""
        import _string

        try:
            value = args[key] if isinstance(key, int) else named[key]
            for is_attribute, name in _string.formatter_field_name_split("x" + rest)[1]:
                value = self.getattr(value, name) if is_attribute else self.getitem(value, name)
        except (LookupError, TypeError, ValueError):
            return None
        return value

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
