"""Wake on queue in ScraperSky's setup: the APScheduler jobs (5-minute interval) run as soon as the web
app's request commits a queue on its own session, through asyncpg and psycopg; a request that rolls
back wakes nothing."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from types import ModuleType
from typing import Any

import anyio.from_thread
import httpx
import psycopg
import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from crmsync_core import Engine, Layout, Registry, Store, hookimpl
from crmsync_core.engine import RunReport
from crmsync_core.scheduler import _wakes, job_id, schedule_sync_jobs
from crmsync_core.testing import SandboxCrm

from ..conftest import libpq_dsn

pytestmark = pytest.mark.postgres

#: far below the jobs' 5-minute interval: a run before it is the wake's (bench/wake.py measures speed)
WAKE_BOUND = 10.0


@pytest.fixture
async def scheduler() -> AsyncIterator[AsyncIOScheduler]:
    scheduler = AsyncIOScheduler()
    yield scheduler
    if scheduler.running:
        scheduler.shutdown(wait=False)


@pytest.fixture
async def finished() -> asyncio.Queue[RunReport]:
    return asyncio.Queue()


@pytest.fixture
async def started(
    store: Store,
    crms: dict[str, SandboxCrm],
    make_registry: Callable[..., Any],
    sandbox_settings: Callable[..., Any],
    scheduler: AsyncIOScheduler,
    finished: asyncio.Queue[RunReport],
) -> AsyncIOScheduler:
    class Observer:
        @hookimpl
        def run_finished(self, crm: str, report: RunReport) -> None:
            finished.put_nowait(report)

    registry = make_registry({"n8n": crms["n8n"]})
    registry.register(Observer())
    engine = Engine(
        store,
        registry=registry,
        settings={"n8n": sandbox_settings(sync_scheduler_interval_minutes=5)},
    )
    await schedule_sync_jobs(scheduler, engine, wake_on_queue="auto")
    scheduler.start()
    listener = store._listeners[0]
    async with asyncio.timeout(WAKE_BOUND):
        await listener.listening.wait()
    return scheduler


async def _select_in_request(db: AsyncEngine, ids: list[uuid.UUID], *, commit: bool) -> None:
    """What ScraperSky's select endpoint does: queue on the request's session, then commit (or fail)."""
    store = await Store.connect(db, Layout.scrapersky())
    async with AsyncSession(db) as session:
        conn = await session.connection()
        result = await store.queue("n8n", ids, connection=conn)
        assert result.queued == len(ids)
        if commit:
            await session.commit()
        else:
            await session.rollback()


async def test_a_job_with_a_5_minute_interval_runs_when_the_host_commits_a_selection(
    db: AsyncEngine,
    started: AsyncIOScheduler,
    finished: asyncio.Queue[RunReport],
    crms: dict[str, SandboxCrm],
    insert: Callable[..., Any],
    fetch: Callable[..., Any],
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    await insert(db, ids)

    await _select_in_request(db, ids, commit=True)

    async with asyncio.timeout(WAKE_BOUND):
        report = await finished.get()
    assert report.synced == 3
    rows = await fetch(db, ids)
    assert {row["n8n_sync_status"] for row in rows.values()} == {"Complete"}
    # The job keeps its interval as the fallback.
    assert started.get_job(job_id("n8n")).trigger.interval.total_seconds() == 300


async def test_a_selection_rolled_back_by_the_host_wakes_no_job(
    db: AsyncEngine,
    started: AsyncIOScheduler,
    finished: asyncio.Queue[RunReport],
    crms: dict[str, SandboxCrm],
    insert: Callable[..., Any],
    fetch: Callable[..., Any],
) -> None:
    rolled_back, committed = [uuid.uuid4()], [uuid.uuid4()]
    await insert(db, rolled_back + committed)

    await _select_in_request(db, rolled_back, commit=False)
    await _select_in_request(db, committed, commit=True)

    # Notifications come in commit order: the only run is the committed selection's.
    async with asyncio.timeout(WAKE_BOUND):
        report = await finished.get()
    assert report.synced == 1
    assert _wakes[started].waker.wakes == 1
    rows = await fetch(db, rolled_back + committed)
    assert rows[rolled_back[0]]["n8n_sync_status"] == "New"
    assert rows[committed[0]]["n8n_sync_status"] == "Complete"
    assert crms["n8n"].requests == 1


async def test_scheduler_shutdown_stops_listening(started: AsyncIOScheduler, store: Store) -> None:
    listener = store._listeners[0]

    started.shutdown(wait=False)

    await asyncio.sleep(0)
    assert not listener.listening.is_set()


def _listening_connections(url: str) -> int:
    with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'crmsync-listener'"
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_the_example_app_closes_its_listening_connection_at_each_shutdown(
    scrapersky_url: str, registry: Registry, example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A host started and stopped over and over (a test client per request, a reloading server) must
    # not leave a listening connection behind each time, the server's connection slots would run out:
    # whether it was listening already or still connecting when the host stopped. Each start runs in
    # an event loop of its own, in a thread, which closes after it: what a test client does.
    monkeypatch.setenv("API_TOKEN", "token")
    app = example.create_app(scrapersky_url, registry=registry)

    async def ask(token: str) -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            answer = await client.get(
                "/api/v3/contacts/n8n/status/summary", headers={"Authorization": f"Bearer {token}"}
            )
        return answer.status_code

    for cycle in range(12):
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            portal.wrap_async_context_manager(app.router.lifespan_context(app)),
        ):
            if cycle == 0:  # listening first
                assert portal.call(ask, "token") == 200
                deadline = time.monotonic() + WAKE_BOUND
                while _listening_connections(scrapersky_url) == 0:
                    assert time.monotonic() < deadline, "the app never listened"
                    time.sleep(0.05)
            else:  # refused at once (no token): it stops while the listener connects
                assert portal.call(ask, "wrong") == 401
        assert _listening_connections(scrapersky_url) == 0, f"left open at shutdown {cycle}"
