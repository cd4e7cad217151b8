"""A clock for the engine that tests move by hand."""

from __future__ import annotations

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
