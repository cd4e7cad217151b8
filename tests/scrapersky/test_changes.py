"""Change detection on ScraperSky's real table (asyncpg behind the pooler settings, and psycopg): the
fingerprints live in crmsync's own table, which `crmsync schema --scrapersky` creates; the contacts
table gains nothing from it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from crmsync_core import Engine, Layout, Registry, Store, SyncStatus, hookimpl
from crmsync_core.errors import ConfigurationError
from crmsync_core.store import FINGERPRINT_TABLE, scrapersky_migration_sql
from crmsync_core.testing import SandboxCrm, SandboxSettings, sandbox_adapter_spec
from crmsync_core.testing.sandbox import sandbox_payload

from ..conftest import libpq_dsn
from .conftest import Clock

Insert = Callable[..., Any]


def migrate(scrapersky_url: str) -> None:
    with psycopg.connect(libpq_dsn(scrapersky_url), autocommit=True) as conn:
        conn.execute(scrapersky_migration_sql())


def engine(store: Store, crm: SandboxCrm, clock: Clock) -> Engine:
    spec = sandbox_adapter_spec(crm, name="brevo", payload=sandbox_payload)

    class Plugin:
        @hookimpl
        def register_adapters(self, register: Any) -> None:
            register(spec)

    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[Plugin()]),
        settings={"brevo": SandboxSettings(sync_retry_jitter=0.0)},
        clock=clock,
    )


async def columns(db: AsyncEngine) -> dict[str, dict[str, Any]]:
    async with db.connect() as conn:
        return await conn.run_sync(
            lambda sync: {
                table: {c["name"]: str(c["type"]) for c in sa.inspect(sync).get_columns(table)}
                for table in sa.inspect(sync).get_table_names()
            }
        )


async def test_the_contacts_table_gains_nothing_for_fingerprints(
    db: AsyncEngine, scrapersky_url: str
) -> None:
    before = await columns(db)
    migrate(scrapersky_url)
    after = await columns(db)

    per_crm = {
        column
        for names in Layout.scrapersky(per_crm_retry=True).crms.values()
        for column in names.retry_columns()
    }
    contacts_before, contacts_after = before["contacts"], after["contacts"]
    # Only the per-CRM retry columns, as before change detection; every existing column as it was.
    assert set(contacts_after) - set(contacts_before) == per_crm
    assert {k: contacts_after[k] for k in contacts_before} == contacts_before
    assert set(after) - set(before) == {FINGERPRINT_TABLE}
    assert set(after[FINGERPRINT_TABLE]) == {
        "crm",
        "contact_id",
        "fingerprint",
        "delivered_at",
        "checked_at",
        "reselected",
    }


async def test_unchanged_reselection_and_changed_contacts_on_scraperskys_table(
    db: AsyncEngine, scrapersky_url: str, insert: Insert, clock: Clock
) -> None:
    migrate(scrapersky_url)
    store = await Store.connect(db, Layout.scrapersky())
    crm = SandboxCrm()
    sync = engine(store, crm, clock)
    ids = [uuid.uuid4() for _ in range(3)]
    await insert(db, ids)
    await store.queue("brevo", ids, now=clock())
    assert (await sync.run_once("brevo")).synced == 3

    # A user re-selects them: nothing changed, nothing sent.
    clock.advance(minutes=5)
    await store.queue("brevo", ids, now=clock())
    report = await sync.run_once("brevo")
    assert (report.unchanged, crm.requests) == (3, 1)

    # n8n writes a new name into one (sent to the CRM) and enrichment data into another (not sent);
    # ScraperSky's updated_at has no time zone.
    clock.advance(minutes=1)
    async with db.begin() as conn:
        for contact_id, values in (
            (ids[0], {"name": "Renamed"}),
            (ids[1], {"enriched_phone": "1"}),
        ):
            await conn.execute(
                sa.text(
                    "UPDATE contacts SET "
                    + ", ".join(f"{k} = :{k}" for k in values)
                    + ", updated_at = :at WHERE id = :id"
                ),
                {**values, "at": clock().replace(tzinfo=None), "id": contact_id},
            )
    clock.advance(minutes=1)
    assert (await store.summary("brevo")).out_of_date == 2

    scan = await sync.queue_changed("brevo")

    assert (scan.scanned, scan.requeued, scan.unchanged) == (2, 1, 1)
    states = await store.states("brevo", ids)
    assert [states[i].sync_status for i in ids] == [
        SyncStatus.QUEUED,
        SyncStatus.COMPLETE,
        SyncStatus.COMPLETE,
    ]
    assert (await store.summary("brevo")).out_of_date == 0
    assert (await sync.run_once("brevo")).synced == 1
    assert crm.requests == 2


async def test_without_the_migration_everything_is_sent_and_nothing_fails(
    store: Store, insert: Insert, clock: Clock
) -> None:
    crm = SandboxCrm()
    sync = engine(store, crm, clock)
    ids = [uuid.uuid4()]
    await insert(store.engine, ids)
    for _ in range(2):
        await store.queue("brevo", ids, now=clock())
        assert (await sync.run_once("brevo")).synced == 1
    assert crm.requests == 2
    assert (await store.summary("brevo")).out_of_date is None
    with pytest.raises(ConfigurationError, match=r"crmsync schema --scrapersky"):
        await sync.queue_changed("brevo")


async def test_the_scheduler_job_requeues_changed_contacts_before_its_run(
    db: AsyncEngine, scrapersky_url: str, insert: Insert, clock: Clock
) -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    from crmsync_core.scheduler import job_id, schedule_sync_jobs

    migrate(scrapersky_url)
    store = await Store.connect(db, Layout.scrapersky())
    crm = SandboxCrm()
    sync = engine(store, crm, clock)
    ids = [uuid.uuid4() for _ in range(2)]
    await insert(db, ids)
    await store.queue("brevo", ids, now=clock())
    assert (await sync.run_once("brevo")).synced == 2
    clock.advance(minutes=1)
    async with db.begin() as conn:
        await conn.execute(
            sa.text("UPDATE contacts SET name = 'Renamed', updated_at = :at WHERE id = :id"),
            {"at": clock().replace(tzinfo=None), "id": ids[1]},
        )
    clock.advance(minutes=1)

    scheduler = AsyncIOScheduler()
    await schedule_sync_jobs(scheduler, sync, ["brevo"], changed=True)
    job = scheduler.get_job(job_id("brevo"))
    await job.func(*job.args)  # one tick of the job, as APScheduler runs it

    assert crm.requests == 2
    states = await store.states("brevo", ids)
    assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}
    assert (await store.summary("brevo")).out_of_date == 0
