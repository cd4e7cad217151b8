"""The store and the engine on ScraperSky's real table (native enums, n8n_workflow_id, shared retry
columns, naive updated_at), through asyncpg behind-the-pooler settings and through psycopg."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from crmsync_core import ContactFilter, Engine, Layout, ProcessingStatus, Store, SyncStatus
from crmsync_core.store import scrapersky_migration_sql
from crmsync_core.testing import SandboxCrm

from ..conftest import libpq_dsn

pytestmark = pytest.mark.postgres

Insert = Callable[..., Any]
Fetch = Callable[..., Any]


Clock = Any


def untouched(row: dict[str, Any]) -> dict[str, Any]:
    """The columns of ScraperSky's other workflows (curation, DeBounce, enrichment, ...)."""
    return {
        name: value
        for name, value in row.items()
        if not name.startswith(("brevo_", "hubspot_", "mautic_", "n8n_"))
        and name
        not in ("updated_at", "retry_count", "last_retry_at", "next_retry_at", "last_failed_crm")
    }


async def test_a_contact_goes_from_new_to_complete_and_nothing_else_changes(
    db: AsyncEngine, store: Store, sync_engine: Engine, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    await insert(db, ids)
    before = await fetch(db, ids)

    queued = await store.queue("brevo", ids)
    assert queued.queued == 3
    report = await sync_engine.run_once("brevo")
    assert (report.synced, report.failed, report.retrying) == (3, 0, 0)

    after = await fetch(db, ids)
    for contact_id in ids:
        row = after[contact_id]
        assert row["brevo_sync_status"] == "Complete"
        assert row["brevo_processing_status"] == "Complete"
        assert row["brevo_processing_error"] is None
        assert row["brevo_contact_id"]
        # the other CRMs, the other workflows and the shared retry columns are as they were
        for crm in ("hubspot", "mautic", "n8n"):
            assert row[f"{crm}_sync_status"] == "New"
            assert row[f"{crm}_processing_status"] is None
        assert untouched(row) == untouched(before[contact_id])
        assert (row["retry_count"], row["next_retry_at"], row["last_failed_crm"]) == (0, None, None)
        # updated_at stays naive and is written in UTC
        assert row["updated_at"].tzinfo is None
        now = datetime.now(UTC).replace(tzinfo=None)
        assert abs(now - row["updated_at"]) < timedelta(minutes=5)


async def test_n8n_keeps_its_remote_id_in_n8n_workflow_id(
    db: AsyncEngine, store: Store, sync_engine: Engine, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4()]
    await insert(db, ids)
    await store.queue("n8n", ids, by_system=True)

    await sync_engine.run_once("n8n")

    row = (await fetch(db, ids))[ids[0]]
    assert row["n8n_sync_status"] == "Complete"
    assert row["n8n_workflow_id"]


async def test_a_contact_without_email_is_skipped_with_the_reason(
    db: AsyncEngine, store: Store, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4(), uuid.uuid4()]
    await insert(db, ids, email=lambda n: "" if n == 0 else "someone@acme.io")

    result = await store.queue("hubspot", ids)

    assert (result.queued, result.skipped) == (1, 1)
    rows = await fetch(db, ids)
    assert rows[ids[0]]["hubspot_sync_status"] == "Skipped"
    assert rows[ids[0]]["hubspot_processing_error"] == "no e-mail address"
    assert rows[ids[1]]["hubspot_sync_status"] == "Selected"
    assert rows[ids[1]]["hubspot_processing_status"] == "Queued"


async def test_filters_compare_with_native_enum_columns(
    db: AsyncEngine, store: Store, insert: Insert
) -> None:
    domain = uuid.uuid4()
    free = [uuid.uuid4() for _ in range(2)]
    corporate = [uuid.uuid4() for _ in range(3)]
    await insert(db, free, email_type="FREE", has_gmail=True, domain_id=domain)
    await insert(db, corporate, contact_curation_status="New")

    by_type = await store.queue_where(
        "mautic", ContactFilter(email_type="FREE", has_gmail=True, domain_id=domain)
    )
    by_curation = await store.queue_where(
        "brevo", ContactFilter(curation_status="New", processing_status="none")
    )
    again = await store.queue_where("mautic", ContactFilter(email_type="FREE"))

    assert by_type.queued == 2
    assert by_curation.queued == 3
    assert (again.queued, again.already_queued) == (0, 2)


async def test_a_failure_in_one_crm_does_not_delay_another(
    db: AsyncEngine,
    store: Store,
    sync_engine: Engine,
    crms: dict[str, SandboxCrm],
    clock: Clock,
    insert: Insert,
    fetch: Fetch,
) -> None:
    ids = [uuid.uuid4() for _ in range(4)]
    await insert(db, ids)
    crms["brevo"].failure_rate = 1.0
    await store.queue("brevo", ids)
    await store.queue("hubspot", ids)

    brevo = await sync_engine.run_once("brevo")
    assert brevo.retrying == 4
    hubspot = await sync_engine.run_once("hubspot")

    assert hubspot.synced == 4, "brevo's backoff must not hold hubspot's contacts back"
    rows = await fetch(db, ids)
    for row in rows.values():
        assert row["hubspot_sync_status"] == "Complete"
        # hubspot's success leaves brevo's retry schedule alone
        assert (row["retry_count"], row["last_failed_crm"]) == (1, "brevo")
        assert row["next_retry_at"] > clock.now
    assert (await sync_engine.run_once("brevo")).claimed == 0, "brevo waits for its next attempt"

    crms["brevo"].failure_rate = 0.0
    clock.advance(minutes=6)
    assert (await sync_engine.run_once("brevo")).synced == 4
    states = await store.states("brevo", ids)
    assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}
    rows = await fetch(db, ids)
    assert {(r["retry_count"], r["last_failed_crm"]) for r in rows.values()} == {(0, None)}


