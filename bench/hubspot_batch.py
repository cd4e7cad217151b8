"""HubSpot batch upsert against HubSpot's real rate limit, in real time, through the engine and SQLite.

    .venv/bin/python -m bench.hubspot_batch [--contacts 10000] [--baseline 100]

The fake HubSpot enforces 100 requests per rolling 10 s (Free/Starter) on the wall clock, so the ceiling
is 100 requests x 100 contacts / 10 s = 1,000 contacts/s with batches, and 10 contacts/s one at a time.

An idle account also grants a burst of 100 requests at once, and 10,000 contacts fit in it: they sync as
fast as the database allows, which says nothing about the rate limit. So the measured runs start with the
burst already spent (the engine's shared limiter has given out its 100 requests, as in a sync that has been
running for a while): every request then waits for the budget, and the run shows whether the adapter and
the engine keep up with it. The one-contact-at-a-time baseline (``HUBSPOT_SYNC_SCHEDULER_BATCH_SIZE=1``:
same adapter, same fake, one contact per request) is measured the same way. A run from idle is shown for
reference.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from crmsync_core import Engine, Layout, Store
from crmsync_core.plugins import Registry
from crmsync_core.ratelimit import Limiter, RateLimit
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import contact_rows
from crmsync_hubspot import FakeHubspot, HubspotSettings, plugin
from crmsync_hubspot.fake import BASE_URL

LIMIT = RateLimit(100, 10.0)


@dataclass
class Result:
    name: str
    batch_size: int
    contacts: int
    seconds: float
    requests: int
    rate_limited: int

    @property
    def rate(self) -> float:
        return self.contacts / self.seconds

    @property
    def ceiling(self) -> float:
        return LIMIT.per_second * self.batch_size


async def scenario(
    name: str, batch_size: int, contacts: int, directory: Path, *, burst_spent: bool = True
) -> Result:
    store = await Store.connect(
        f"sqlite+aiosqlite:///{directory / f'{name}.sqlite3'}",
        layout=Layout.default(["hubspot"]),
        create=True,
    )
    try:
        rows = list(contact_rows(contacts, seed=1))
        await store.add_contacts(rows)
        await store.queue("hubspot", [row["id"] for row in rows])
        fake = FakeHubspot(rate_limit=LIMIT)  # wall clock: the real limit, in real time
        settings = HubspotSettings(
            api_key=SecretStr(fake.token),
            api_base_url=BASE_URL,
            sync_scheduler_batch_size=batch_size,
        )
        limiter = Limiter(LIMIT)  # what the engine would build from the spec
        if burst_spent:
            for _ in range(LIMIT.requests):
                await limiter.acquire()
        engine = Engine(
            store,
            registry=Registry(load_entry_points=False, plugins=[plugin]),
            settings={"hubspot": settings},
            transports={"hubspot": fake.transport()},
            rate_limiters={"hubspot": limiter},
            request_retry=NO_WAIT,
        )
        started = time.perf_counter()
        report = await engine.run_once("hubspot")
        seconds = time.perf_counter() - started
        assert report.stopped is None, report.stopped
        assert report.synced == contacts, report.as_dict()
        return Result(
            name,
            batch_size,
            contacts,
            seconds,
            len(fake.upsert_requests),
            fake.rate_limited,
        )
    finally:
        await store.close()


async def main(contacts: int, baseline: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        batch = await scenario("batch", 100, contacts, Path(directory))
        single = await scenario("single", 1, baseline, Path(directory))
        idle = await scenario("idle", 100, contacts, Path(directory), burst_spent=False)
    print(
        f"rate limit: {LIMIT.requests} requests per rolling {LIMIT.period_seconds:.0f} s, real time"
    )
    print(
        f"{'run':<28} {'contacts':>8} {'seconds':>8} {'contacts/s':>11} {'ceiling':>8}"
        f" {'of ceiling':>10} {'requests':>9} {'429s':>5}"
    )
    for r, label in (
        (batch, "batches of 100, burst spent"),
        (single, "one at a time, burst spent"),
        (idle, "batches of 100, from idle"),
    ):
        share = f"{r.rate / r.ceiling:.1%}" if r is not idle else "(burst)"
        print(
            f"{label:<28} {r.contacts:>8} {r.seconds:>8.2f} {r.rate:>11.1f} {r.ceiling:>8.0f}"
            f" {share:>10} {r.requests:>9} {r.rate_limited:>5}"
        )
    print(f"batches / one at a time: {batch.rate / single.rate:.1f}x")
    reached = batch.rate / batch.ceiling
    print(
        f"batches reach {reached:.1%} of the {batch.ceiling:,.0f} contacts/s ceiling (target: 95%)"
    )
    return 0 if reached >= 0.95 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=10_000, help="synced in batches of 100")
    parser.add_argument("--baseline", type=int, default=100, help="synced one at a time")
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.contacts, arguments.baseline)))
