"""The sandbox prompt templates render in: Jinja's immutable sandbox, with ``*`` and ``**`` bounded.

Jinja's sandbox keeps a template from reaching Python's internals, and bounds ``range``; it does not bound
``'a' * 10**10`` (24 GB, then the OOM killer) or ``10 ** 10**8`` (a power that never finishes).
"""

from __future__ import annotations

from typing import Any

from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_REPEATED_CHARS = 10_000_000  # 'a' * n in a template: above this, a sandbox error (24 GB and the OOM killer)
MAX_POWER_BITS = 1 << 16  # 10 ** n: no number of more bits (a big enough power never finishes)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox, with ``*`` and ``**`` bounded: a prompt file is code, but not a memory bomb."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        from jinja2.exceptions import SecurityError

        if operator == "*":
            seq, times = (left, right) if isinstance(left, str | list | tuple) else (right, left)
            if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_REPEATED_CHARS:
                raise SecurityError(f"a repetition of {len(seq) * times:,} items is over the sandbox's "
                                    f"{MAX_REPEATED_CHARS:,}")
        elif isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and \
                right * max(abs(left).bit_length(), 1) > MAX_POWER_BITS:
            raise SecurityError(f"{left} ** {right} is over the sandbox's {MAX_POWER_BITS:,} bits")
        return super().call_binop(context, operator, left, right)
