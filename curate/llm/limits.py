"""Client-side limits of an OpenAI-compatible backend: requests a second, requests or tokens a minute, and each
attempt's timeout.

They outlive a run (``run_sync`` runs each in an event loop of its own), so a judge sent in parts, or the
quality judge after the complexity judge, keeps one window.
"""

from __future__ import annotations

import asyncio
import collections
import time

from curate.defaults import BACKEND
from curate.errors import CurateError


class _LoopLock:
    """An ``asyncio.Lock`` for the running event loop: a limiter outlives a run (``run_sync`` runs each in a loop of
    its own), its lock cannot (an asyncio lock is bound to the loop it was first awaited in)."""

    def __init__(self):
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def get(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            self._loop, self._lock = loop, asyncio.Lock()
        return self._lock


class _WindowLimiter:
    """At most ``limit`` units in any 60-second window (requests for RPM, tokens for TPM), across runs: the window
    a run leaves counts for the next (a judge in chunks, or the quality judge after the complexity judge)."""

    def __init__(self, limit: float, window: float = 60.0):
        self.limit = float(limit)
        self.window = window
        self.events: collections.deque[tuple[float, float]] = collections.deque()
        self.used = 0.0
        self.lock = _LoopLock()

    async def acquire(self, amount: float = 1.0) -> None:
        amount = min(amount, self.limit)  # a single oversized request still goes, alone in its window
        async with self.lock.get():
            while True:
                now = time.monotonic()
                while self.events and now - self.events[0][0] >= self.window:
                    self.used -= self.events.popleft()[1]
                if self.used + amount <= self.limit:
                    self.events.append((now, amount))
                    self.used += amount
                    return
                await asyncio.sleep(max(0.01, self.window - (now - self.events[0][0])))


class _RateLimiter:
    """Request starts at least ``1 / rate`` seconds apart: a requests-per-second limit without bursts (across runs,
    as :class:`_WindowLimiter`)."""

    def __init__(self, rate: float):
        if rate <= 0:
            raise CurateError(f"requests per second must be > 0 (got {rate:g})")
        self.interval = 1.0 / float(rate)
        self.next = 0.0
        self.lock = _LoopLock()

    async def acquire(self) -> None:
        # the wait is inside the lock and the next slot counts from the real start: slots reserved ahead and waited
        # for outside it all came due together after the event loop stalled (a busy machine), a burst of starts
        async with self.lock.get():
            if (wait := self.next - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            self.next = time.monotonic() + self.interval


class TimeoutLadder:
    """One request's timeout, attempt by attempt: after an attempt that timed out the next waits ``growth`` times
    as long, up to ``first * max_factor`` (a reply that needs 90 s never came when each retry again waited 60 s);
    a retry for another reason (429, 5xx) keeps the timeout it had."""

    def __init__(self, first: float, growth: float = BACKEND.timeout_growth,
                 max_factor: float = BACKEND.timeout_max_factor):
        self.now = first
        self.growth, self.cap = growth, first * max(1.0, max_factor)
        self.timed_out: list[float] = []  # the timeout of each attempt that ran out, in order

    def ran_out(self) -> str:
        """The attempt now ended in a timeout: the error it reads as; the next attempt waits longer."""
        self.timed_out.append(self.now)
        self.now = min(self.now * self.growth, self.cap)
        return f"timeout after {self.timed_out[-1]:g}s"

    def said(self) -> str:
        """The timeouts that ran out, for a failure's detail ('' when none did)."""
        return f" (timed out after {', '.join(f'{t:g}s' for t in self.timed_out)})" if self.timed_out else ""
