"""Change detection, dry runs and test sends with Brevo (its fake), on SQLite and PostgreSQL, and the
`crmsync sync --dry-run` and `crmsync test` commands as a user runs them."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import crmsync_brevo.plugin
from crmsync_brevo import BrevoSettings, FakeBrevo
from crmsync_brevo.fake import SANDBOX_BASE_URL, SANDBOX_LIST_ID
from crmsync_core import Engine, Layout, Store, SyncStatus
from crmsync_core.plugins import Registry
from crmsync_core.ratelimit import Limiter
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import MovableClock

from ..conftest import CliEnvironment

KEY = "xkeysib-changes-0123456789abcdef"
CRMSYNC = str(Path(sys.executable).with_name("crmsync"))


@pytest.fixture
def fake() -> FakeBrevo:
    return FakeBrevo(api_key=KEY)


@pytest.fixture
def clock() -> MovableClock:
    return MovableClock()


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url, layout=Layout.default(["brevo"]), create=True)
    try:
        yield store
    finally:
        await store.close()


def engine(store: Store, fake: FakeBrevo, clock: MovableClock) -> Engine:
    settings = BrevoSettings(
        api_key=KEY, list_id=SANDBOX_LIST_ID, api_base_url=SANDBOX_BASE_URL, sync_retry_jitter=0
    )
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[crmsync_brevo.plugin]),
        settings={"brevo": settings},
        transports={"brevo": fake.transport()},
        request_retry=NO_WAIT,
        rate_limiters={"brevo": Limiter(None)},
        clock=clock,
    )


def contact(n: int, **values: Any) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "email": f"ada{n}@example.com",
        "name": f"Ada Lovelace{n}",
        "phone_number": "+44 20 7946 0000",
        "context": "found on the about page",
        **values,
    }


async def delivered(sync: Engine, fake: FakeBrevo, count: int) -> list[Any]:
    """Contacts delivered by ``sync`` (whose first run also checked the account's attributes)."""
    rows = [contact(n) for n in range(count)]
    await sync.store.add_contacts(rows)
    ids = [row["id"] for row in rows]
    await sync.store.queue("brevo", ids, now=sync.now())
    assert (await sync.run_once("brevo")).synced == count
    fake.requests.clear()
    return ids


async def update(store: Store, contact_id: Any, clock: MovableClock, **values: Any) -> None:
    clock.advance(minutes=1)
    table = store.table
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.update(table)
            .where(table.c.id == contact_id)
            .values(**values, updated_at=clock().replace(tzinfo=None))
        )
    clock.advance(minutes=1)


async def test_an_unchanged_reselection_sends_nothing_to_brevo(
    store: Store, fake: FakeBrevo, clock: MovableClock
) -> None:
    sync = engine(store, fake, clock)
    ids = await delivered(sync, fake, 3)
    await store.queue("brevo", ids, now=clock())

    report = await sync.run_once("brevo")

    assert fake.requests == []
    assert report.unchanged == 3
    states = await store.states("brevo", ids)
    assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}


async def test_changed_attributes_brevo_receives_are_requeued_and_others_are_not(
    store: Store, fake: FakeBrevo, clock: MovableClock
) -> None:
    sync = engine(store, fake, clock)
    ids = await delivered(sync, fake, 3)
    await update(store, ids[0], clock, phone_number="+44 20 7946 0999")  # SMS
    await update(store, ids[1], clock, context="enriched by n8n")  # not sent to Brevo

    scan = await sync.queue_changed("brevo")

    assert (scan.scanned, scan.requeued, scan.unchanged) == (2, 1, 1)
    states = await store.states("brevo", ids)
    assert [states[i].sync_status for i in ids] == [
        SyncStatus.QUEUED,
        SyncStatus.COMPLETE,
        SyncStatus.COMPLETE,
    ]
    assert (await sync.run_once("brevo")).synced == 1
    (sent,) = fake.requests
    assert json.loads(sent.content)["attributes"]["SMS"] == "+442079460999"


