"""Wake on queue: a worker waiting with a 5-minute interval runs as soon as another connection commits a
queue, never for a queue that was rolled back; SQLite and transaction poolers poll at the interval."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from crmsync_core import Engine, Layout, Registry, Store
from crmsync_core.engine import RunReport
from crmsync_core.filters import ContactFilter
from crmsync_core.status import SyncStatus
from crmsync_core.testing import SandboxCrm, SandboxSettings, sandbox_adapter_spec
from crmsync_core.wake import QueueWaker, wake_unsupported_reason
from crmsync_core.worker import Worker

from .conftest import AdapterPlugin

#: the worker's interval: a contact synced before it is due proves the wake
INTERVAL = 300.0
#: how long a test waits for a wake before failing; generous on a loaded machine, far below INTERVAL
#: (the latency itself is measured in bench/wake.py)
WAKE_BOUND = 10.0
LAYOUT = Layout.default(["sandbox"])


class Running:
    """A worker running in the background, with an event per run report."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.reports: list[RunReport] = []
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def on_report(self, report: RunReport) -> None:
        self.reports.append(report)
        self.changed.set()

    async def until(self, condition: Callable[[], bool], bound: float = WAKE_BOUND) -> None:
        async with asyncio.timeout(bound):
            while not condition():
                self.changed.clear()
                await self.changed.wait()

    @property
    def synced(self) -> int:
        return sum(r.synced for r in self.reports)


def _engine(store: Store, crm: SandboxCrm) -> Engine:
    registry = Registry(load_entry_points=False, plugins=[AdapterPlugin(sandbox_adapter_spec(crm))])
    return Engine(store, registry=registry, settings={"sandbox": SandboxSettings()})


@pytest.fixture
async def worker_store(postgres_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(postgres_url, LAYOUT, create=True)
    yield store
    await store.close()


@pytest.fixture
async def host_store(postgres_url: str, worker_store: Store) -> AsyncIterator[Store]:
    """The host app: another engine, hence other connections, on the same database."""
    store = await Store.connect(postgres_url, LAYOUT)
    yield store
    await store.close()


@pytest.fixture
async def running(worker_store: Store, crm: SandboxCrm) -> AsyncIterator[Running]:
    holder: list[Running] = []
    worker = Worker(
        _engine(worker_store, crm),
        ["sandbox"],
        interval=INTERVAL,
        on_report=lambda report: holder[0].on_report(report),
        wake_on_queue="auto",
    )
    run = Running(worker)
    holder.append(run)
    run.task = asyncio.create_task(worker.run(handle_signals=False))
    # The first run happens at start; after it the worker waits for the interval, or a wake.
    await run.until(lambda: len(run.reports) == 1)
    assert worker.listener is not None
    async with asyncio.timeout(WAKE_BOUND):
        await worker.listener.listening.wait()
    yield run
    worker.stop()
    await run.task


async def _add(store: Store, count: int = 1) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    await store.add_contacts(
        [{"id": i, "email": f"{i.hex[:10]}@example.com", "name": "Ada"} for i in ids]
    )
    return ids


async def test_a_worker_waiting_for_its_interval_syncs_a_contact_queued_elsewhere_at_once(
    running: Running, host_store: Store, crm: SandboxCrm
) -> None:
    ids = await _add(host_store)

    await host_store.queue("sandbox", ids)

    await running.until(lambda: running.synced == 1)
    states = await host_store.states("sandbox", ids)
    assert states[ids[0]].sync_status is SyncStatus.COMPLETE
    assert crm.requests == 1
    # The second run was the wake's; the interval has not passed.
    assert len(running.reports) == 2


async def test_a_queue_rolled_back_in_the_hosts_transaction_wakes_nothing(
    running: Running, host_store: Store, crm: SandboxCrm
) -> None:
    rolled_back, committed = await _add(host_store), await _add(host_store)
    async with host_store.engine.connect() as conn:
        transaction = await conn.begin()
        result = await host_store.queue("sandbox", rolled_back, connection=conn)
        assert result.queued == 1
        await transaction.rollback()

    # Notifications arrive in commit order: once the committed queue's wake has come and its run
    # ended, a wake for the rolled-back queue would have come before it.
    await host_store.queue("sandbox", committed)
    await running.until(lambda: running.synced == 1)

    assert running.worker.waker.wakes == 1
    states = await host_store.states("sandbox", rolled_back + committed)
    assert states[rolled_back[0]].sync_status is SyncStatus.NEW
    assert states[committed[0]].sync_status is SyncStatus.COMPLETE
    assert crm.requests == 1


async def test_an_outbox_queue_wakes_the_worker_when_the_host_commits(
    running: Running, host_store: Store
) -> None:
    ids = await _add(host_store)
    async with host_store.engine.begin() as conn:
        await host_store.queue("sandbox", ids, connection=conn)
        # Not yet committed: the worker cannot see the contact, and is not woken for it.
        assert running.worker.waker.wakes == 0

    await running.until(lambda: running.synced == 1)
    assert running.worker.waker.wakes == 1


async def test_filtered_queue_and_selection_again_wake_only_when_something_was_queued(
    running: Running, host_store: Store
) -> None:
    await _add(host_store, 3)

    result = await host_store.queue_where("sandbox", ContactFilter(name_contains="ada"))

    assert result.queued == 3
    await running.until(lambda: running.synced == 3)
    wakes = running.worker.waker.wakes
    # Nothing new: every contact is Complete and nothing matches "New"; no notification.
    again = await host_store.queue_where(
        "sandbox", ContactFilter(sync_status=SyncStatus.NEW, name_contains="ada")
    )
    assert again.queued == 0
    await host_store.queue("sandbox", await _add(host_store))
    await running.until(lambda: running.synced == 4)
    assert running.worker.waker.wakes == wakes + 1


async def test_the_listener_reconnects_after_its_connection_is_killed_and_wakes_once(
    running: Running, host_store: Store, postgres_url: str
) -> None:
    listener = running.worker.listener
    assert listener is not None
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        killed = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = 'crmsync-listener' AND datname = current_database()"
        ).fetchone()
    assert killed == (1,)

    # After reconnecting, the listener wakes every CRM once (notifications may have been lost), and
    # later queues wake the worker again.
    await running.until(lambda: listener.connections == 2 and len(running.reports) == 2)
    ids = await _add(host_store)
    await host_store.queue("sandbox", ids)
    await running.until(lambda: running.synced == 1)
    assert not running.task.done()  # type: ignore[union-attr]


