"""The fake-CRM base every adapter's fake stands on: rate windows, scripted and seeded failures, serving."""

from __future__ import annotations

from collections.abc import Sequence

import httpx
import pytest

from crmsync_core.ratelimit import Bucket, WindowKind
from crmsync_core.testing.fakecrm import FakeCrm, RateWindows


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now


class TinyCrm(FakeCrm):
    """A CRM with one endpoint, ``POST /api/items``, limited to 2 requests a second."""

    base_path = "/api"

    def __init__(self, clock: Clock, *, failure_rate: float = 0.0, seed: int = 0) -> None:
        super().__init__(failure_rate=failure_rate, seed=seed)
        self.clock = clock
        self.items: list[bytes] = []

    def now(self) -> float:
        return self.clock.now

    def rate_buckets(self, request: httpx.Request) -> Sequence[Bucket]:
        return [Bucket("items", 2, 1.0)]

    async def answer(self, request: httpx.Request) -> httpx.Response:
        budgets, full = self.take_budget(request)
        headers = {"x-remaining": str(budgets[0].remaining)}
        if full is not None:
            return httpx.Response(429, headers={**headers, "retry-after": f"{full.reset:g}"})
        scripted = self.take_scripted(request, request.url.path.removeprefix(self.base_path))
        if scripted is not None:
            return scripted.response(headers)
        if self.injected_failure():
            return httpx.Response(503, headers=headers)
        self.items.append(request.content)
        return httpx.Response(201, headers=headers, json={"id": len(self.items)})


def take(windows: RateWindows, bucket: Bucket, at: float) -> tuple[bool, int, float]:
    [budget] = windows.take([bucket], at)
    return budget.allowed, budget.remaining, round(budget.reset, 6)


def test_a_sliding_window_never_holds_more_than_its_limit_in_any_period() -> None:
    windows, bucket = RateWindows(), Bucket("b", 2, 1.0, WindowKind.SLIDING)
    assert take(windows, bucket, 0.0) == (True, 1, 1.0)
    assert take(windows, bucket, 0.6) == (True, 0, 0.4)
    assert take(windows, bucket, 1.2) == (True, 0, 0.4), "the request at 0.0 has left the window"
    assert take(windows, bucket, 1.3) == (False, 0, 0.3), "0.6 and 1.2 are still in it"
    assert take(windows, bucket, 1.6) == (True, 0, 0.6), "a refused request was not counted"
    assert windows.arrivals["b"] == [0.0, 0.6, 1.2, 1.3, 1.6]


def test_a_fixed_window_starts_at_the_first_request_and_empties_when_its_period_ends() -> None:
    windows, bucket = RateWindows(), Bucket("b", 2, 1.0, WindowKind.FIXED)
    assert take(windows, bucket, 0.0) == (True, 1, 1.0)
    assert take(windows, bucket, 0.6) == (True, 0, 0.4)
    assert take(windows, bucket, 0.9) == (False, 0, 0.1)
    assert take(windows, bucket, 1.2) == (True, 1, 1.0), "a new window started at 1.2"
    assert windows.peek(bucket, 1.5).window_start == 1.2


def test_a_calendar_window_empties_at_the_boundary_the_vendor_uses() -> None:
    windows, day = RateWindows(), Bucket("daily", 2, 86_400.0, WindowKind.FIXED)
    windows.calendar["daily"] = lambda now: now - now % 100  # "days" of 100 seconds
    assert [take(windows, day, t)[0] for t in (10.0, 20.0, 99.0)] == [True, True, False]
    assert take(windows, day, 100.0)[:2] == (True, 1)
    windows.exhaust(day, 150.0)
    assert take(windows, day, 199.0)[0] is False


def test_a_token_bucket_allows_its_burst_then_refills_at_its_rate() -> None:
    windows, bucket = RateWindows(), Bucket("b", 4, 2.0, WindowKind.TOKEN_BUCKET)
    assert [take(windows, bucket, 0.0)[0] for _ in range(5)] == [True] * 4 + [False]
    assert take(windows, bucket, 0.25) == (False, 0, 0.25), "half a token back after 0.25 s"
    assert take(windows, bucket, 0.5)[:2] == (True, 0)
    assert take(windows, bucket, 2.5)[:2] == (True, 3), "full again, one spent"


def test_a_request_refused_by_one_bucket_counts_against_none() -> None:
    windows = RateWindows()
    rolling, daily = Bucket("rolling", 1, 10.0), Bucket("daily", 5, 86_400.0, WindowKind.FIXED)
    windows.take([rolling, daily], 0.0)
    refused = windows.take([rolling, daily], 1.0)
    assert [b.allowed for b in refused] == [False, True]
    assert windows.peek(daily, 1.0).used == 1


async def test_the_fake_logs_requests_enforces_its_window_and_says_the_reset() -> None:
    clock = Clock()
    fake = TinyCrm(clock)
    async with httpx.AsyncClient(transport=fake.transport(), base_url="https://tiny.test") as http:
        answers = [await http.post("/api/items", content=b"x") for _ in range(3)]
        clock.now += 1.0
        later = await http.post("/api/items", content=b"y")
    assert [a.status_code for a in answers] == [201, 201, 429]
    assert answers[2].headers["retry-after"] == "1"
    assert later.status_code == 201
    assert (len(fake.log), fake.rate_limited, fake.items) == (4, 1, [b"x", b"x", b"y"])


async def test_scripted_answers_come_in_order_for_the_requests_they_match() -> None:
    fake = TinyCrm(Clock())
    fake.script(500, body="upstream down", times=2, path="/items")
    fake.script(None, fault="timeout", method="POST")
    fake.script(400, body={"message": "bad"}, path="/other")
    async with httpx.AsyncClient(transport=fake.transport(), base_url="https://tiny.test") as http:
        statuses = []
        for _ in range(2):
            statuses.append((await http.post("/api/items")).status_code)
            fake.clock.now += 1.0
        with pytest.raises(httpx.ReadTimeout):
            await http.post("/api/items")
        fake.clock.now += 1.0
        fake.script(None, fault="disconnect")
        with pytest.raises(httpx.RemoteProtocolError):
            await http.post("/api/items")
        healthy = await http.post("/api/items", content=b"z")
        fake.clock.now += 1.0
        other = await http.post("/api/other")
    assert statuses == [500, 500]
    assert healthy.status_code == 201 and fake.items == [b"z"]
    assert (other.status_code, other.json()) == (400, {"message": "bad"})
    assert other.headers["x-remaining"] == "1", "a canned answer keeps the vendor's headers"


async def test_failures_by_rate_are_the_same_for_the_same_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        clock = Clock()
        fake = TinyCrm(clock, failure_rate=0.5, seed=seed)
        async with httpx.AsyncClient(transport=fake.transport(), base_url="https://t.test") as http:
            answers = []
            for _ in range(20):
                clock.now += 1.0
                answers.append((await http.post("/api/items")).status_code)
        return answers

    first = await statuses(7)
    assert first == await statuses(7)
    assert {201, 503} == set(first)
    assert await statuses(8) != first


async def test_the_fake_serves_over_loopback_http_under_its_base_path() -> None:
    fake = TinyCrm(Clock())
    async with fake.serve() as base_url, httpx.AsyncClient(base_url=base_url) as http:
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api")
        answer = await http.post("/items", content=b"over the wire")
    assert answer.status_code == 201
    assert fake.items == [b"over the wire"]
    assert fake.log[0].url.path == "/api/items"
