"""Clocks that tests move by hand: one for the engine, one for fakes and rate limiters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta


class MovableClock:
    """Aware UTC time that stands still until moved: pass it as ``Engine(clock=...)`` and call
    :meth:`advance` to make retried contacts due."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        if self.now.tzinfo is None:
            raise ValueError("the clock needs an aware datetime")

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        """Move forward by ``timedelta(**delta)``, e.g. ``advance(minutes=5)``."""
        self.now += timedelta(**delta)

    def __repr__(self) -> str:
        return f"MovableClock({self.now.isoformat()})"


class ManualClock:
    """A clock that moves only when told: ``clock()`` reads it, ``await clock.sleep(s)`` advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += max(0.0, seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)