async def test_dry_run_sends_nothing_and_changes_nothing(
    store: Store, fake: FakeBrevo, clock: MovableClock
) -> None:
    sync = engine(store, fake, clock)
    unchanged = await delivered(sync, fake, 1)
    rows = [contact(n) for n in range(10, 12)]
    await store.add_contacts(rows)
    await store.queue("brevo", [row["id"] for row in rows], now=clock())
    await store.queue("brevo", unchanged, now=clock())
    ids = [*unchanged, *(row["id"] for row in rows)]
    before = await store.states("brevo", ids)

    run = await sync.dry_run("brevo")

    assert fake.requests == []
    assert await store.states("brevo", ids) == before
    assert (run.due, run.unchanged, run.stopped) == (3, unchanged, None)
    assert [(r.method, r.path) for r in run.requests] == [("POST", "/v3/contacts")] * 2
    assert {r.body["email"] for r in run.requests} == {"ada10@example.com", "ada11@example.com"}
    assert run.requests[0].body["listIds"] == [SANDBOX_LIST_ID]
    assert run.requests[0].headers["api-key"] == "***"
    assert KEY not in json.dumps(run.as_dict())


async def test_test_one_sends_one_contact_and_records_it(
    store: Store, fake: FakeBrevo, clock: MovableClock
) -> None:
    rows = [contact(n) for n in range(3)]
    await store.add_contacts(rows)
    target = rows[1]["id"]

    result = await engine(store, fake, clock).test_one("brevo", str(target))

    assert len(fake.requests_to("POST", "/contacts")) == 1
    (exchange,) = result.exchanges
    assert (exchange.request.method, exchange.request.path, exchange.status) == (
        "POST",
        "/v3/contacts",
        201,
    )
    assert exchange.body["id"] == fake.contact("ada1@example.com").id  # type: ignore[union-attr]
    assert result.state is not None
    assert result.state.sync_status is SyncStatus.COMPLETE
    assert result.state.remote_id == str(exchange.body["id"])
    assert KEY not in json.dumps(result.as_dict())
    states = await store.states("brevo", [row["id"] for row in rows])
    assert [states[row["id"]].sync_status for row in rows] == [
        SyncStatus.NEW,
        SyncStatus.COMPLETE,
        SyncStatus.NEW,
    ]


async def test_test_one_records_brevo_refusing_the_contact(
    store: Store, fake: FakeBrevo, clock: MovableClock
) -> None:
    sync = engine(store, fake, clock)
    (contact_id,) = await delivered(sync, fake, 1)  # unchanged: still sent
    fake.fail_next(400, body={"code": "invalid_parameter", "message": "attributes invalid"})

    result = await sync.test_one("brevo", contact_id)

    assert len(fake.requests) == 1
    assert result.exchanges[0].status == 400
    assert result.exchanges[0].body == {
        "code": "invalid_parameter",
        "message": "attributes invalid",
    }
    assert result.state is not None
    assert result.state.sync_status is SyncStatus.ERROR
    assert "attributes invalid" in (result.state.error or "")


def crmsync(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRMSYNC, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def add_to(url: str, rows: list[dict[str, Any]], queue: bool) -> None:
    async def add() -> None:
        layout = Layout.default(list(Registry().adapters().values()))
        store = await Store.connect(url, layout)
        try:
            await store.add_contacts(rows)
            if queue:
                await store.queue("brevo", [row["id"] for row in rows])
        finally:
            await store.close()

    asyncio.run(add())


def test_the_dry_run_and_test_commands(cli_environment: CliEnvironment, cli_database: str) -> None:
    fake = FakeBrevo()
    rows = [contact(n) for n in range(2)]
    add_to(cli_database, rows, queue=True)
    with cli_environment(fake.handle) as (origin, env):
        env.update(BREVO_API_KEY=fake.api_key, BREVO_API_BASE_URL=f"{origin}/v3", BREVO_LIST_ID="2")
        dry = crmsync("sync", "--crm", "brevo", "--dry-run", env=env)
        assert dry.returncode == 0, dry.stderr
        assert fake.requests_to("POST", "/contacts") == []
        assert dry.stdout.splitlines()[0] == "brevo: 2 due; 2 requests would be sent"
        assert dry.stdout.count(f"POST {origin}/v3/contacts") == 2
        assert "api-key: ***" in dry.stdout
        assert fake.api_key not in dry.stdout + dry.stderr

        one = crmsync("test", "--crm", "brevo", "--id", str(rows[0]["id"]), env=env)
        assert one.returncode == 0, one.stderr
        assert len(fake.requests_to("POST", "/contacts")) == 1
        assert "-> HTTP 201" in one.stdout
        assert (
            one.stdout.rstrip()
            .splitlines()[-1]
            .startswith(f"brevo: contact {rows[0]['id']} is Complete, brevo id ")
        )
        assert fake.api_key not in one.stdout + one.stderr

        status = json.loads(crmsync("status", "--crm", "brevo", "--json", env=env).stdout)
        assert (status[0]["complete"], status[0]["selected"], status[0]["out_of_date"]) == (1, 1, 0)
