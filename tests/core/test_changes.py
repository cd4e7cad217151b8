"""Change detection on SQLite and PostgreSQL: what was delivered is remembered per CRM and contact, an
unchanged re-selection costs no request, and `queue_changed` re-queues what the CRM no longer matches."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from crmsync_core import Engine, Layout, Registry, Store, SyncStatus
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import SandboxCrm, SandboxSettings, sandbox_adapter_spec
from crmsync_core.testing.sandbox import sandbox_payload

from .conftest import AdapterPlugin, Clock, rows


def engine(store: Store, crm: SandboxCrm, clock: Clock, **settings: Any) -> Engine:
    """The sandbox CRM with change detection: it receives each contact's e-mail and name."""
    spec = sandbox_adapter_spec(crm, payload=sandbox_payload)
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[AdapterPlugin(spec)]),
        settings={"sandbox": SandboxSettings(sync_retry_jitter=0.0, **settings)},
        request_retry=NO_WAIT,
        clock=clock,
    )


async def update(store: Store, contact_id: Any, clock: Clock, **values: Any) -> None:
    """What the host does: change a contact's columns, and its updated_at."""
    clock.advance(minutes=1)
    table = store.table
    async with store.engine.begin() as conn:
        await conn.execute(
            sa.update(table)
            .where(table.c.id == contact_id)
            .values(**values, updated_at=clock().replace(tzinfo=None))
        )
    clock.advance(minutes=1)


async def delivered(store: Store, crm: SandboxCrm, clock: Clock, count: int = 1) -> list[Any]:
    contacts = rows(count)
    await store.add_contacts(contacts)
    ids = [row["id"] for row in contacts]
    await store.queue("sandbox", ids, now=clock())
    report = await engine(store, crm, clock).run_once("sandbox")
    assert report.synced == count
    return ids


