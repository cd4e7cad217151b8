"""A CRM's rate limit is one budget for every worker on every machine (design.md section 5)."""

from __future__ import annotations

import asyncio

import pytest

from crmsync_core import Layout, RateLimit, Store
from crmsync_core.ratelimit import SharedRateLimiter


async def two_workers(postgres_url: str) -> tuple[Store, Store]:
    first = await Store.connect(postgres_url, layout=Layout.default(["sandbox"]), create=True)
    second = await Store.connect(postgres_url, layout=Layout.default(["sandbox"]))
    return first, second


async def test_workers_draw_from_one_budget(postgres_url: str) -> None:
    first, second = await two_workers(postgres_url)
    try:
        # A slow budget (5 per 100 s) so the milliseconds between calls do not show in the waits.
        limit = RateLimit(5, 100.0)
        waits = []
        for n in range(16):
            worker = first if n % 2 else second
            waits.append(await worker.reserve_request("brevo", limit))
        # A burst of 5 for both together, then one request every 20 s, whoever asks.
        assert waits[:5] == [0.0] * 5
        assert waits[5:] == pytest.approx([20.0 * k for k in range(1, 12)], abs=0.5)
        # Another CRM has its own budget.
        assert await first.reserve_request("hubspot", limit) == 0.0
    finally:
        await first.close()
        await second.close()


async def test_a_pause_seen_by_one_worker_holds_the_others(postgres_url: str) -> None:
    first, second = await two_workers(postgres_url)
    try:
        limit = RateLimit(10, 1.0)
        assert await first.reserve_request("brevo", limit) == 0.0
        await first.pause_requests("brevo", 30.0, limit)
        assert await second.reserve_request("brevo", limit) == pytest.approx(30.1, abs=0.05)
    finally:
        await first.close()
        await second.close()


async def test_limiter_waits_what_the_database_says(postgres_url: str) -> None:
    first, second = await two_workers(postgres_url)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    try:
        limit = RateLimit(2, 100.0)
        limiters = [
            SharedRateLimiter(
                reserve=lambda store=store: store.reserve_request("n8n", limit),
                share_pause=lambda seconds, store=store: store.pause_requests(
                    "n8n", seconds, limit
                ),
                sleep=sleep,
            )
            for store in (first, second)
        ]
        await asyncio.gather(*(limiter.acquire() for limiter in limiters * 3))
        assert sorted(slept) == pytest.approx([50.0, 100.0, 150.0, 200.0], abs=0.5)
        assert sum(limiter.waited_seconds for limiter in limiters) == pytest.approx(500.0, abs=1.0)
    finally:
        await first.close()
        await second.close()


async def test_sqlite_keeps_the_budget_in_process(sqlite_url: str) -> None:
    store = await Store.connect(sqlite_url, layout=Layout.default(["sandbox"]), create=True)
    try:
        assert store.shares_rate_limits is False
    finally:
        await store.close()
