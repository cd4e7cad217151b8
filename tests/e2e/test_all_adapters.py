"""Every installed adapter, found through its entry point as a user's install finds it, syncing through
the engine into its own fake CRM: on a SQLite file, on PostgreSQL, and on ScraperSky's real table."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from crmsync_core import Engine, Layout, Registry, SandboxOptions, Store, SyncStatus
from crmsync_core.retry import RequestRetry
from crmsync_core.testing import contact_rows

CRMS = ["brevo", "hubspot", "mautic", "n8n"]
NO_WAIT = RequestRetry(attempts=1, initial_wait=0, max_wait=0, max_rate_limit_wait=30)


def engine_for(store: Store, registry: Registry, failure_rate: float) -> Engine:
    settings: dict[str, Any] = {}
    transports: dict[str, Any] = {}
    for crm in CRMS:
        spec = registry.get(crm)
        assert spec.sandbox is not None, f"{crm} ships no sandbox"
        sandbox = spec.make_sandbox(SandboxOptions(failure_rate=failure_rate, seed=11))
        settings[crm] = sandbox.settings.model_copy(
            update={
                "sync_retry_delay_minutes": 0.0,
                "sync_retry_jitter": 0.0,
                "sync_max_retries": 8,
            }
        )
        transports[crm] = sandbox.transport
    return Engine(
        store, registry=registry, settings=settings, transports=transports, request_retry=NO_WAIT
    )


async def sync_everything(store: Store, rows: list[dict[str, Any]], failure_rate: float) -> None:
    registry = Registry()  # the entry points of the installed distributions
    assert set(CRMS) <= set(registry.adapters()), registry.failures()
    ids = [row["id"] for row in rows]
    engine = engine_for(store, registry, failure_rate)
    for crm in CRMS:
        await store.queue(crm, ids)
        report = await engine.run_once(crm)
        assert report.stopped is None, report.stopped

    no_email = {row["id"] for row in rows if not row["email"].strip()}
    for crm in CRMS:
        states = await store.states(crm, ids)
        assert len(states) == len(rows), f"{crm}: a contact left the table"
        counts = Counter(state.sync_status for state in states.values())
        assert set(counts) <= {SyncStatus.COMPLETE, SyncStatus.SKIPPED}, f"{crm}: {counts}"
        for contact_id, state in states.items():
            if contact_id in no_email:
                assert (state.sync_status, state.error) == (SyncStatus.SKIPPED, "no e-mail address")
            elif state.sync_status is SyncStatus.SKIPPED:
                assert state.error and "invalid e-mail address" in state.error, (crm, state)
            else:
                assert state.remote_id, f"{crm}: Complete without the CRM's id"
                assert state.error is None
        assert counts[SyncStatus.COMPLETE] >= len(rows) * 0.85


async def test_every_adapter_through_its_entry_point(database_url: str) -> None:
    registry = Registry()
    layout = Layout.default([registry.get(crm) for crm in CRMS])
    store = await Store.connect(database_url, layout, create=True)
    try:
        rows = list(
            contact_rows(
                240,
                seed=5,
                missing_email_share=0.05,
                invalid_email_share=0.05,
                duplicate_email_share=0.1,
            )
        )
        await store.add_contacts(rows)
        await sync_everything(store, rows, failure_rate=0.2)
    finally:
        await store.close()


@pytest.mark.parametrize("driver", ["asyncpg", "psycopg"])
async def test_every_adapter_on_scraperskys_table(
    postgres_url: str, scrapersky_sql: str, driver: str
) -> None:
    plain = sa.create_engine(postgres_url)
    with plain.begin() as conn:
        conn.exec_driver_sql(scrapersky_sql)
    plain.dispose()
    url = sa.make_url(postgres_url).set(drivername=f"postgresql+{driver}")
    connect_args: dict[str, Any] = (
        # As ScraperSky configures asyncpg behind the Supavisor transaction pooler.
        {
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
        }
        if driver == "asyncpg"
        else {"prepare_threshold": None}
    )
    host_engine = create_async_engine(url, poolclass=NullPool, connect_args=connect_args)
    store = await Store.connect(host_engine, Layout.scrapersky())
    try:
        rows = list(contact_rows(120, seed=9, missing_email_share=0.05, invalid_email_share=0.05))
        await store.add_contacts(rows)
        await sync_everything(store, rows, failure_rate=0.2)
        async with host_engine.connect() as conn:
            n8n_ids = (
                await conn.execute(sa.text("SELECT count(n8n_workflow_id) FROM contacts"))
            ).scalar_one()
        assert n8n_ids > 0, "n8n's remote id lives in n8n_workflow_id"
    finally:
        await store.close()
        await host_engine.dispose()