async def test_an_unchanged_reselection_completes_without_a_request(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    ids = await delivered(store, crm, clock, 2)
    delivered_at = clock()
    clock.advance(hours=1)
    assert crm.requests == 1

    result = await store.queue("sandbox", ids, now=clock())
    assert result.queued == 2
    report = await engine(store, crm, clock).run_once("sandbox")

    assert crm.requests == 1  # nothing sent
    assert (report.unchanged, report.synced) == (2, 0)
    states = await store.states("sandbox", ids)
    for state in states.values():
        assert state.sync_status is SyncStatus.COMPLETE
        assert state.error == f"unchanged since {delivered_at:%Y-%m-%d %H:%M:%S} UTC"
        assert state.remote_id is not None  # the CRM's id is kept


async def test_force_resends_an_unchanged_contact(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    ids = await delivered(store, crm, clock)
    await store.queue("sandbox", ids, now=clock(), force=True)
    report = await engine(store, crm, clock).run_once("sandbox")
    assert (report.synced, report.unchanged, crm.requests) == (1, 0, 2)


async def test_a_changed_received_field_is_sent_on_reselection(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    (contact_id,) = await delivered(store, crm, clock)
    await update(store, contact_id, clock, name="Ada Lovelace")
    await store.queue("sandbox", [contact_id], now=clock())
    report = await engine(store, crm, clock).run_once("sandbox")
    assert (report.synced, crm.requests) == (1, 2)


async def test_queue_changed_requeues_a_contact_whose_received_field_changed(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    ids = await delivered(store, crm, clock, 3)
    await update(store, ids[0], clock, name="Grace Hopper")
    assert (await store.summary("sandbox")).out_of_date == 1

    sync = engine(store, crm, clock)
    scan = await sync.queue_changed("sandbox")

    assert (scan.scanned, scan.requeued, scan.unchanged) == (1, 1, 0)
    states = await store.states("sandbox", ids)
    assert states[ids[0]].sync_status is SyncStatus.QUEUED  # as the system
    assert {states[i].sync_status for i in ids[1:]} == {SyncStatus.COMPLETE}
    assert (await store.summary("sandbox")).out_of_date == 0
    report = await sync.run_once("sandbox")
    assert (report.synced, crm.requests) == (1, 2)
    # Delivered again: nothing left to find.
    assert (await sync.queue_changed("sandbox")).requeued == 0


async def test_a_changed_field_the_crm_does_not_receive_is_no_change(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    (contact_id,) = await delivered(store, crm, clock)
    await update(store, contact_id, clock, phone_number="+4915112345678")
    assert (await store.summary("sandbox")).out_of_date == 1

    scan = await engine(store, crm, clock).queue_changed("sandbox")

    assert (scan.scanned, scan.requeued, scan.unchanged) == (1, 0, 1)
    state = (await store.states("sandbox", [contact_id]))[contact_id]
    assert state.sync_status is SyncStatus.COMPLETE
    # Compared once: the next scan passes over it until it is updated again.
    assert (await store.summary("sandbox")).out_of_date == 0
    assert (await engine(store, crm, clock).queue_changed("sandbox")).scanned == 0
    # And a re-selection still costs no request.
    await store.queue("sandbox", [contact_id], now=clock())
    report = await engine(store, crm, clock).run_once("sandbox")
    assert (report.unchanged, crm.requests) == (1, 1)


async def test_a_contact_in_error_is_never_skipped_as_unchanged(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    (contact_id,) = await delivered(store, crm, clock)
    crm.failure_rate = 1.0
    await store.queue("sandbox", [contact_id], now=clock(), force=True)
    report = await engine(store, crm, clock, sync_max_retries=0).run_once("sandbox")
    assert report.failed == 1
    state = (await store.states("sandbox", [contact_id]))[contact_id]
    assert state.sync_status is SyncStatus.ERROR

    crm.failure_rate = 0.0
    await store.queue("sandbox", [contact_id], now=clock())  # same payload as delivered
    report = await engine(store, crm, clock).run_once("sandbox")
    assert (report.synced, report.unchanged, crm.requests) == (1, 0, 3)


async def test_a_skipped_contact_is_never_skipped_as_unchanged(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    (contact_id,) = await delivered(store, crm, clock)
    email = (await store.due_contacts("sandbox", now=clock())) or None
    assert email is None  # nothing due
    await update(store, contact_id, clock, email=None)
    result = await store.queue("sandbox", [contact_id], now=clock())
    assert result.skipped == 1  # no e-mail address: Skipped
    await update(store, contact_id, clock, email="person0@example.com")  # as delivered

    await store.queue("sandbox", [contact_id], now=clock())
    report = await engine(store, crm, clock).run_once("sandbox")
    assert (report.synced, report.unchanged, crm.requests) == (1, 0, 2)


async def test_a_retry_is_never_skipped_as_unchanged(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    (contact_id,) = await delivered(store, crm, clock)
    await update(store, contact_id, clock, name="Changed Name")
    await store.queue("sandbox", [contact_id], now=clock())
    crm.failure_rate = 1.0
    report = await engine(store, crm, clock).run_once("sandbox")
    assert report.retrying == 1
    await update(store, contact_id, clock, name="Person 0")  # back to what was delivered

    crm.failure_rate = 0.0
    clock.advance(hours=1)
    report = await engine(store, crm, clock).run_once("sandbox")
    assert (report.synced, report.unchanged, crm.requests) == (1, 0, 3)


async def test_fingerprints_survive_a_restart(
    database_url: str, crm: SandboxCrm, clock: Clock
) -> None:
    layout = Layout.default(["sandbox", "other"])
    store = await Store.connect(database_url, layout=layout, create=True)
    try:
        ids = await delivered(store, crm, clock, 2)
    finally:
        await store.close()

    store = await Store.connect(database_url, layout=layout)
    try:
        await store.queue("sandbox", ids, now=clock())
        report = await engine(store, crm, clock).run_once("sandbox")
        assert (report.unchanged, crm.requests) == (2, 1)
    finally:
        await store.close()


async def test_a_crm_without_a_payload_always_sends(store: Store, clock: Clock) -> None:
    crm = SandboxCrm()
    spec = sandbox_adapter_spec(crm)  # no payload: no change detection
    sync = Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[AdapterPlugin(spec)]),
        settings={"sandbox": SandboxSettings()},
        request_retry=NO_WAIT,
        clock=clock,
    )
    contacts = rows(1)
    await store.add_contacts(contacts)
    for _ in range(2):
        await store.queue("sandbox", [contacts[0]["id"]], now=clock())
        assert (await sync.run_once("sandbox")).synced == 1
    assert crm.requests == 2