async def test_transient_failures_end_in_error_once_retries_are_used_up(
    db: AsyncEngine,
    store: Store,
    sync_engine: Engine,
    crms: dict[str, SandboxCrm],
    clock: Clock,
    insert: Insert,
    fetch: Fetch,
) -> None:
    ids = [uuid.uuid4()]
    await insert(db, ids)
    crms["mautic"].failure_rate = 1.0
    await store.queue("mautic", ids)

    for _ in range(4):  # the first attempt and three retries
        await sync_engine.run_once("mautic")
        clock.advance(hours=1)

    row = (await fetch(db, ids))[ids[0]]
    assert (row["mautic_sync_status"], row["mautic_processing_status"]) == ("Error", "Error")
    assert "gave up after 4 attempts" in row["mautic_processing_error"]
    assert (row["retry_count"], row["last_failed_crm"]) == (4, "mautic")
    assert row["last_retry_at"] is not None


async def test_the_shared_counter_keeps_only_the_last_failed_crms_schedule(
    db: AsyncEngine,
    store: Store,
    sync_engine: Engine,
    crms: dict[str, SandboxCrm],
    insert: Insert,
) -> None:
    """What docs/scrapersky.md says the shared columns cannot express: two CRMs failing on one contact."""
    ids = [uuid.uuid4()]
    await insert(db, ids)
    crms["brevo"].failure_rate = crms["hubspot"].failure_rate = 1.0
    await store.queue("brevo", ids)
    await store.queue("hubspot", ids)

    await sync_engine.run_once("brevo")
    await sync_engine.run_once("hubspot")

    brevo = (await store.states("brevo", ids))[ids[0]]
    hubspot = (await store.states("hubspot", ids))[ids[0]]
    assert (hubspot.attempts, hubspot.next_attempt_at is not None) == (1, True)
    # hubspot's failure overwrote brevo's schedule: brevo reads as never failed and is due now
    assert (brevo.attempts, brevo.next_attempt_at) == (0, None)
    assert brevo.processing_status is ProcessingStatus.QUEUED
    assert (await store.summary("brevo")).due == 1


async def test_a_dead_workers_claim_goes_back_to_the_queue(
    db: AsyncEngine, store: Store, clock: Clock, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4() for _ in range(2)]
    await insert(db, ids)
    await store.queue("brevo", ids)
    claim = await store.claim("brevo", 10, now=clock.now)
    assert len(claim.contacts) == 2

    assert (
        await store.release_expired("brevo", now=clock.now, older_than=timedelta(minutes=10)) == 0
    )
    released = await store.release_expired(
        "brevo", now=clock.now + timedelta(minutes=11), older_than=timedelta(minutes=10)
    )

    assert released == 2
    rows = await fetch(db, ids)
    assert {(r["brevo_sync_status"], r["brevo_processing_status"]) for r in rows.values()} == {
        ("Queued", "Queued")
    }
    assert {r["retry_count"] for r in rows.values()} == {0}, "a crash is not a failed attempt"


