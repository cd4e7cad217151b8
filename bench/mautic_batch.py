"""How much the batch size saves: the Mautic adapter pushing to the in-memory fake Mautic.

Run: .venv/bin/python -m bench.mautic_batch

The fake answers at once, so the figures measure crmsync's own cost per contact (mapping, JSON, parsing
the answer) and how it falls with larger batches; a real Mautic adds its network and PHP time per
request, which the batch size divides in the same way. Compare the ratios within one run.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from pydantic import SecretStr

from crmsync_core.adapter import AdapterContext
from crmsync_core.contacts import Contact, Synced
from crmsync_core.testing.data import contact_rows
from crmsync_mautic import FakeMautic, MauticAdapter, MauticSettings
from crmsync_mautic.fake import CLIENT_CREDENTIALS_GRANTS

CONTACTS = 4_000
PUSH = 200  # what the engine hands the adapter at most
REPEATS = 3


def contacts() -> list[Contact]:
    return [
        Contact(
            id=uuid.uuid4(),
            email=row["email"],
            name=row["name"],
            phone_number=row["phone_number"],
            domain_id=row["domain_id"],
            page_id=row["page_id"],
        )
        for row in contact_rows(CONTACTS, seed=1)
    ]


async def run(limit: int, people: list[Contact]) -> tuple[float, int]:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS)
    settings = MauticSettings(
        base_url="https://mautic.bench.invalid",
        client_id=fake.client_id,
        client_secret=SecretStr(fake.client_secret),
        api_batch_max_limit=limit,
        field_aliases={"domain_id": "scrapersky_domain_id", "page_id": "scrapersky_page_id"},
        tags=["scrapersky"],
    )
    adapter = MauticAdapter(settings, AdapterContext.for_testing(fake.transport()))
    started = time.perf_counter()
    synced = 0
    for start in range(0, len(people), PUSH):
        outcomes = await adapter.push(people[start : start + PUSH])
        synced += sum(isinstance(o, Synced) for o in outcomes)
    elapsed = time.perf_counter() - started
    await adapter.aclose()
    assert synced == len(people)
    return elapsed, len(fake.batch_sizes)


async def main() -> None:
    people = contacts()
    await run(200, people[:400])  # warm-up
    results = {}
    for limit in (1, 10, 50, 200):
        runs = [await run(limit, people) for _ in range(REPEATS)]
        results[limit] = min(runs)  # the best of a few runs: the least disturbed by the machine
    base = results[1][0]
    print(f"{CONTACTS} contacts, pushes of {PUSH}, fake Mautic in memory, best of {REPEATS}")
    print(f"{'batch limit':>12} {'requests':>9} {'seconds':>8} {'contacts/s':>11} {'vs 1':>6}")
    for limit, (elapsed, requests) in results.items():
        print(
            f"{limit:>12} {requests:>9} {elapsed:>8.3f} {CONTACTS / elapsed:>11.0f} "
            f"{base / elapsed:>5.1f}x"
        )


if __name__ == "__main__":
    asyncio.run(main())
