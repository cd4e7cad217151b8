"""The rate-limit model: buckets, window kinds, slots and pauses, in one process with an injected clock."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx
import pytest

from crmsync_core.ratelimit import (
    Bucket,
    Limiter,
    LimitHeaders,
    RateLimit,
    RateLimits,
    WindowKind,
    read_headers,
)


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        # Sleepers of several tasks overlap: time moves to the latest moment one of them waits for.
        self.sleeps.append(seconds)
        target = self.now + seconds
        await asyncio.sleep(0)
        self.now = max(self.now, target)


def most_in_any_window(times: Sequence[float], period: float) -> int:
    """The most of ``times`` in any half-open window of ``period``, wherever it starts."""
    ordered = sorted(times)
    return max(
        (sum(1 for t in ordered if start <= t < start + period) for start in ordered), default=0
    )


async def send(limiter: Limiter, time: FakeTime, count: int, path: str = "") -> list[float]:
    sent = []
    for _ in range(count):
        await limiter.acquire(path)
        sent.append(time.now)
    return sent


@pytest.mark.parametrize("kind", list(WindowKind))
async def test_no_window_of_any_kind_ever_holds_more_than_the_limit(kind: WindowKind) -> None:
    time = FakeTime()
    limits = RateLimits((Bucket("b", 10, 1.0, kind),))
    limiter = Limiter(limits, clock=time.clock, sleep=time.sleep)
    sent = await send(limiter, time, 200)
    # A sliding window holds at most 10; so does every fixed window and a token bucket of 10 per 1 s.
    assert most_in_any_window(sent, 1.0) == 10
    for t in sent:  # token bucket: at most burst + rate * t in any interval of length t
        for length in (0.5, 2.0, 7.3):
            assert sum(1 for u in sent if t <= u < t + length) <= 10 + 10 * length
    # and the budget is used, paced evenly: 95.7 % of 10 per second while no answer is reported
    assert (len(sent) - 1) / (sent[-1] - sent[0]) == pytest.approx(10 / 1.045, rel=0.01)


async def test_lanes_share_one_bucket_in_arrival_order() -> None:
    time = FakeTime()
    limiter = Limiter(RateLimit(2, 1.0), clock=time.clock, sleep=time.sleep)
    order: list[int] = []
    sent: list[float] = []

    async def lane(n: int) -> None:
        await limiter.acquire()
        order.append(n)
        sent.append(time.now)

    await asyncio.gather(*(lane(n) for n in range(6)))
    assert order == list(range(6))
    assert most_in_any_window(sent, 1.0) == 2
    assert limiter.waited_seconds == pytest.approx(time.now)


async def test_answered_requests_let_a_worker_use_the_whole_budget() -> None:
    # Slots are planned with room for a late request and the delay to the CRM; once the CRM answered,
    # the ledger knows when the request was counted, and plans the next window from that.
    rates = {}
    for answering in (False, True):
        time = FakeTime()
        limiter = Limiter(RateLimit(10, 1.0), clock=time.clock, sleep=time.sleep)
        sent = []
        for _ in range(300):
            ticket = await limiter.acquire()
            sent.append(time.now)
            if answering:
                limiter.answered(ticket)
        assert most_in_any_window(sent, 1.0) == 10
        rates[answering] = (len(sent) - 1) / (sent[-1] - sent[0])
    assert rates[False] == pytest.approx(10 / 1.045, rel=0.01)
    assert rates[True] == pytest.approx(10.0, rel=0.001)


async def test_a_slot_whose_time_passed_is_given_up_never_used_late() -> None:
    time = FakeTime()
    limiter = Limiter(RateLimit(10, 1.0), clock=time.clock, sleep=time.sleep)
    sent = [time.now]
    await limiter.acquire()  # leases the next slots too: one every 0.1 s
    time.now = 0.13  # the worker comes back after the next slot's time to leave
    await limiter.acquire()
    sent.append(time.now)
    assert time.now == pytest.approx(0.2)  # the following slot, not the one it missed
    assert limiter.expired == 1
    sent += await send(limiter, time, 50)
    assert most_in_any_window(sent, 1.0) <= 10


async def test_a_429_leaves_more_room_from_then_on() -> None:
    starts = {}
    for rejected in (False, True):
        time = FakeTime()
        limiter = Limiter(RateLimit(10, 1.0), clock=time.clock, sleep=time.sleep)
        for n in range(30):
            ticket = await limiter.acquire()
            limiter.answered(ticket, rate_limited=rejected and n == 0)
        starts[rejected] = time.now
    assert starts[True] > starts[False] + 0.01


async def test_requests_count_against_the_bucket_of_their_path() -> None:
    time = FakeTime()
    limits = RateLimits(
        (
            Bucket("contacts", 10, 1.0, paths=("/contacts",)),
            Bucket("other", 2, 3600.0),
        )
    )
    limiter = Limiter(limits, clock=time.clock, sleep=time.sleep)
    await send(limiter, time, 10, "/contacts/import")
    before = time.now
    polls = await send(limiter, time, 3, "/processes/7")
    assert polls[0] == before  # its own budget: the contacts' pace does not hold it back
    assert most_in_any_window(polls, 3600.0) == 2  # the third poll of the hour waits for it
    assert polls[2] - polls[0] >= 3600


async def test_pauses_never_add_up_and_the_latest_reset_wins() -> None:
    time = FakeTime()
    limiter = Limiter(RateLimit(10, 1.0), clock=time.clock, sleep=time.sleep)
    await limiter.acquire()
    limiter.pause(5.0)
    limiter.pause(5.0)  # the same reset announced again (e.g. the 429 and its remaining: 0)
    limiter.pause(2.0)  # an earlier reset does not shorten it
    await limiter.acquire()
    assert time.now == pytest.approx(5.0)
    # a 429 during a pause: its later reset moves the pause, once
    limiter.pause(1.0)
    limiter.pause(3.0)
    await limiter.acquire()
    assert time.now == pytest.approx(8.0)


async def test_no_limit_never_waits_unless_paused() -> None:
    time = FakeTime()
    limiter = Limiter(None, clock=time.clock, sleep=time.sleep)
    await send(limiter, time, 1000)
    assert time.now == 0.0
    limiter.pause(3.0)
    await limiter.acquire()
    assert time.now == pytest.approx(3.0)


async def test_a_smaller_announced_budget_is_adopted() -> None:
    time = FakeTime()
    limiter = Limiter(RateLimit(100, 10.0), clock=time.clock, sleep=time.sleep)
    limiter.announce(RateLimit(2, 10.0))
    limiter.announce(RateLimit(500, 10.0))  # a larger one is not
    sent = await send(limiter, time, 4)
    assert most_in_any_window(sent, 10.0) == 2


async def test_unused_slots_go_back_at_release() -> None:
    time = FakeTime()
    limits = RateLimits.single(RateLimit(10, 1.0))
    first = Limiter(limits, clock=time.clock, sleep=time.sleep)
    second = Limiter(limits, first.ledger, clock=time.clock, sleep=time.sleep)
    await first.acquire()  # leases the next half second of slots
    await second.acquire()
    assert time.now == pytest.approx(0.6)  # the first worker holds them
    await first.release()
    time.now = 2.1
    sent = await send(second, time, 9)
    assert sent[0] == 2.1  # the given-back time is anyone's
    assert most_in_any_window([0.0, 0.6, *sent], 1.0) <= 10


def test_settings_override_the_first_bucket_only() -> None:
    limits = RateLimits(
        (Bucket("contacts", 10, 1.0, paths=("/contacts",)), Bucket("other", 100, 3600))
    )
    changed = limits.with_primary(RateLimit(20, 1.0))
    assert [(b.name, b.requests) for b in changed.buckets] == [("contacts", 20), ("other", 100)]
    assert RateLimits().with_primary(RateLimit(5, 1.0)).bucket_for("/x") == Bucket("all", 5, 1.0)
    assert limits.with_primary(None) is limits


def test_headers_are_read_the_adapters_way() -> None:
    spec = LimitHeaders(remaining="x-left", reset="x-reset")
    said = read_headers(spec, httpx.Headers({"X-Left": "0", "X-Reset": "0.25"}))
    assert (said.exhausted, said.reset) == (True, 0.25)
    unix = read_headers(spec, httpx.Headers({"x-reset": "1700000030"}), now=1700000000.0)
    assert unix.reset == pytest.approx(30.0)
    assert read_headers(spec, httpx.Headers({"x-left": "many", "x-reset": "soon"})).reset is None
    hubspot = LimitHeaders(limit="x-max", interval_milliseconds="x-ms")
    assert read_headers(
        hubspot, httpx.Headers({"x-max": "50", "x-ms": "10000"})
    ).limit == RateLimit(50, 10.0)


def test_rate_limit_must_be_positive() -> None:
    with pytest.raises(ValueError):
        RateLimit(0, 1.0)
    with pytest.raises(ValueError):
        Bucket("b", 10, 0.0)
    with pytest.raises(ValueError, match="unique"):
        RateLimits((Bucket("b", 1, 1.0), Bucket("b", 2, 1.0)))
