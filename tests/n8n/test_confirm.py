"""Confirmed delivery against the n8n fake, whose workflow calls crmsync back (N8N_SYNC_CONFIRM=true), on
SQLite and PostgreSQL: a contact n8n accepted is Complete only once the workflow confirms it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import crmsync_n8n.plugin
from crmsync_core import Engine, Layout, Store, SyncStatus, hookimpl
from crmsync_core.contacts import Contact, ContactId
from crmsync_core.plugins import Registry
from crmsync_core.retry import NO_WAIT
from crmsync_core.status import ProcessingStatus
from crmsync_core.testing import MovableClock, contact_rows
from crmsync_core.web import sync_router
from crmsync_n8n import FakeN8n, N8nSettings

from ..conftest import libpq_dsn

WEBHOOK = "https://n8n.example.com/webhook/scrapersky-contacts"
CALLBACK = "http://app.test/api/v3/contacts/n8n/sync/confirm"
SECRET = "callback-secret-value"


class Host:
    """ScraperSky's side: what the contact_confirmed and contact_synced hooks received."""

    def __init__(self) -> None:
        self.confirmed: list[tuple[ContactId, Any]] = []
        self.synced: list[ContactId] = []
        self.failed: list[tuple[ContactId, str]] = []

    @hookimpl
    async def contact_confirmed(self, crm: str, contact_id: ContactId, data: Any) -> None:
        self.confirmed.append((contact_id, data))

    @hookimpl
    def contact_synced(self, crm: str, contact: Contact, remote_id: str | None) -> None:
        self.synced.append(contact.id)

    @hookimpl
    def contact_failed(
        self, crm: str, contact: Contact, reason: str, notification_email: str | None
    ) -> None:
        self.failed.append((contact.id, reason))


def enrichment(item: dict[str, Any]) -> dict[str, Any]:
    return {"enrichment_id": f"enr-{item['contact_id'][:8]}", "enriched_phone": "+33 6 12 34 56 78"}


class Setup:
    def __init__(self, store: Store, **changes: Any) -> None:
        self.store = store
        self.clock = MovableClock(datetime.now(UTC))
        self.host = Host()
        self.registry = Registry(load_entry_points=False, plugins=[crmsync_n8n.plugin, self.host])
        values: dict[str, Any] = {
            "webhook_url": WEBHOOK,
            "sync_retry_jitter": 0,
            "sync_confirm": True,
            "sync_confirm_timeout_seconds": 60,
            "sync_callback_secret": SECRET,
        }
        self.settings = N8nSettings(**(values | changes))
        self.app = FastAPI()
        self.app.include_router(
            sync_router(store, registry=self.registry, settings={"n8n": self.settings})
        )
        self.fake = FakeN8n(
            callback_url=CALLBACK,
            callback_secret=SECRET,
            callback_transport=httpx.ASGITransport(app=self.app),
            callback_data=enrichment,
        )
        self.engine = Engine(
            store,
            registry=self.registry,
            settings={"n8n": self.settings},
            transports={"n8n": self.fake.transport()},
            request_retry=NO_WAIT,
            clock=self.clock,
        )

    async def add(self, count: int) -> list[uuid.UUID]:
        rows = list(contact_rows(count, seed=5, invalid_email_share=0.0))
        await self.store.add_contacts(rows)
        ids = [row["id"] for row in rows]
        assert (await self.store.queue("n8n", ids, now=self.clock())).queued == count
        return ids

    async def run(self) -> Any:
        report = await self.engine.run_once("n8n")
        await self.fake.settle()
        return report

    async def call_back(self, body: dict[str, Any], secret: str | None = SECRET) -> httpx.Response:
        headers = {"Authorization": f"Bearer {secret}"} if secret is not None else {}
        transport = httpx.ASGITransport(app=self.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as client:
            return await client.post(
                "/api/v3/contacts/n8n/sync/confirm", json=body, headers=headers
            )

    async def state(self, contact_id: uuid.UUID) -> Any:
        return (await self.store.states("n8n", [contact_id]))[contact_id]


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url, layout=Layout.default(["n8n"]), create=True)
    try:
        yield store
    finally:
        await store.close()


def _awaiting(state: Any) -> bool:
    return (state.sync_status, state.processing_status) == (
        SyncStatus.PROCESSING,
        ProcessingStatus.COMPLETE,
    )


async def test_an_accepted_contact_awaits_its_confirmation_then_is_complete(store: Store) -> None:
    setup = Setup(store)
    setup.fake.callback_default = "none"
    [contact] = await setup.add(1)

    report = await setup.run()

    assert (report.awaiting, report.synced) == (1, 0)
    assert _awaiting(await setup.state(contact)), "accepted is not yet complete"
    assert (await store.summary("n8n")).counts[SyncStatus.PROCESSING] == 1
    key = setup.fake.received[0].idempotency_key
    answer = await setup.call_back(
        {"contact_id": str(contact), "idempotency_key": key, "status": "ok"}
    )
    assert answer.status_code == 200
    assert answer.json()["result"] == "confirmed"
    state = await setup.state(contact)
    assert state.sync_status is SyncStatus.COMPLETE
    assert state.remote_id == setup.settings.workflow_id or state.remote_id is None
    assert setup.host.synced == [contact]


