"""Queued contacts reach the fake Brevo through the engine, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import crmsync_brevo.plugin
from crmsync_brevo import BrevoSettings, FakeBrevo
from crmsync_brevo.fake import SANDBOX_BASE_URL, SANDBOX_LIST_ID
from crmsync_core import Engine, Layout, ProcessingStatus, Store, SyncStatus
from crmsync_core.plugins import Registry
from crmsync_core.ratelimit import Limiter, RateLimit
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import MovableClock, contact_rows

KEY = "xkeysib-e2e-0123456789abcdef"
START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def settings(**changes: Any) -> BrevoSettings:
    values: dict[str, Any] = {
        "api_key": KEY,
        "list_id": SANDBOX_LIST_ID,
        "api_base_url": SANDBOX_BASE_URL,
        "sync_scheduler_batch_size": 10,  # ScraperSky's BREVO_SYNC_SCHEDULER_BATCH_SIZE
        "sync_retry_jitter": 0,
        "import_poll_interval_seconds": 0.01,
    }
    values.update(changes)
    return BrevoSettings(**values)


def engine(
    store: Store,
    fake: FakeBrevo,
    config: BrevoSettings,
    clock: MovableClock,
    *,
    limited: bool = False,
) -> Engine:
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[crmsync_brevo.plugin]),
        settings={"brevo": config},
        transports={"brevo": fake.transport()},
        request_retry=NO_WAIT,
        # Brevo's real budget where the test is about it; elsewhere no waiting.
        rate_limiters={"brevo": Limiter(RateLimit(10, 1.0) if limited else None)},
        clock=clock,
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url, layout=Layout.default(["brevo"]), create=True)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def fake() -> FakeBrevo:
    return FakeBrevo(api_key=KEY, import_delay_seconds=0.05)


async def add(store: Store, count: int, **shares: float) -> list[dict[str, Any]]:
    rows = list(contact_rows(count, seed=5, **shares))
    await store.add_contacts(rows)
    result = await store.queue("brevo", [row["id"] for row in rows], now=START)
    assert result.queued + result.skipped == count
    return rows


async def states_of(store: Store, rows: list[dict[str, Any]]) -> dict[Any, Any]:
    return await store.states("brevo", [row["id"] for row in rows])


async def test_queued_contacts_are_upserted_one_by_one(store: Store, fake: FakeBrevo) -> None:
    rows = await add(store, 30, invalid_email_share=0.1)
    report = await engine(store, fake, settings(), MovableClock(START)).run_once("brevo")

    states = await states_of(store, rows)
    complete = [r for r in rows if states[r["id"]].sync_status is SyncStatus.COMPLETE]
    skipped = [r for r in rows if states[r["id"]].sync_status is SyncStatus.SKIPPED]
    assert report.stopped is None
    assert len(complete) + len(skipped) == len(rows)
    assert skipped, "the rows include invalid addresses"
    assert (report.synced, report.skipped) == (len(complete), len(skipped))
    assert fake.requests_to("POST", "/contacts/import") == []
    for row in complete:
        held = fake.contact(row["email"])
        assert held is not None
        assert states[row["id"]].remote_id == str(held.id)
        assert held.attributes["DOMAIN_ID"] == str(row["domain_id"])
        assert held.attributes["SOURCE_URL"] == row["source_url"]
        assert held.list_ids == {SANDBOX_LIST_ID}
    for row in skipped:
        assert states[row["id"]].error


async def test_large_batches_are_imported(store: Store, fake: FakeBrevo) -> None:
    rows = await add(store, 60)
    # One batch in flight: lanes claiming side by side may split the 60 unevenly (SKIP LOCKED), and a
    # claim at or under the threshold is sent as single upserts, which this test is not about.
    config = settings(sync_scheduler_batch_size=30, import_threshold=10, sync_concurrency=1)
    report = await engine(store, fake, config, MovableClock(START)).run_once("brevo")

    assert report.stopped is None
    assert report.synced == 60
    assert len(fake.requests_to("POST", "/contacts/import")) == 2
    assert fake.requests_to("POST", "/contacts") == []
    states = await states_of(store, rows)
    for row in rows:
        assert states[row["id"]].sync_status is SyncStatus.COMPLETE
        assert states[row["id"]].remote_id == row["email"]


async def test_server_errors_are_retried_on_a_later_run(store: Store, fake: FakeBrevo) -> None:
    rows = await add(store, 4)
    clock = MovableClock(START)
    fake.fail_next(503, times=4 * NO_WAIT.attempts, method="POST", path="/contacts")
    # Twelve 5xx in a row would pause the CRM (tests/core, tests/faults): here, the retry schedule.
    first = await engine(store, fake, settings(sync_circuit_failures=0), clock).run_once("brevo")

    assert first.retrying == 4
    states = await states_of(store, rows)
    for state in states.values():
        assert state.sync_status is SyncStatus.QUEUED
        assert state.attempts == 1
        assert "503" in (state.error or "")
        assert state.next_attempt_at is not None

    clock.now = START + timedelta(minutes=6)
    second = await engine(store, fake, settings(), clock).run_once("brevo")
    assert second.synced == 4
    states = await states_of(store, rows)
    assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}
    assert {s.error for s in states.values()} == {None}


async def test_rate_limit_waits_use_no_attempts(store: Store, fake: FakeBrevo) -> None:
    rows = await add(store, 3)
    # More 429s than a request has attempts, with Brevo's headers saying when to come back.
    fake.fail_next(429, times=NO_WAIT.attempts + 2, headers={"x-sib-ratelimit-reset": "0.05"})
    report = await engine(store, fake, settings(), MovableClock(START), limited=True).run_once(
        "brevo"
    )

    assert report.synced == 3
    assert report.retrying == report.failed == 0
    assert report.rate_limited_seconds > 0
    states = await states_of(store, rows)
    assert {(s.sync_status, s.attempts) for s in states.values()} == {(SyncStatus.COMPLETE, 0)}


async def test_a_refused_key_leaves_every_contact_queued(store: Store, fake: FakeBrevo) -> None:
    rows = await add(store, 25)
    config = settings(api_key="xkeysib-revoked-000000000000")
    report = await engine(store, fake, config, MovableClock(START)).run_once("brevo")

    assert report.stopped is not None
    assert "BREVO_API_KEY" in report.stopped
    assert "xkeysib-revoked-000000000000" not in report.stopped
    assert report.synced == report.failed == report.retrying == 0
    states = await states_of(store, rows)
    # Claimed contacts go back as Queued; those the run never reached stay as the user left them.
    assert {s.sync_status for s in states.values()} <= {SyncStatus.QUEUED, SyncStatus.SELECTED}
    assert {(s.processing_status, s.attempts, s.error) for s in states.values()} == {
        (ProcessingStatus.QUEUED, 0, None)
    }


async def test_an_unknown_list_stops_the_run(store: Store, fake: FakeBrevo) -> None:
    rows = await add(store, 5)
    report = await engine(store, fake, settings(list_id=77), MovableClock(START)).run_once("brevo")
    assert report.stopped is not None
    assert "BREVO_LIST_ID" in report.stopped
    states = await states_of(store, rows)
    assert {(s.processing_status, s.attempts) for s in states.values()} == {
        (ProcessingStatus.QUEUED, 0)
    }


async def test_a_failed_import_is_retried_not_completed(store: Store, fake: FakeBrevo) -> None:
    rows = await add(store, 20)
    clock = MovableClock(START)
    config = settings(sync_scheduler_batch_size=20, import_threshold=10)
    fake.import_outcome = "failed"
    first = await engine(store, fake, config, clock).run_once("brevo")

    assert (first.synced, first.retrying) == (0, 20)
    states = await states_of(store, rows)
    for state in states.values():
        assert state.sync_status is SyncStatus.QUEUED
        assert state.attempts == 1
        assert "failed" in (state.error or "")

    fake.import_outcome = "completed"
    clock.now = START + timedelta(minutes=6)
    second = await engine(store, fake, config, clock).run_once("brevo")
    assert second.synced == 20
    states = await states_of(store, rows)
    assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}


async def test_contacts_brevo_rejects_end_in_error_with_its_reason(
    store: Store, fake: FakeBrevo
) -> None:
    rows = list(contact_rows(3, seed=9))
    rows[0]["email"] = "someone@rejected.invalid"  # looks fine, but Brevo refuses it
    await store.add_contacts(rows)
    await store.queue("brevo", [row["id"] for row in rows], now=START)
    report = await engine(store, fake, settings(), MovableClock(START)).run_once("brevo")

    assert (report.synced, report.failed, report.retrying) == (2, 1, 0)
    states = await states_of(store, rows)
    rejected = states[rows[0]["id"]]
    assert rejected.sync_status is SyncStatus.ERROR
    assert "Invalid email address" in (rejected.error or "")
    assert rejected.attempts <= 1
