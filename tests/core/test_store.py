"""The store's queue operations, on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
import sqlalchemy as sa

from crmsync_core import ContactFilter, Layout, ProcessingStatus, Store, SyncStatus
from crmsync_core.errors import ConfigurationError, DatabaseUnavailableError, InvalidRequestError
from crmsync_core.status import Event
from crmsync_core.store import QueueResult, Resolution, schema_sql, scrapersky_migration_sql

from .conftest import Clock, rows

S, P = SyncStatus, ProcessingStatus


async def test_queue_by_ids_counts_everything(store: Store) -> None:
    people = rows(5)
    no_email = rows(2, email="")
    await store.add_contacts(people + no_email)
    missing = uuid.uuid4()
    ids = [r["id"] for r in people + no_email]

    first = await store.queue("sandbox", [*ids, missing, ids[0]])
    assert (first.queued, first.already_queued, first.skipped, first.not_found) == (5, 0, 2, 1)
    again = await store.queue("sandbox", ids[:3])
    assert (again.queued, again.already_queued) == (0, 3)

    states = await store.states("sandbox", ids)
    assert {states[r["id"]].sync_status for r in people} == {S.SELECTED}
    assert {states[r["id"]].processing_status for r in people} == {P.QUEUED}
    skipped = states[no_email[0]["id"]]
    assert (skipped.sync_status, skipped.error) == (S.SKIPPED, "no e-mail address")
    # Queueing one CRM leaves the other alone.
    other = await store.states("other", ids)
    assert {s.sync_status for s in other.values()} == {S.NEW}


async def test_queue_by_system_goes_straight_to_queued(store: Store) -> None:
    people = rows(2)
    await store.add_contacts(people)
    await store.queue("sandbox", [r["id"] for r in people], by_system=True)
    states = await store.states("sandbox", [r["id"] for r in people])
    assert {s.sync_status for s in states.values()} == {S.QUEUED}


async def test_malformed_id_is_refused_and_nothing_is_written(store: Store) -> None:
    people = rows(3)
    await store.add_contacts(people)
    with pytest.raises(InvalidRequestError, match="'not-a-uuid' is not a valid UUID"):
        await store.queue("sandbox", [people[0]["id"], "not-a-uuid"])
    states = await store.states("sandbox", [r["id"] for r in people])
    assert {s.sync_status for s in states.values()} == {S.NEW}


async def test_unknown_crm_names_the_fix(store: Store) -> None:
    with pytest.raises(ConfigurationError, match="no columns for CRM 'nope'.*crmsync schema"):
        await store.queue("nope", [uuid.uuid4()])


async def test_a_hundred_thousand_ids_at_once(store: Store) -> None:
    people = rows(1_000)
    await store.add_contacts(people)
    ids = [r["id"] for r in people] + [uuid.uuid4() for _ in range(99_000)]
    result = await store.queue("sandbox", ids)
    assert (result.queued, result.not_found) == (1_000, 99_000)


async def test_queue_runs_in_the_callers_transaction(store: Store) -> None:
    people = rows(3)
    await store.add_contacts(people)
    ids = [r["id"] for r in people]
    async with store.engine.connect() as conn:
        transaction = await conn.begin()
        result = await store.queue("sandbox", ids, connection=conn)
        assert result.queued == 3
        await transaction.rollback()
    states = await store.states("sandbox", ids)
    assert {s.sync_status for s in states.values()} == {S.NEW}, (
        "the host's rollback undoes the queueing"
    )


async def test_unselect_only_what_is_not_in_flight(store: Store, clock: Clock) -> None:
    people = rows(4)
    await store.add_contacts(people)
    ids = [r["id"] for r in people]
    await store.queue("sandbox", ids, now=clock())
    claim = await store.claim("sandbox", 1, now=clock())
    assert len(claim.contacts) == 1
    assert await store.unselect("sandbox", ids) == 3
    states = await store.states("sandbox", ids)
    assert states[claim.contacts[0].id].sync_status is S.PROCESSING
    assert sorted(s.sync_status for s in states.values()) == [S.NEW, S.NEW, S.NEW, S.PROCESSING]


@pytest.mark.parametrize(
    ("contact_filter", "expected"),
    [
        (ContactFilter(email_contains="ACME"), {"a"}),
        (ContactFilter(name_contains="zoë"), {"b"}),
        (ContactFilter(email_type="FREE"), {"b", "c"}),
        (ContactFilter(has_gmail=True), {"c"}),
        (ContactFilter(email_type="FREE", has_gmail=False), {"b"}),
        (ContactFilter(email_contains="100%"), set()),
        (ContactFilter(), {"a", "b", "c"}),
    ],
)
async def test_queue_by_filter(
    store: Store, contact_filter: ContactFilter, expected: set[str]
) -> None:
    people = {
        "a": {"id": uuid.uuid4(), "email": "ann@acme.io", "name": "Ann", "email_type": "CORPORATE"},
        "b": {
            "id": uuid.uuid4(),
            "email": "b@x.org",
            "name": "Zoë B",
            "email_type": "FREE",
            "has_gmail": False,
        },
        "c": {
            "id": uuid.uuid4(),
            "email": "c@gmail.com",
            "name": "C",
            "email_type": "FREE",
            "has_gmail": True,
        },
    }
    await store.add_contacts(people.values())
    result = await store.queue_where("sandbox", contact_filter)
    assert result.queued == len(expected)
    states = await store.states("sandbox", [p["id"] for p in people.values()])
    queued = {key for key, p in people.items() if states[p["id"]].sync_status is S.SELECTED}
    assert queued == expected


async def test_filter_by_domain_and_processing_status(store: Store, clock: Clock) -> None:
    domain = uuid.uuid4()
    mine, others = rows(3, domain_id=domain), rows(2, domain_id=uuid.uuid4())
    await store.add_contacts(mine + others)
    assert (await store.queue_where("sandbox", ContactFilter(domain_id=domain))).queued == 3
    result = await store.queue_where("sandbox", ContactFilter(processing_status="none"))
    assert result.queued == 2
    assert (
        await store.queue_where("sandbox", ContactFilter(processing_status="Queued"))
    ).already_queued == 5


def test_malformed_filters_are_refused() -> None:
    with pytest.raises(ValueError, match="email_type"):
        ContactFilter(email_type="PERSONAL")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="colour"):
        ContactFilter(colour="red")  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="processing_status"):
        ContactFilter(processing_status="Done")  # type: ignore[arg-type]


async def test_curation_filter_needs_a_table_that_has_it(store: Store) -> None:
    with pytest.raises(InvalidRequestError, match="no curation status"):
        await store.queue_where("sandbox", ContactFilter(curation_status="Complete"))


async def test_summary(store: Store, clock: Clock) -> None:
    people = rows(6)
    await store.add_contacts(people + rows(1, email=None))
    ids = [r["id"] for r in people]
    await store.queue("sandbox", ids, now=clock())
    clock.advance(minutes=3)
    claim = await store.claim("sandbox", 2, now=clock())
    await store.record(
        claim,
        [
            Resolution(claim.contacts[0].id, Event.SUCCEED, remote_id="r1"),
            Resolution(
                claim.contacts[1].id,
                Event.RETRY,
                error="boom",
                attempts=1,
                next_attempt_at=clock() + timedelta(minutes=5),
            ),
        ],
        now=clock(),
    )
    summary = await store.summary("sandbox", now=clock())
    assert summary.counts[S.COMPLETE] == 1
    assert summary.counts[S.QUEUED] == 1
    assert summary.counts[S.SELECTED] == 4
    assert summary.counts[S.NEW] == 1
    assert summary.total == 7
    assert (summary.due, summary.retrying) == (4, 1)
    assert summary.oldest_due_seconds == pytest.approx(180)


async def test_claims_never_overlap(store: Store, clock: Clock) -> None:
    people = rows(300)
    await store.add_contacts(people)
    await store.queue("sandbox", [r["id"] for r in people], now=clock())
    claims = await asyncio.gather(*(store.claim("sandbox", 40, now=clock()) for _ in range(10)))
    claimed = [c.id for claim in claims for c in claim.contacts]
    assert len(claimed) == len(set(claimed)) == 300


async def test_claim_takes_only_due_contacts_in_order(store: Store, clock: Clock) -> None:
    first, second = rows(1), rows(1)
    await store.add_contacts(first + second)
    await store.queue("sandbox", [first[0]["id"]], now=clock())
    clock.advance(seconds=1)
    await store.queue("sandbox", [second[0]["id"]], now=clock())
    claim = await store.claim("sandbox", 1, now=clock())
    assert [c.id for c in claim.contacts] == [first[0]["id"]]
    await store.record(
        claim,
        [
            Resolution(
                first[0]["id"],
                Event.RETRY,
                error="x",
                attempts=1,
                next_attempt_at=clock() + timedelta(hours=1),
            )
        ],
        now=clock(),
    )
    assert [c.id for c in (await store.claim("sandbox", 5, now=clock())).contacts] == [
        second[0]["id"]
    ]
    assert (await store.claim("sandbox", 5, now=clock())).contacts == []
    clock.advance(hours=1)
    again = await store.claim("sandbox", 5, now=clock())
    assert [(c.id, c.attempts) for c in again.contacts] == [(first[0]["id"], 1)]


async def test_expired_claims_go_back_without_using_an_attempt(store: Store, clock: Clock) -> None:
    people = rows(3)
    await store.add_contacts(people)
    await store.queue("sandbox", [r["id"] for r in people], now=clock())
    claim = await store.claim("sandbox", 3, now=clock())
    clock.advance(minutes=5)
    assert (
        await store.release_expired("sandbox", now=clock(), older_than=timedelta(minutes=10)) == 0
    )
    clock.advance(minutes=6)
    assert (
        await store.release_expired("sandbox", now=clock(), older_than=timedelta(minutes=10)) == 3
    )
    states = await store.states("sandbox", [r["id"] for r in people])
    assert {(s.sync_status, s.processing_status, s.attempts) for s in states.values()} == {
        (S.QUEUED, P.QUEUED, 0)
    }
    # The dead worker's late results are refused: the claim is no longer its own.
    retaken = await store.claim("sandbox", 3, now=clock())
    result = await store.record(
        claim, [Resolution(people[0]["id"], Event.SUCCEED, remote_id="late")], now=clock()
    )
    assert result.written == 0
    assert (await store.states("sandbox", [people[0]["id"]]))[people[0]["id"]].remote_id is None
    assert len(retaken.contacts) == 3


async def test_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(DatabaseUnavailableError, match="cannot reach the database") as raised:
        await Store.connect("postgresql://crmsync:hunter2@127.0.0.1:1/nowhere")
    assert "hunter2" not in str(raised.value)


async def test_missing_columns_name_the_fix(database_url: str) -> None:
    store = await Store.connect(database_url, layout=Layout.default(["sandbox"]), create=True)
    await store.close()
    with pytest.raises(
        ConfigurationError, match="lacks the columns.*other_sync_status.*crmsync schema"
    ):
        await Store.connect(database_url, layout=Layout.default(["sandbox", "other"]))
    # create=True adds the new CRM's columns without touching existing data.
    store = await Store.connect(
        database_url, layout=Layout.default(["sandbox", "other"]), create=True
    )
    await store.close()


def test_schema_sql_is_valid_postgresql_for_a_fresh_database(postgres_url: str) -> None:
    ddl = schema_sql(Layout.default())
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(ddl)
        columns = {c["name"] for c in sa.inspect(conn).get_columns("contacts")}
    engine.dispose()
    assert {
        "brevo_sync_status",
        "n8n_workflow_id",
        "hubspot_attempts",
        "mautic_next_attempt_at",
    } <= columns


def test_scrapersky_migration_is_additive(postgres_url: str, scrapersky_sql: str) -> None:
    engine = sa.create_engine(postgres_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(scrapersky_sql)
        before = {c["name"]: str(c["type"]) for c in sa.inspect(conn).get_columns("contacts")}
    with engine.connect() as conn:
        conn.exec_driver_sql(scrapersky_migration_sql())
        conn.exec_driver_sql(scrapersky_migration_sql())  # idempotent
        after = {c["name"]: str(c["type"]) for c in sa.inspect(conn).get_columns("contacts")}
    engine.dispose()
    assert all(after[name] == kind for name, kind in before.items()), "no existing column changes"
    assert set(after) - set(before) == {
        f"{crm}_{col}"
        for crm in ("brevo", "hubspot", "mautic", "n8n")
        for col in ("attempts", "next_attempt_at", "claimed_at", "last_attempt_at")
    }


# -- concurrent queueing (PostgreSQL: two transactions at once) -----------------------------------


@pytest.fixture
async def pg_store(postgres_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(
        postgres_url, layout=Layout.default(["sandbox", "other"]), create=True
    )
    yield store
    await store.close()


async def _blocked_on_a_lock(store: Store) -> bool:
    async with store.engine.connect() as conn:
        waiting = await conn.scalar(
            sa.text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return bool(waiting)


def _total(result: QueueResult) -> int:
    return result.queued + result.already_queued + result.skipped + result.not_found


async def test_every_id_is_accounted_for_when_two_transactions_queue_the_same_rows(
    pg_store: Store,
) -> None:
    """The second transaction waits for the first one's rows, then counts them as already queued
    (it used to count them as neither: not queued, and not queued before it looked)."""
    people, no_email = rows(40), rows(5, email="")
    await pg_store.add_contacts(people + no_email)
    ids = [r["id"] for r in people + no_email] + [uuid.uuid4() for _ in range(3)]

    async with pg_store.engine.connect() as first_conn, pg_store.engine.connect() as second_conn:
        await first_conn.begin()
        first = await pg_store.queue("sandbox", ids, connection=first_conn)
        await second_conn.begin()
        second_queueing = asyncio.create_task(
            pg_store.queue("sandbox", ids, connection=second_conn)
        )
        for _ in range(500):  # until the second transaction waits for the first one's locks
            if await _blocked_on_a_lock(pg_store) or second_queueing.done():
                break
            await asyncio.sleep(0.01)
        await first_conn.commit()
        second = await second_queueing
        await second_conn.commit()

    assert (first.queued, first.already_queued, first.skipped, first.not_found) == (40, 0, 5, 3)
    assert (second.queued, second.already_queued, second.skipped, second.not_found) == (0, 40, 5, 3)
    assert _total(first) == _total(second) == len(ids)


async def test_concurrent_queueing_of_overlapping_ids_adds_up(pg_store: Store) -> None:
    people = rows(5_000)
    await pg_store.add_contacts(people)
    ids = [r["id"] for r in people]
    # Overlapping halves in different orders, several transactions at once.
    batches = [ids[:3_000], list(reversed(ids[2_000:])), ids[1_000:4_000], ids[::-1]]

    results = await asyncio.gather(*(pg_store.queue("sandbox", batch) for batch in batches))

    for batch, result in zip(batches, results, strict=True):
        assert _total(result) == len(batch), result
        assert result.skipped == result.not_found == 0
    assert sum(r.queued for r in results) == len(ids), "each contact queued exactly once"
