"""The token bucket that keeps a CRM's requests within its budget."""

from __future__ import annotations

import pytest

from crmsync_core.ratelimit import RateLimit, TokenBucket


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


async def test_burst_then_steady_rate() -> None:
    time = FakeTime()
    bucket = TokenBucket(RateLimit(10, 1.0), clock=time.clock, sleep=time.sleep)
    for _ in range(30):
        await bucket.acquire()
    # 10 at once, then 20 more at 10 per second.
    assert time.now == pytest.approx(2.0)
    assert bucket.waited_seconds == pytest.approx(2.0)


async def test_pause_holds_every_request() -> None:
    time = FakeTime()
    bucket = TokenBucket(RateLimit(100, 10.0), clock=time.clock, sleep=time.sleep)
    await bucket.acquire()
    bucket.pause(7.5)
    await bucket.acquire()
    assert time.now == pytest.approx(7.5)


async def test_no_limit_never_waits_unless_paused() -> None:
    time = FakeTime()
    bucket = TokenBucket(None, clock=time.clock, sleep=time.sleep)
    for _ in range(1000):
        await bucket.acquire()
    assert time.now == 0.0
    bucket.pause(2)
    await bucket.acquire()
    assert time.now == pytest.approx(2)


def test_rate_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimit(0, 1)
    with pytest.raises(ValueError):
        RateLimit(1, 0)
