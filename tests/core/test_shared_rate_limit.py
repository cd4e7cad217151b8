"""A CRM's rate limit is one budget for every worker on every machine (design.md section 5).

Each worker has its own Store (its own connections) on one PostgreSQL database; an injected clock stands
in for the database's, so that the windows are exact and nothing sleeps for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest

from crmsync_core import Layout, RateLimit, Store
from crmsync_core.ratelimit import Bucket, Limiter, RateLimits, WindowKind


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


BREVO = RateLimits(
    (Bucket("contacts", 10, 1.0, paths=("/contacts",)), Bucket("other", 100, 3600.0))
)


@pytest.fixture
async def stores(postgres_url: str) -> AsyncIterator[list[Store]]:
    first = await Store.connect(postgres_url, layout=Layout.default(["sandbox"]), create=True)
    others = [
        await Store.connect(postgres_url, layout=Layout.default(["sandbox"])) for _ in range(2)
    ]
    try:
        yield [first, *others]
    finally:
        for store in (first, *others):
            await store.close()


def workers(stores: list[Store], time: FakeTime, limits: RateLimits) -> list[Limiter]:
    return [
        Limiter(
            limits, store.rate_ledger(time.clock), crm="brevo", clock=time.clock, sleep=time.sleep
        )
        for store in stores
    ]


@pytest.mark.parametrize(
    ("kind", "limit"),
    [(WindowKind.SLIDING, RateLimit(10, 1.0)), (WindowKind.FIXED, RateLimit(30, 10.0))],
)
async def test_a_fleet_never_puts_more_than_the_limit_into_any_window(
    stores: list[Store], kind: WindowKind, limit: RateLimit
) -> None:
    time = FakeTime()
    limits = RateLimits.single(limit, kind=kind)
    fleet = workers(stores, time, limits)
    sent: list[float] = []

    async def lane(limiter: Limiter, n: int) -> None:
        for _ in range(n):
            await limiter.acquire()
            sent.append(time.now)
            await asyncio.sleep(0)

    await asyncio.gather(*(lane(limiter, 40) for limiter in fleet for _ in range(2)))
    assert len(sent) == 240
    assert most_in_any_window(sent, limit.period_seconds) == limit.requests


async def test_a_lease_is_one_statement_for_a_second_of_requests(stores: list[Store]) -> None:
    time = FakeTime()
    ledger = stores[0].rate_ledger(time.clock)
    limiter = Limiter(BREVO, ledger, crm="brevo", clock=time.clock, sleep=time.sleep)
    for _ in range(100):
        await limiter.acquire("/contacts")
    # One read of the row, then one compare-and-swap per 6 requests (60 % of a window: a worker at the
    # ceiling tells the ledger when its requests were answered before it leases the next window).
    assert ledger.statements <= 0.2 * 100
    assert time.now == pytest.approx(9 * 1.045 + 0.9)  # 10 per 1.045 s, spread evenly


async def test_slots_given_back_are_anyones(stores: list[Store]) -> None:
    time = FakeTime()
    first, second, _ = workers(stores, time, BREVO)
    await first.acquire("/contacts")  # leases the next half second too
    await first.release()  # the run ended: 5 unused slots go back
    sent = [time.now]
    for _ in range(9):
        await second.acquire("/contacts")
        sent.append(time.now)
    # The second worker uses the given-back time at once, paced, instead of waiting for 0.6 s.
    assert sent[1] == pytest.approx(0.1)
    assert sent[2] == pytest.approx(0.2)
    assert most_in_any_window(sent, 1.0) <= 10  # sent[0] is the first worker's


async def test_a_dead_workers_lease_comes_back_when_it_expires(stores: list[Store]) -> None:
    time = FakeTime()
    first, second, _ = workers(stores, time, BREVO)
    await first.acquire("/contacts")  # then the worker dies, holding 5 slots of this second
    sent = []
    for _ in range(20):
        await second.acquire("/contacts")
        sent.append(time.now)
    # Its slots could still be sent until they expire, so the others wait for them, then have it all.
    assert sent[0] == pytest.approx(0.6)
    assert most_in_any_window([0.0, *sent], 1.0) <= 10


async def test_a_pause_is_shared_and_pauses_never_add_up(stores: list[Store]) -> None:
    time = FakeTime()
    first, second, third = workers(stores, time, BREVO)
    await first.acquire("/contacts")
    await second.acquire("/contacts")
    assert time.now == pytest.approx(0.6)  # after the slots the first leased
    # A 429 said: no request until 30 s from now. Reported twice, and by two workers.
    first.pause(30.0, "/contacts")
    first.pause(30.0, "/contacts")
    second.pause(30.0, "/contacts")
    await first.release()  # (waits for the pauses to be written)
    await second.release()
    await third.acquire("/contacts")
    assert time.now == pytest.approx(30.6)  # once, not three times
    # A 429 during the pause moves it to its own reset, if later.
    third.pause(5.0, "/contacts")
    third.pause(2.0, "/contacts")
    await third.release()
    await first.acquire("/contacts")
    assert time.now == pytest.approx(35.6)
    # The other bucket was never paused.
    await second.acquire("/processes/1")
    assert time.now == pytest.approx(35.6)
    # The run's end, as the engine ends it: a lease still being fetched is awaited, not abandoned.
    for limiter in (first, second, third):
        await limiter.release()


async def test_polls_of_every_worker_share_the_hourly_bucket(stores: list[Store]) -> None:
    time = FakeTime()
    fleet = workers(stores, time, BREVO)
    polled: list[float] = []

    async def poller(limiter: Limiter) -> None:
        for _ in range(50):
            await limiter.acquire("/processes/1")
            polled.append(time.now)

    await asyncio.gather(*(poller(limiter) for limiter in fleet))
    assert len(polled) == 150
    assert 95 <= most_in_any_window(polled, 3600.0) <= 100


async def test_sqlite_keeps_the_budget_in_process(sqlite_url: str) -> None:
    store = await Store.connect(sqlite_url, layout=Layout.default(["sandbox"]), create=True)
    try:
        assert store.shares_rate_limits is False
    finally:
        await store.close()


async def test_the_fleets_ledger_plans_slots_as_the_in_process_one_does(
    stores: list[Store],
) -> None:
    # One arithmetic for every ledger: the same requests, answers and pauses give the same send times.
    times: dict[str, list[float]] = {}
    for where in ("memory", "database"):
        time = FakeTime()
        ledger = stores[0].rate_ledger(time.clock) if where == "database" else None
        limiter = Limiter(BREVO, ledger, crm="brevo", clock=time.clock, sleep=time.sleep)
        sent = times[where] = []
        for n in range(40):
            ticket = await limiter.acquire("/contacts")
            sent.append(time.now)
            time.now += 0.004  # the CRM answers 4 ms later
            limiter.answered(ticket, rate_limited=n == 25)
            if n == 25:
                limiter.pause(0.5, "/contacts")
        await limiter.release()
    assert times["database"] == pytest.approx(times["memory"])
    assert most_in_any_window(times["database"], 1.0) == 10
