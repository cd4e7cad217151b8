"""Queued contacts reach an n8n workflow through the engine, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa

import crmsync_n8n.plugin
from crmsync_core import Engine, Layout, Store, SyncStatus
from crmsync_core.plugins import Registry
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import MovableClock, contact_rows
from crmsync_n8n import SCRAPERSKY_FIELDS, FakeN8n, N8nSettings

URL = "https://n8n.example.com/webhook/scrapersky-contacts"
START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def settings(**changes: Any) -> N8nSettings:
    return N8nSettings(webhook_url=URL, sync_retry_jitter=0, **changes)


def engine(
    store: Store, transport: httpx.AsyncBaseTransport, config: N8nSettings, clock: MovableClock
) -> Engine:
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[crmsync_n8n.plugin]),
        settings={"n8n": config},
        transports={"n8n": transport},
        request_retry=NO_WAIT,
        clock=clock,
    )


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url, layout=Layout.default(["n8n"]), create=True)
    try:
        yield store
    finally:
        await store.close()


async def add(store: Store, count: int, **shares: float) -> list[dict[str, Any]]:
    rows = list(contact_rows(count, seed=11, **shares))
    await store.add_contacts(rows)
    result = await store.queue("n8n", [row["id"] for row in rows], now=START)
    assert result.queued + result.skipped == count
    return rows


async def test_queued_contacts_reach_the_workflow_in_scraperskys_shape(store: Store) -> None:
    rows = await add(store, 40, invalid_email_share=0.1)
    fake = FakeN8n.with_bearer(
        "e2e-secret-value", response_mode="lastNode", last_node="execution_id"
    )
    config = settings(webhook_secret="e2e-secret-value", sync_scheduler_batch_size=15)

    report = await engine(store, fake.transport(), config, MovableClock(START)).run_once("n8n")

    states = await store.states("n8n", [row["id"] for row in rows])
    complete = [row for row in rows if states[row["id"]].sync_status is SyncStatus.COMPLETE]
    skipped = [row for row in rows if states[row["id"]].sync_status is SyncStatus.SKIPPED]
    assert report.stopped is None
    assert (report.synced, report.skipped) == (len(complete), len(skipped))
    assert len(complete) + len(skipped) == len(rows)
    assert skipped, "the rows include invalid addresses"
    assert len(fake.received) == len(complete), "one POST per contact"
    executions = {r.body["contact_id"]: r.execution_id for r in fake.received}
    for row in complete:
        body = fake.contacts[str(row["id"])]
        assert tuple(body) == SCRAPERSKY_FIELDS
        assert body["email"] == row["email"]
        assert body["name"] == row["name"]
        assert body["scrapersky_domain_id"] == str(row["domain_id"])
        assert body["scrapersky_page_id"] == str(row["page_id"])
        assert states[row["id"]].remote_id == executions[str(row["id"])]
    for row in skipped:
        assert states[row["id"]].error


async def test_inactive_workflow_stops_the_run_and_keeps_contacts_queued(store: Store) -> None:
    rows = await add(store, 12)
    fake = FakeN8n(active=False)

    report = await engine(store, fake.transport(), settings(), MovableClock(START)).run_once("n8n")

    assert report.stopped is not None
    assert "activate the workflow" in report.stopped
    assert report.synced == report.failed == report.retrying == 0
    states = await store.states("n8n", [row["id"] for row in rows])
    assert {s.sync_status for s in states.values()} == {SyncStatus.QUEUED}
    assert {s.attempts for s in states.values()} == {0}


class LosesAnswers(httpx.AsyncBaseTransport):
    """n8n gets every request, but the answer is lost on the way back while ``lose`` is set."""

    def __init__(self, fake: FakeN8n) -> None:
        self.fake = fake
        self.lose = True

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.fake.handle(request)
        if self.lose:
            raise httpx.ReadTimeout("the answer was lost", request=request)
        return response


async def test_a_workflow_can_drop_what_an_ambiguous_timeout_sent_twice(store: Store) -> None:
    rows = await add(store, 6)
    fake = FakeN8n(response_mode="onReceived")
    transport = LosesAnswers(fake)
    clock = MovableClock(START)
    # Every request timing out would pause the CRM (tests/faults): here, the retry and its key.
    run = engine(store, transport, settings(workflow_id="wf-42", sync_circuit_failures=0), clock)

    first = await run.run_once("n8n")
    transport.lose = False
    clock.now += timedelta(minutes=6)
    second = await run.run_once("n8n")

    assert (first.retrying, second.synced) == (6, 6)
    keys_by_contact: dict[str, set[str | None]] = {}
    for received in fake.received:
        keys_by_contact.setdefault(received.body["contact_id"], set()).add(received.idempotency_key)
    assert len(fake.received) > 6, "every contact reached n8n more than once"
    assert all(len(keys) == 1 for keys in keys_by_contact.values()), "one key per contact"
    assert fake.duplicates == len(fake.received) - 6
    states = await store.states("n8n", [row["id"] for row in rows])
    assert {s.remote_id for s in states.values()} == {"wf-42"}


async def test_remote_id_lands_in_scraperskys_n8n_workflow_id(
    postgres_url: str, scrapersky_sql: str
) -> None:
    dsn = sa.make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(scrapersky_sql)
    store = await Store.connect(postgres_url, layout=Layout.scrapersky())
    try:
        rows = list(contact_rows(5, seed=3))
        await store.add_contacts(rows)
        await store.queue("n8n", [row["id"] for row in rows], now=START)
        fake = FakeN8n(response_mode="lastNode", last_node="execution_id")

        report = await engine(store, fake.transport(), settings(), MovableClock(START)).run_once(
            "n8n"
        )

        assert report.synced == 5
        async with store.engine.connect() as conn:
            result = await conn.execute(sa.text("SELECT id, n8n_workflow_id FROM contacts"))
            stored = {row[0]: row[1] for row in result}
        assert stored == {uuid.UUID(r.body["contact_id"]): r.execution_id for r in fake.received}
    finally:
        await store.close()
