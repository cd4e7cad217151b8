"""Contacts per second from a SQLite queue into the fake n8n, one object per request vs JSON arrays.

    .venv/bin/python -m bench.n8n_throughput [--contacts 2000] [--latency-ms 20]

The fake answers after ``--latency-ms`` (a stand-in for the network and n8n's own work), so the figures
show how request count and concurrency shape a run; compare the rows with each other, not with a real n8n.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

import crmsync_n8n.plugin
from crmsync_core import Engine, Layout, Store
from crmsync_core.plugins import Registry
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import contact_rows
from crmsync_n8n import FakeN8n, N8nSettings


class Slow(httpx.AsyncBaseTransport):
    def __init__(self, fake: FakeN8n, latency: float) -> None:
        self.fake = fake
        self.latency = latency

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(self.latency)
        return await self.fake.handle(request)


async def run(contacts: int, latency: float, **settings: object) -> tuple[float, int]:
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite+aiosqlite:///{Path(folder) / 'bench.sqlite3'}"
        store = await Store.connect(url, layout=Layout.default(["n8n"]), create=True)
        try:
            rows = list(contact_rows(contacts, seed=1))
            await store.add_contacts(rows)
            now = datetime.now(UTC)
            await store.queue("n8n", [r["id"] for r in rows], now=now)
            fake = FakeN8n()
            engine = Engine(
                store,
                registry=Registry(load_entry_points=False, plugins=[crmsync_n8n.plugin]),
                settings={
                    "n8n": N8nSettings(
                        webhook_url="https://n8n.bench/webhook/scrapersky-contacts",
                        **settings,  # type: ignore[arg-type]
                    )
                },
                transports={"n8n": Slow(fake, latency)},
                request_retry=NO_WAIT,
            )
            started = time.perf_counter()
            report = await engine.run_once("n8n")
            elapsed = time.perf_counter() - started
            assert report.synced == contacts, report
            return contacts / elapsed, fake.requests
        finally:
            await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=2000)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    cases: list[tuple[str, dict[str, object]]] = [
        ("one object per request, concurrency 4", {}),
        ("one object per request, concurrency 16", {"sync_concurrency": 16}),
        ("arrays of 50, concurrency 4", {"array_batch_size": 50}),
    ]
    print(f"{args.contacts} contacts, fake n8n answering after {args.latency_ms:.0f} ms")
    baseline = None
    for label, settings in cases:
        rate, requests = await run(args.contacts, latency, **settings)
        baseline = baseline or rate
        print(f"{label:42} {rate:9.0f} contacts/s  {requests:6d} requests  x{rate / baseline:.1f}")


if __name__ == "__main__":
    asyncio.run(main())
