"""Request budgets. One :class:`RateLimiter` per CRM is shared by every request the CRM's adapter sends."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``requests`` per ``period_seconds``, e.g. ``RateLimit(10, 1.0)`` for Brevo's general tier."""

    requests: int
    period_seconds: float

    def __post_init__(self) -> None:
        if self.requests < 1 or self.period_seconds <= 0:
            raise ValueError("a rate limit needs at least 1 request per positive period")

    @property
    def per_second(self) -> float:
        return self.requests / self.period_seconds


@runtime_checkable
class RateLimiter(Protocol):
    """What adapters (through :class:`crmsync_core.http.CrmClient`) use to stay within a CRM's budget."""

    async def acquire(self) -> None:
        """Wait until one more request may be sent."""

    def pause(self, seconds: float) -> None:
        """Send nothing for ``seconds`` (the CRM said its budget is spent until then)."""

    @property
    def waited_seconds(self) -> float:
        """Total time callers spent waiting in :meth:`acquire`."""


class TokenBucket:
    """An in-process token bucket: bursts of up to ``limit.requests``, then ``limit.per_second``.

    ``None`` means no limit (waits only while paused). Waiters are served in arrival order.
    """

    def __init__(
        self,
        limit: RateLimit | None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self._clock = clock
        self._sleep = sleep
        self._tokens = float(limit.requests) if limit else 0.0
        self._updated = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()
        self._waited = 0.0

    @property
    def waited_seconds(self) -> float:
        return self._waited

    def pause(self, seconds: float) -> None:
        if seconds > 0:
            self._paused_until = max(self._paused_until, self._clock() + seconds)
            self._tokens = 0.0

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self._clock()
                if now < self._paused_until:
                    await self._wait(self._paused_until - now)
                    continue
                if self.limit is None:
                    return
                self._tokens = min(
                    float(self.limit.requests),
                    self._tokens + (now - self._updated) * self.limit.per_second,
                )
                self._updated = now
                # The tolerance keeps float rounding from turning into waits too short to move a clock.
                if self._tokens >= 1.0 - 1e-9:
                    self._tokens = max(0.0, self._tokens - 1.0)
                    return
                await self._wait((1.0 - self._tokens) / self.limit.per_second)

    async def _wait(self, seconds: float) -> None:
        self._waited += seconds
        await self._sleep(seconds)

    def __repr__(self) -> str:
        return f"TokenBucket({self.limit!r})"


class SharedRateLimiter:
    """A budget shared by every worker on every machine, kept in the database.

    ``reserve()`` takes one request from the shared budget in one statement and returns how long to wait
    before sending it (a reservation: callers queue behind each other in the database, not in memory).
    ``share_pause(seconds)`` tells the other workers that the CRM said its budget is spent.
    """

    def __init__(
        self,
        reserve: Callable[[], Awaitable[float]],
        share_pause: Callable[[float], Coroutine[Any, Any, None]],
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._reserve = reserve
        self._share_pause = share_pause
        self._clock = clock
        self._sleep = sleep
        self._paused_until = 0.0
        self._waited = 0.0
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def waited_seconds(self) -> float:
        return self._waited

    def pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        task = asyncio.get_running_loop().create_task(self._share_pause(seconds))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def acquire(self) -> None:
        local = self._paused_until - self._clock()
        if local > 0:
            await self._wait(local)
        wait = await self._reserve()
        if wait > 0:
            await self._wait(wait)

    async def _wait(self, seconds: float) -> None:
        self._waited += seconds
        await self._sleep(seconds)

    def __repr__(self) -> str:
        return "SharedRateLimiter()"
