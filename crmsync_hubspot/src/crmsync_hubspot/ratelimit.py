"""HubSpot's request budget is a rolling window: at most N requests in any 10 seconds.

The engine's token bucket lets a burst of N through and then refills at N per 10 s, which can put up to 2N
requests into one window. :class:`RollingWindow` sits behind it and holds each request until the window
has room, so a run never provokes the 429s HubSpot counts against an app. It also adopts a smaller budget
when HubSpot's ``X-HubSpot-RateLimit-Max`` / ``-Interval-Milliseconds`` headers announce one.

A slot is reused 1% of the window after it frees (100 ms of 10 s): HubSpot counts a request when it
arrives, a little after it leaves here, and that delay varies.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

from crmsync_core.ratelimit import RateLimit, RateLimiter

MARGIN = 0.01


class RollingWindow:
    """A :class:`~crmsync_core.ratelimit.RateLimiter` that waits for ``inner`` and then for room in a
    rolling window of ``limit``."""

    def __init__(
        self,
        inner: RateLimiter,
        limit: RateLimit | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.inner = inner
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._sent: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()
        self._waited = 0.0

    @property
    def waited_seconds(self) -> float:
        return self.inner.waited_seconds + self._waited

    def pause(self, seconds: float) -> None:
        self.inner.pause(seconds)

    def observe(self, requests: int, period_seconds: float) -> None:
        """HubSpot announced its budget: never send more than it allows."""
        if requests < 1 or period_seconds <= 0:
            return
        announced = RateLimit(requests, period_seconds)
        if self.limit is None or announced.per_second < self.limit.per_second:
            self.limit = announced

    async def acquire(self) -> None:
        await self.inner.acquire()
        async with self._lock:
            while self.limit is not None:
                span = self.limit.period_seconds * (1 + MARGIN)
                now = self._clock()
                # (a nanosecond of slack, so that float rounding cannot leave a wait of 0 forever)
                while self._sent and now - self._sent[0] >= span - 1e-9:
                    self._sent.popleft()
                if len(self._sent) < self.limit.requests:
                    break
                wait = self._sent[0] + span - now
                self._waited += wait
                await self._sleep(wait)
            self._sent.append(self._clock())
