"""End to end: contacts in a database, the engine, the HubSpot adapter, the fake HubSpot. SQLite and
PostgreSQL both (``database_url``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from crmsync_core import Engine, Layout, Store
from crmsync_core.contacts import invalid_email_reason
from crmsync_core.plugins import Registry
from crmsync_core.retry import NO_WAIT
from crmsync_core.status import ProcessingStatus, SyncStatus
from crmsync_core.testing import contact_rows
from crmsync_hubspot import FakeHubspot, HubspotSettings, create_properties, plugin

Wrap = Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url, layout=Layout.default(["hubspot"]), create=True)
    yield store
    await store.close()


@pytest.fixture
def engine(store: Store, fake: FakeHubspot, settings: HubspotSettings, validated: Wrap) -> Engine:
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[plugin]),
        settings={"hubspot": settings},
        transports={"hubspot": validated(fake.transport())},
        request_retry=NO_WAIT,
    )


async def add_and_queue(store: Store, rows: list[dict[str, Any]]) -> list[uuid.UUID]:
    await store.add_contacts(rows)
    ids = [row["id"] for row in rows]
    result = await store.queue("hubspot", ids)
    assert result.queued + result.skipped == len(ids)
    return ids


def rows_at(domain: str, count: int) -> list[dict[str, Any]]:
    rows = list(contact_rows(count, seed=len(domain)))
    for n, row in enumerate(rows):
        row["email"] = f"person{n}@{domain}"
    return rows


async def test_queued_contacts_reach_hubspot_with_its_ids(
    store: Store, engine: Engine, fake: FakeHubspot
) -> None:
    rows = list(contact_rows(250, seed=4, invalid_email_share=0.05, duplicate_email_share=0.05))
    ids = await add_and_queue(store, rows)

    report = await engine.run_once("hubspot")

    assert report.stopped is None
    states = await store.states("hubspot", ids)
    invalid = [r["id"] for r in rows if invalid_email_reason(r["email"]) is not None]
    assert invalid and report.skipped == len(invalid)
    assert report.synced == len(ids) - len(invalid)
    for row in rows:
        state = states[row["id"]]
        if row["id"] in invalid:
            assert state.sync_status is SyncStatus.SKIPPED and state.error
            continue
        assert state.sync_status is SyncStatus.COMPLETE
        assert state.remote_id == fake.contacts[row["email"].lower()].id
    assert all(size <= 100 for size in fake.batch_sizes)
    assert len(fake.upsert_requests) <= 4  # one request per claimed batch of 100


async def test_a_poisoned_batch_fails_only_its_bad_contacts(
    store: Store, engine: Engine, fake: FakeHubspot
) -> None:
    good = await add_and_queue(store, rows_at("example.com", 97))
    bad = await add_and_queue(store, rows_at("rejected.invalid", 3))

    report = await engine.run_once("hubspot")

    assert (report.synced, report.failed, report.retrying) == (97, 3, 0)
    states = await store.states("hubspot", good + bad)
    assert {states[i].sync_status for i in good} == {SyncStatus.COMPLETE}
    for contact_id in bad:
        state = states[contact_id]
        assert state.sync_status is SyncStatus.ERROR
        assert state.processing_status is ProcessingStatus.ERROR
        assert "rejected.invalid is invalid" in (state.error or "")  # HubSpot's message


async def test_the_daily_limit_stops_the_run_and_leaves_contacts_queued(
    store: Store, engine: Engine, fake: FakeHubspot
) -> None:
    ids = await add_and_queue(store, rows_at("example.com", 30))
    fake.use_up_daily_limit()

    report = await engine.run_once("hubspot")

    assert report.synced == report.failed == report.retrying == 0
    assert report.stopped is not None and "daily API limit" in report.stopped
    assert report.resume_after is not None and 0 < report.resume_after <= 24 * 3600
    states = await store.states("hubspot", ids)
    assert {s.processing_status for s in states.values()} == {ProcessingStatus.QUEUED}
    assert {s.attempts for s in states.values()} == {0}

    fake.daily_limit = None  # midnight: the budget is back
    report = await engine.run_once("hubspot")
    assert report.synced == 30


async def test_a_missing_property_stops_the_run_until_it_is_created(
    store: Store, engine: Engine, fake: FakeHubspot, settings: HubspotSettings, validated: Wrap
) -> None:
    ids = await add_and_queue(store, rows_at("example.com", 10))
    fake.properties.discard("scrapersky_sync_date")

    stopped = await engine.run_once("hubspot")

    assert stopped.stopped is not None and "'scrapersky_sync_date'" in stopped.stopped
    states = await store.states("hubspot", ids)
    assert {(s.processing_status, s.attempts) for s in states.values()} == {
        (ProcessingStatus.QUEUED, 0)
    }
    await create_properties(settings, transport=validated(fake.transport()))
    assert (await engine.run_once("hubspot")).synced == 10


async def test_a_hubspot_outage_is_retried_later(
    store: Store, engine: Engine, fake: FakeHubspot
) -> None:
    ids = await add_and_queue(store, rows_at("example.com", 5))
    # The outage answers the engine's field preflight too (3 tries), then the batch (3 tries).
    fake.fail_next(503, body={"status": "error", "message": "Service Unavailable"}, times=6)

    report = await engine.run_once("hubspot")

    assert report.retrying == 5
    states = await store.states("hubspot", ids)
    for state in states.values():
        assert state.sync_status is SyncStatus.QUEUED
        assert state.attempts == 1 and state.next_attempt_at is not None
        assert "503" in (state.error or "")