async def test_the_workflows_callbacks_complete_the_contacts_and_their_data_reaches_the_hook(
    store: Store,
) -> None:
    setup = Setup(store)
    ids = await setup.add(5)

    await setup.run()

    assert all(status == 200 for _, status, _ in setup.fake.callbacks)
    states = await store.states("n8n", ids)
    assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}
    # A callback racing the worker's own recording may reach the hook twice (hosts write idempotently).
    assert {i for i, _ in setup.host.confirmed} == set(ids)
    for contact_id, data in setup.host.confirmed:
        assert data == enrichment({"contact_id": str(contact_id)})
    assert sorted(map(str, setup.host.synced)) == sorted(map(str, ids))
    assert {result for _, _, result in setup.fake.callbacks} <= {"confirmed", "early"}


async def test_a_callback_that_comes_before_the_acceptance_is_recorded_applies_after_it(
    store: Store,
) -> None:
    setup = Setup(store)
    setup.fake.callback_before_answer = True
    ids = await setup.add(3)

    report = await setup.run()

    assert [result for _, _, result in setup.fake.callbacks] == ["early"] * 3
    assert report.synced == 3
    states = await store.states("n8n", ids)
    assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}
    assert len(setup.host.confirmed) == 3


async def test_no_callback_in_time_queues_the_contact_again_and_it_is_resent_with_the_same_key(
    store: Store,
) -> None:
    setup = Setup(store, sync_retry_delay_minutes=5)
    setup.fake.callback_script = ["none"]
    [contact] = await setup.add(1)
    await setup.run()
    assert _awaiting(await setup.state(contact))

    setup.clock.advance(seconds=30)
    assert (await setup.run()).unconfirmed == 0, "not yet past the timeout"
    setup.clock.advance(seconds=31)
    report = await setup.run()

    assert report.unconfirmed == 1
    state = await setup.state(contact)
    assert (state.sync_status, state.attempts) == (SyncStatus.QUEUED, 1)
    assert state.error == "n8n: no confirmation within 60 s"
    assert len(setup.fake.received) == 1, "re-sent after the retry delay"

    setup.clock.advance(minutes=5)
    await setup.run()

    first, second = setup.fake.received
    assert second.idempotency_key == first.idempotency_key
    assert (await setup.state(contact)).sync_status is SyncStatus.COMPLETE


@pytest.mark.parametrize(
    ("max_retries", "retry", "expected"),
    [(1, True, SyncStatus.QUEUED), (0, True, SyncStatus.ERROR), (3, False, SyncStatus.ERROR)],
    ids=["attempts-left", "attempts-used-up", "not-retryable"],
)
async def test_a_failure_callback_follows_the_retry_policy(
    store: Store, max_retries: int, retry: bool, expected: SyncStatus
) -> None:
    setup = Setup(store, sync_max_retries=max_retries)
    setup.fake.callback_default = "none"
    [contact] = await setup.add(1)
    await setup.run()
    key = setup.fake.received[0].idempotency_key

    answer = await setup.call_back(
        {
            "contact_id": str(contact),
            "idempotency_key": key,
            "status": "error",
            "error": "enrichment provider timed out",
            "retry": retry,
        }
    )

    state = await setup.state(contact)
    assert state.sync_status is expected
    assert state.error is not None
    assert "enrichment provider timed out" in state.error
    assert state.attempts == 1
    assert answer.json()["result"] == ("retrying" if expected is SyncStatus.QUEUED else "failed")
    assert [c for c, _ in setup.host.failed] == ([] if expected is SyncStatus.QUEUED else [contact])
    assert setup.host.confirmed == []


@pytest.mark.parametrize(
    "secret", [None, "wrong-secret", SECRET + "x"], ids=["missing", "wrong", "longer"]
)
async def test_a_callback_with_a_wrong_secret_is_401_and_changes_nothing(
    store: Store, secret: str | None
) -> None:
    setup = Setup(store)
    setup.fake.callback_default = "none"
    [contact] = await setup.add(1)
    await setup.run()
    key = setup.fake.received[0].idempotency_key

    answer = await setup.call_back(
        {"contact_id": str(contact), "idempotency_key": key, "status": "ok", "data": {"x": 1}},
        secret=secret,
    )

    assert answer.status_code == 401
    assert SECRET not in answer.text
    assert _awaiting(await setup.state(contact))
    assert setup.host.confirmed == []