async def test_on_sqlite_the_worker_polls_at_its_interval_and_says_so_once(
    sqlite_url: str, crm: SandboxCrm, caplog: pytest.LogCaptureFixture
) -> None:
    store = await Store.connect(sqlite_url, LAYOUT, create=True)
    try:
        ids = await _add(store)
        await store.queue("sandbox", ids)
        reports: list[RunReport] = []
        done = asyncio.Event()

        def on_report(report: RunReport) -> None:
            reports.append(report)
            if sum(r.synced for r in reports) == 1:
                done.set()

        with caplog.at_level(logging.INFO, logger="crmsync.wake"):
            for _ in range(2):
                worker = Worker(
                    _engine(store, crm), ["sandbox"], interval=0.05, on_report=on_report
                )
                task = asyncio.create_task(worker.run(handle_signals=False))
                async with asyncio.timeout(WAKE_BOUND):
                    await done.wait()
                worker.stop()
                await task
                assert worker.listener is None
        said = [r.getMessage() for r in caplog.records if r.name == "crmsync.wake"]
        assert said == ["not woken on queue (sqlite has no LISTEN/NOTIFY): polling at the interval"]
        assert (await store.states("sandbox", ids))[ids[0]].sync_status is SyncStatus.COMPLETE
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "mode", "listens"),
    [
        ("postgresql+psycopg://app@db.example.com:5432/app", "auto", True),
        ("postgresql+asyncpg://app@db.example.com/app", "auto", True),
        ("postgresql+asyncpg://app@aws-0-eu.pooler.supabase.com:6543/postgres", "auto", False),
        ("postgresql+psycopg://app@db.example.com:5432/app", "off", False),
        ("sqlite+aiosqlite:///crmsync.sqlite3", "auto", False),
    ],
    ids=["postgres", "asyncpg", "supavisor-transaction-mode", "off", "sqlite"],
)
def test_where_workers_can_be_woken(url: str, mode: str, listens: bool) -> None:
    reason = wake_unsupported_reason(make_url(url), mode)
    assert (reason is None) is listens
    if "6543" in url:
        assert reason is not None
        assert "transaction pooler" in reason
        assert "LISTEN" in reason


async def test_crmsync_wake_on_queue_off_turns_listening_off(
    worker_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMSYNC_WAKE_ON_QUEUE", "off")
    assert worker_store.queue_listener(QueueWaker(), ["sandbox"]) is None
    monkeypatch.setenv("CRMSYNC_WAKE_ON_QUEUE", "auto")
    listener = worker_store.queue_listener(QueueWaker(), ["sandbox"])
    assert listener is not None
    await listener.aclose()


async def test_a_wake_while_busy_is_kept_for_the_next_wait() -> None:
    waker = QueueWaker()
    waker.wake("brevo")

    woken: Any = await waker.wait(["brevo", "hubspot"], 0)

    assert woken == {"brevo"}
    waker.clear("brevo")
    assert await waker.wait(["brevo"], 0) == set()


async def test_crmsync_wake_listen_url_gives_the_listener_its_own_connection(
    worker_store: Store, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A store behind Supavisor's transaction port listens through the session port it is given.
    monkeypatch.setenv("CRMSYNC_WAKE_LISTEN_URL", "postgresql://app@pooler.example.com:6543/app")
    assert worker_store.queue_listener(QueueWaker(), ["sandbox"]) is None
    monkeypatch.setenv("CRMSYNC_WAKE_LISTEN_URL", postgres_url)
    listener = worker_store.queue_listener(QueueWaker(), ["sandbox"])
    assert listener is not None
    async with asyncio.timeout(WAKE_BOUND):
        await listener.listening.wait()
    await listener.aclose()


async def test_an_invalid_crmsync_wake_on_queue_says_what_to_set(
    worker_store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmsync_core.errors import ConfigurationError

    monkeypatch.setenv("CRMSYNC_WAKE_ON_QUEUE", "sometimes")

    with pytest.raises(ConfigurationError, match="CRMSYNC_WAKE_ON_QUEUE must be auto or off"):
        worker_store.queue_listener(QueueWaker(), ["sandbox"])