async def test_the_migration_gives_each_crm_its_own_retry_state(
    db: AsyncEngine,
    scrapersky_url: str,
    crms: dict[str, SandboxCrm],
    make_registry: Callable[..., Any],
    sandbox_settings: Callable[..., Any],
    clock: Clock,
    insert: Insert,
    fetch: Fetch,
) -> None:
    with psycopg.connect(libpq_dsn(scrapersky_url), autocommit=True) as conn:
        conn.execute(scrapersky_migration_sql())
        conn.execute(scrapersky_migration_sql())  # idempotent
    store = await Store.connect(db, Layout.scrapersky(per_crm_retry=True))
    engine = Engine(
        store,
        registry=make_registry(crms),
        settings={crm: sandbox_settings() for crm in crms},
        clock=clock,
    )
    ids = [uuid.uuid4()]
    await insert(db, ids)
    before = (await fetch(db, ids))[ids[0]]
    crms["brevo"].failure_rate = crms["hubspot"].failure_rate = 1.0
    await store.queue("brevo", ids, now=clock.now)
    await store.queue("hubspot", ids, now=clock.now)

    await engine.run_once("brevo")
    await engine.run_once("hubspot")
    clock.advance(minutes=6)
    await engine.run_once("brevo")

    brevo = (await store.states("brevo", ids))[ids[0]]
    hubspot = (await store.states("hubspot", ids))[ids[0]]
    assert brevo.attempts == 2, "hubspot's failure no longer resets brevo's counter"
    assert hubspot.attempts == 1
    row = (await fetch(db, ids))[ids[0]]
    assert (row["retry_count"], row["next_retry_at"], row["last_failed_crm"]) == (0, None, None)
    assert untouched(row) == untouched(before)
    assert row["brevo_attempts"] == 2
    assert row["hubspot_attempts"] == 1


async def test_the_run_report_counts_what_was_written(
    request: pytest.FixtureRequest,
    driver: str,
    db: AsyncEngine,
    store: Store,
    sync_engine: Engine,
    insert: Insert,
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    await insert(db, ids)
    await store.queue("brevo", ids)

    report = await sync_engine.run_once("brevo")

    assert (report.synced, report.stale) == (3, 0)


async def test_how_long_contacts_wait_does_not_depend_on_the_session_time_zone(
    scrapersky_url: str, driver: str, insert: Insert
) -> None:
    url = make_url(scrapersky_url)
    connect_args: dict[str, Any] = (
        {"server_settings": {"TimeZone": "Asia/Tokyo"}, "statement_cache_size": 0}
        if driver == "asyncpg"
        else {"options": "-c TimeZone=Asia/Tokyo", "prepare_threshold": None}
    )
    engine = create_async_engine(url, connect_args=connect_args)
    try:
        store = await Store.connect(engine, Layout.scrapersky())
        ids = [uuid.uuid4()]
        await insert(engine, ids)
        await store.queue("brevo", ids)

        summary = await store.summary("brevo")

        assert summary.due == 1
        assert summary.oldest_due_seconds is not None
        assert summary.oldest_due_seconds < 600
    finally:
        await engine.dispose()


async def test_the_store_reads_enum_labels_the_way_python_spells_them(db: AsyncEngine) -> None:
    """The status machine's strings are exactly the labels of ScraperSky's enum types."""
    async with db.connect() as conn:
        rows = (
            await conn.execute(
                sa.text(
                    "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder) "
                    "FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid GROUP BY t.typname"
                )
            )
        ).all()
    labels = {name: list(values) for name, values in rows}
    sync = [s.value for s in SyncStatus]
    processing = [p.value for p in ProcessingStatus]
    assert labels["crm_sync_status"] == labels["hubspot_sync_status"] == sync
    assert labels["crm_processing_status"] == labels["hubspot_sync_processing_status"] == processing