async def test_a_duplicate_or_stale_callback_is_harmless(store: Store) -> None:
    setup = Setup(store)
    [contact] = await setup.add(1)
    await setup.run()
    [(body, status, result)] = setup.fake.callbacks
    assert (status, result) in ((200, "confirmed"), (200, "early"))

    again = await setup.call_back(body)
    failure = await setup.call_back(body | {"status": "error", "error": "late"})
    stale = await setup.call_back(body | {"idempotency_key": "another-key"})

    assert [r.json()["result"] for r in (again, failure, stale)] == ["ignored"] * 3
    state = await setup.state(contact)
    assert (state.sync_status, state.error) == (SyncStatus.COMPLETE, None)
    assert len(setup.host.confirmed) == 1


async def test_a_callback_with_another_key_leaves_an_awaiting_contact_awaiting(
    store: Store,
) -> None:
    setup = Setup(store)
    setup.fake.callback_default = "none"
    [contact] = await setup.add(1)
    await setup.run()

    answer = await setup.call_back(
        {"contact_id": str(contact), "idempotency_key": "not-the-key", "status": "ok"}
    )

    assert answer.json()["result"] == "ignored"
    assert _awaiting(await setup.state(contact))


async def test_without_confirmation_acceptance_is_completion_and_the_callback_is_404(
    store: Store,
) -> None:
    setup = Setup(store, sync_confirm=False)
    setup.fake.callback_url = None
    [contact] = await setup.add(1)

    report = await setup.run()

    assert (report.synced, report.awaiting) == (1, 0)
    assert (await setup.state(contact)).sync_status is SyncStatus.COMPLETE
    answer = await setup.call_back({"contact_id": str(contact), "status": "ok"})
    assert answer.status_code == 404
    assert "N8N_SYNC_CONFIRM" in answer.json()["detail"]


def test_the_callback_secret_never_shows() -> None:
    settings = N8nSettings(webhook_url=WEBHOOK, sync_callback_secret=SECRET)

    assert SECRET not in repr(settings)
    assert SECRET not in str(settings.model_dump())
    assert SECRET not in settings.model_dump_json()


async def test_the_timeout_is_counted_from_the_acceptance(store: Store) -> None:
    setup = Setup(store, sync_confirm_timeout_seconds=600)
    setup.fake.callback_default = "none"
    [contact] = await setup.add(1)
    await setup.run()
    setup.clock.advance(seconds=599)

    assert (await setup.run()).unconfirmed == 0
    assert _awaiting(await setup.state(contact))


async def test_on_scrapersky_table_confirmation_needs_no_new_column(
    postgres_url: str, scrapersky_sql: str
) -> None:
    import psycopg

    columns = "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'contacts' ORDER BY 1"
    with psycopg.connect(libpq_dsn(postgres_url), autocommit=True) as conn:
        conn.execute(scrapersky_sql)
        before = conn.execute(columns).fetchall()
    store = await Store.connect(postgres_url, Layout.scrapersky())
    try:
        setup = Setup(store)
        ids = [uuid.uuid4() for _ in range(2)]
        with psycopg.connect(libpq_dsn(postgres_url), autocommit=True) as conn:
            for n, contact_id in enumerate(ids):
                conn.execute(
                    "INSERT INTO contacts (id, email, name, domain_id, page_id, email_type, "
                    "has_gmail) VALUES (%s, %s, 'Ada', gen_random_uuid(), gen_random_uuid(), "
                    "'CORPORATE', false)",
                    (contact_id, f"ada{n}@acme.io"),
                )
        await store.queue("n8n", ids, now=setup.clock())

        await setup.run()

        states = await store.states("n8n", ids)
        assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}
        assert {i for i, _ in setup.host.confirmed} == set(ids)
        with psycopg.connect(libpq_dsn(postgres_url), autocommit=True) as conn:
            assert conn.execute(columns).fetchall() == before
            # what awaited its callback is gone once confirmed
            assert conn.execute("SELECT count(*) FROM crmsync_confirmations").fetchone() == (0,)
    finally:
        await store.close()


async def test_a_hook_that_fails_leaves_the_contact_awaiting_for_the_next_callback(
    store: Store,
) -> None:
    setup = Setup(store)
    setup.fake.callback_default = "none"
    [contact] = await setup.add(1)
    await setup.run()
    body = {
        "contact_id": str(contact),
        "idempotency_key": setup.fake.received[0].idempotency_key,
        "status": "ok",
        "data": {"enrichment_id": "enr-1"},
    }

    class Failing:
        @hookimpl
        async def contact_confirmed(self, crm: str, contact_id: ContactId, data: Any) -> None:
            raise RuntimeError("the host's database is down")

    failing = Failing()
    setup.registry.register(failing)

    failed = await setup.call_back(body)

    assert failed.status_code == 500
    assert "the host's database is down" not in failed.text
    assert _awaiting(await setup.state(contact))
    assert setup.host.synced == []

    setup.registry.pm.unregister(failing)
    again = await setup.call_back(body)

    assert again.json()["result"] == "confirmed"
    assert (await setup.state(contact)).sync_status is SyncStatus.COMPLETE
    assert setup.host.synced == [contact]
