"""The Mautic adapter end to end: the engine drains a real database's queue into the fake Mautic.

Every test runs on a SQLite file and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

import crmsync_mautic.plugin
from crmsync_core import Engine, Layout, Store
from crmsync_core.plugins import Registry
from crmsync_core.retry import NO_WAIT
from crmsync_core.status import ProcessingStatus, SyncStatus
from crmsync_core.testing import MovableClock
from crmsync_core.testing.data import contact_rows
from crmsync_mautic import FakeMautic, MauticSettings
from crmsync_mautic.fake import CLIENT_CREDENTIALS_GRANTS

START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url, Layout.default(["mautic"]), create=True)
    yield store
    await store.close()


def settings(fake: FakeMautic, **overrides: Any) -> MauticSettings:
    values: dict[str, Any] = {
        "base_url": "https://mautic.example.com/api/",
        "client_id": fake.client_id,
        "client_secret": SecretStr(fake.client_secret),
        "tags": ["scrapersky"],
        "field_aliases": {"domain_id": "scrapersky_domain_id", "page_id": "scrapersky_page_id"},
        "sync_concurrency": 1,
    }
    return MauticSettings(**{**values, **overrides})


def engine(
    store: Store,
    fake: FakeMautic,
    config: MauticSettings,
    transport: Any = None,
    now: MovableClock | None = None,
) -> Engine:
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[crmsync_mautic.plugin]),
        settings={"mautic": config},
        transports={"mautic": transport or fake.transport()},
        request_retry=NO_WAIT,
        clock=now or MovableClock(START),
    )


async def add(store: Store, rows: list[dict[str, Any]]) -> list[uuid.UUID]:
    await store.add_contacts(rows)
    ids = [row["id"] for row in rows]
    await store.queue("mautic", ids, now=START)
    return ids


async def test_queued_contacts_reach_mautic_with_their_ids_stored(store: Store) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS)
    rows = list(contact_rows(120, seed=5, invalid_email_share=0.1, duplicate_email_share=0.1))
    ids = await add(store, rows)
    config = settings(fake, api_batch_max_limit=50, sync_scheduler_batch_size=60)

    report = await engine(store, fake, config).run_once("mautic")

    assert report.stopped is None
    assert report.synced + report.skipped == report.claimed
    assert max(fake.batch_sizes) <= 50
    states = await store.states("mautic", ids)
    assert any(s.sync_status is SyncStatus.SKIPPED for s in states.values())
    emails = [row["email"].lower() for row in rows]
    assert len(set(emails)) < len(emails), "the data should hold duplicate e-mails"
    for row in rows:
        state = states[row["id"]]
        if state.sync_status is SyncStatus.SKIPPED:
            assert state.error
            continue
        assert state.sync_status is SyncStatus.COMPLETE, state
        stored = fake.contact(row["email"])
        assert stored is not None
        assert state.remote_id == str(stored["id"])  # duplicates share one Mautic contact
        if emails.count(row["email"].lower()) == 1:
            assert stored["scrapersky_domain_id"] == str(row["domain_id"])
        assert stored["tags"] == ["scrapersky"]
    assert fake.token_requests == 1


async def test_token_expiring_mid_run_is_replaced_and_the_run_goes_on(store: Store) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS)
    batches = 0

    async def expire_after_first_batch(request: httpx.Request) -> httpx.Response:
        nonlocal batches
        response = await fake.handle(request)
        if request.url.path.endswith("/batch/new") and response.status_code == 201:
            batches += 1
            if batches == 1:
                fake.expire_tokens()
        return response

    ids = await add(store, list(contact_rows(30, seed=11)))
    config = settings(fake, sync_scheduler_batch_size=10)

    report = await engine(
        store, fake, config, transport=httpx.MockTransport(expire_after_first_batch)
    ).run_once("mautic")

    assert report.stopped is None
    assert report.synced == 30
    assert fake.token_requests == 2
    states = await store.states("mautic", ids)
    assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}


async def test_mixed_created_updated_and_rejected_contacts(store: Store) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS)
    rows = list(contact_rows(6, seed=2))
    rows[1]["email"] = "refused@example.com"
    fake.reject("refused@example.com", 422, "email: This address is blocked in Mautic.")
    # Mautic already knows the first contact (by e-mail): it is matched, not duplicated.
    existing = rows[0]["email"].upper()
    await fake.handle(
        httpx.Request(
            "POST",
            "https://mautic.example.com/api/contacts/batch/new",
            json=[{"email": existing, "firstname": "Already"}],
            headers={"Authorization": "Basic " + _basic(fake)},
        )
    )
    known_id = str(fake.contact(existing)["id"])  # type: ignore[index]
    ids = await add(store, rows)

    report = await engine(store, fake, settings(fake)).run_once("mautic")

    assert (report.synced, report.failed) == (5, 1)
    states = await store.states("mautic", ids)
    assert states[rows[0]["id"]].remote_id == known_id
    refused = states[rows[1]["id"]]
    assert refused.sync_status is SyncStatus.ERROR
    assert refused.error is not None
    assert "blocked in Mautic" in refused.error
    assert len(fake.contacts) == 5


async def test_api_disabled_stops_the_run_and_leaves_the_queue_untouched(store: Store) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS, api_enabled=False)
    ids = await add(store, list(contact_rows(5, seed=3)))

    report = await engine(store, fake, settings(fake)).run_once("mautic")

    assert report.stopped is not None
    assert "api_enabled" in report.stopped
    assert report.released == 5
    for state in (await store.states("mautic", ids)).values():
        assert state.processing_status is ProcessingStatus.QUEUED
        assert state.attempts == 0


async def test_a_mautic_outage_is_retried_on_a_later_run(store: Store) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS)
    fake.fail_next(503, times=NO_WAIT.attempts)
    ids = await add(store, list(contact_rows(4, seed=4)))
    now = MovableClock(START)

    first = await engine(store, fake, settings(fake), now=now).run_once("mautic")
    assert first.retrying == 4
    waiting = await store.states("mautic", ids)
    assert all(s.attempts == 1 and s.next_attempt_at is not None for s in waiting.values())

    now.now += timedelta(hours=1)
    second = await engine(store, fake, settings(fake), now=now).run_once("mautic")
    assert second.synced == 4
    done = await store.states("mautic", ids)
    assert {s.sync_status for s in done.values()} == {SyncStatus.COMPLETE}


def _basic(fake: FakeMautic) -> str:
    import base64

    return base64.b64encode(f"{fake.username}:{fake.password}".encode()).decode()
