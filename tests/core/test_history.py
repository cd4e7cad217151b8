"""Run history on PostgreSQL and SQLite: runs, attempts, hourly outcomes, retention, history off."""

from __future__ import annotations

import json
import random
from datetime import UTC, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from pydantic import SecretStr

from crmsync_core import Engine, Layout, Registry, Store, Worker
from crmsync_core.adapter import AdapterSpec
from crmsync_core.history import (
    AttemptOutcome,
    HistorySettings,
    HourlyOutcome,
    PayloadCapture,
    PayloadSampler,
)
from crmsync_core.retry import NO_WAIT
from crmsync_core.store import ATTEMPTS_TABLE, RUNS_TABLE
from crmsync_core.testing import SandboxCrm

from .conftest import AdapterPlugin, Clock, make_engine, rows
from .test_sdk import DemoAdapter, DemoSettings


async def queue(store: Store, people: list[dict[str, Any]], clock: Clock) -> list[Any]:
    ids = [r["id"] for r in people]
    await store.add_contacts(people)
    await store.queue("sandbox", ids, now=clock())
    return ids


async def table_names(store: Store) -> set[str]:
    async with store.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))


async def test_a_run_and_each_attempt_are_kept(store: Store, crm: SandboxCrm, clock: Clock) -> None:
    synced = await queue(store, rows(30), clock)
    rejected = await queue(store, rows(2, email="someone@rejected.invalid"), clock)
    skipped = await queue(store, rows(1, email="not-an-email"), clock)
    engine = make_engine(store, crm, clock)
    engine.worker_name = "worker-1"
    report = await engine.run_once("sandbox")
    assert (report.synced, report.failed, report.skipped) == (30, 2, 1)

    (run,) = await store.recent_runs("sandbox")
    assert (run.crm, run.worker, run.claimed, run.synced, run.failed, run.skipped) == (
        "sandbox",
        "worker-1",
        33,
        30,
        2,
        1,
    )
    assert run.started_at == clock() and run.finished_at == clock()
    assert run.stopped_reason is None and run.paused_reason is None
    assert run.contacts_per_second > 0

    (attempt,) = await store.contact_attempts(rejected[0])
    assert (attempt.run_id, attempt.crm, attempt.outcome, attempt.status_code) == (
        run.id,
        "sandbox",
        AttemptOutcome.FAILED,
        400,
    )
    assert attempt.reason == "sandbox: the CRM rejected this address"
    assert attempt.request is None and attempt.response is None, "payloads are off by default"
    assert attempt.contact_id == str(rejected[0])
    (ok,) = await store.contact_attempts(str(synced[0]))
    assert (ok.outcome, ok.status_code, ok.reason) == (AttemptOutcome.SYNCED, 200, None)
    (skip,) = await store.contact_attempts(skipped[0])
    assert skip.outcome is AttemptOutcome.SKIPPED
    assert skip.reason == "invalid e-mail address 'not-an-email'"

    attempts = await store.run_attempts(run.id)
    assert len(attempts) == 33
    hour = clock().replace(minute=0, second=0, microsecond=0)
    assert await store.hourly_outcomes("sandbox", clock() - timedelta(hours=24)) == [
        HourlyOutcome(hour, 30, 2)
    ]
    assert await store.hourly_outcomes("other", clock() - timedelta(hours=24)) == []
    assert await store.hourly_outcomes(None, clock() + timedelta(hours=1)) == []


async def test_a_contact_s_attempts_across_runs_and_crms(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    crm.failure_rate = 1.0
    (contact_id,) = await queue(store, rows(1), clock)
    engine = make_engine(store, crm, clock, sync_retry_delay_minutes=5)
    await engine.run_once("sandbox")
    clock.advance(minutes=10)
    crm.failure_rate = 0.0
    await engine.run_once("sandbox")
    await store.queue("other", [contact_id], now=clock())
    clock.advance(minutes=1)
    await engine.run_once("other")

    attempts = await store.contact_attempts(contact_id)
    assert [(a.crm, a.outcome, a.status_code) for a in attempts] == [
        ("other", AttemptOutcome.SYNCED, 200),
        ("sandbox", AttemptOutcome.SYNCED, 200),
        ("sandbox", AttemptOutcome.RETRYING, 503),
    ], "newest first, across CRMs"
    assert attempts[2].reason == "sandbox: HTTP 503 (injected failure)"
    runs = await store.recent_runs()
    assert [r.crm for r in runs] == ["other", "sandbox", "sandbox"]
    assert [r.crm for r in await store.recent_runs(limit=1)] == ["other"]
    assert [r.retrying for r in await store.recent_runs("sandbox")] == [0, 1]


async def test_each_batch_s_run_time_and_claim_reach_the_database(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    """The outcome statements are built once and executed with each batch's values (PostgreSQL): a
    later run's attempts carry its own run id and time, its contacts its own touch and retry times."""
    crm.failure_rate = 1.0
    first = await queue(store, rows(3), clock)
    engine = make_engine(store, crm, clock, sync_retry_delay_minutes=5)
    await engine.run_once("sandbox")
    built = dict(store._crm("sandbox").statements)
    clock.advance(minutes=7)
    crm.failure_rate = 0.0
    second = await queue(store, rows(2), clock)
    await engine.run_once("sandbox")
    clock.advance(minutes=7)
    crm.failure_rate = 1.0
    third = await queue(store, rows(2), clock)
    await engine.run_once("sandbox")

    statements = store._crm("sandbox").statements
    if store.dialect == "postgresql":
        assert built, "built on the first batch"
        assert all(statements[key] is statement for key, statement in built.items()), "reused"
    else:
        assert not statements, "SQLite's VALUES list is built per batch"
    newest, middle, oldest = await store.recent_runs("sandbox")
    start = clock() - timedelta(minutes=14)
    for ids, run, at, outcome in (
        (third, newest, start + timedelta(minutes=14), AttemptOutcome.RETRYING),
        (second, middle, start + timedelta(minutes=7), AttemptOutcome.SYNCED),
    ):
        for contact_id in ids:
            (attempt,) = await store.contact_attempts(contact_id)
            assert (attempt.run_id, attempt.at, attempt.outcome) == (run.id, at, outcome)
    for contact_id in first:
        retried, failed = await store.contact_attempts(contact_id)
        assert (retried.run_id, retried.at, retried.outcome) == (
            middle.id,
            start + timedelta(minutes=7),
            AttemptOutcome.SYNCED,
        )
        assert (failed.run_id, failed.at) == (oldest.id, start)
    table = store.table
    async with store.engine.connect() as conn:
        found = {
            row[0]: row[1:]
            for row in await conn.execute(
                sa.select(table.c.id, table.c.updated_at, table.c.sandbox_next_attempt_at)
            )
        }
    for contact_id in third:
        updated, next_attempt = found[contact_id]
        assert _aware(updated) == clock()
        assert _aware(next_attempt) == clock() + timedelta(minutes=5)


def _aware(moment: Any) -> Any:
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


async def test_a_stopped_run_keeps_its_reason(store: Store, crm: SandboxCrm, clock: Clock) -> None:
    await queue(store, rows(3), clock)
    engine = make_engine(store, crm, clock, api_key="wrong")
    report = await engine.run_once("sandbox")
    assert report.stopped
    (run,) = await store.recent_runs()
    assert run.stopped_reason == report.stopped
    assert "SANDBOX_API_KEY" in (run.stopped_reason or "")
    assert run.synced == 0 and run.finished_at is not None


async def test_history_off_writes_nothing(store: Store, crm: SandboxCrm, clock: Clock) -> None:
    store.history_settings = HistorySettings(history=False)
    ids = await queue(store, rows(5), clock)
    report = await make_engine(store, crm, clock).run_once("sandbox")
    assert report.synced == 5
    assert not {RUNS_TABLE, ATTEMPTS_TABLE} & await table_names(store)
    assert await store.recent_runs() == []
    assert await store.contact_attempts(ids[0]) == []
    assert await store.prune_history(now=clock()) == 0


async def test_reading_never_creates_the_tables(store: Store, clock: Clock) -> None:
    assert await store.recent_runs() == []
    assert await store.run_attempts(1) == []
    assert await store.hourly_outcomes(None, clock()) == []
    assert not {RUNS_TABLE, ATTEMPTS_TABLE} & await table_names(store)


async def test_retention_prunes_old_runs_and_attempts(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    store.history_settings = HistorySettings(history_retention_days=7)
    old = await queue(store, rows(4), clock)
    engine = make_engine(store, crm, clock)
    await engine.run_once("sandbox")
    clock.advance(days=6)
    new = await queue(store, rows(3), clock)
    await engine.run_once("sandbox")

    clock.advance(days=2)  # the first run is now 8 days old, the second 2
    assert await store.prune_history(now=clock()) == 4
    assert [r.synced for r in await store.recent_runs()] == [3]
    assert await store.contact_attempts(old[0]) == []
    assert len(await store.contact_attempts(new[0])) == 1


async def test_the_worker_prunes_at_start(store: Store, crm: SandboxCrm, clock: Clock) -> None:
    store.history_settings = HistorySettings(history_retention_days=1)
    await queue(store, rows(2), clock)
    engine = make_engine(store, crm, clock)
    await engine.run_once("sandbox")
    clock.advance(days=3)
    worker = Worker(engine, ["sandbox"], interval=3600, on_report=lambda report: worker.stop())
    await worker.run(handle_signals=False)
    runs = await store.recent_runs()
    assert [r.started_at for r in runs] == [clock()], "the 3-day-old run was pruned"


def demo_engine(store: Store, clock: Clock, handler: Any) -> Engine:
    spec = AdapterSpec(
        name="demo",
        settings_model=DemoSettings,
        factory=DemoAdapter,
        max_batch_size=3,
        rate_limit=None,
        partial_success=True,
    )
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[AdapterPlugin(spec)]),
        settings={"demo": DemoSettings(api_key=SecretStr("demo-secret-key"))},
        transports={"demo": httpx.MockTransport(handler)},
        request_retry=NO_WAIT,
        clock=clock,
    )


def answer_with_the_key(request: httpx.Request) -> httpx.Response:
    """Accepts everyone but bad@, and (as a careless CRM might) echoes the API key it was sent."""
    items = json.loads(request.content)
    results = [
        {"email": i["email"], "error": "invalid"}
        if i["email"].startswith("bad@")
        else {"email": i["email"], "id": 7}
        for i in items
    ]
    echo = request.headers.get("api-key", "demo-secret-key")
    return httpx.Response(200, json={"echo": echo, "results": results})


async def test_payload_capture_keeps_redacted_capped_exchanges(
    database_url: str, clock: Clock
) -> None:
    store = await Store.connect(database_url, layout=Layout.default(["demo"]), create=True)
    try:
        store.history_settings = HistorySettings(
            history_payloads=PayloadCapture.ALL, history_payload_max_bytes=120
        )
        people = rows(2) + rows(1, email="bad@example.com")
        await store.add_contacts(people)
        await store.queue("demo", [p["id"] for p in people], now=clock())
        report = await demo_engine(store, clock, answer_with_the_key).run_once("demo")
        assert (report.synced, report.failed) == (2, 1)

        (failed,) = await store.contact_attempts(people[2]["id"])
        assert (failed.outcome, failed.status_code) == (AttemptOutcome.FAILED, 200)
        assert failed.request is not None and failed.response is not None
        assert '"bad@example.com"' in failed.request
        assert "demo-secret-key" not in failed.response, "credentials are redacted"
        assert "***" in failed.response
        assert len(failed.response) <= 120 and failed.response.endswith("…")
        (synced,) = await store.contact_attempts(people[0]["id"])
        assert synced.request == failed.request, "one request, kept for each of its contacts"
    finally:
        await store.close()


async def test_payloads_are_off_by_default(database_url: str, clock: Clock) -> None:
    store = await Store.connect(database_url, layout=Layout.default(["demo"]), create=True)
    try:
        store.history_settings = HistorySettings()
        people = rows(2)
        await store.add_contacts(people)
        await store.queue("demo", [p["id"] for p in people], now=clock())
        await demo_engine(store, clock, answer_with_the_key).run_once("demo")
        (attempt,) = await store.contact_attempts(people[0]["id"])
        assert (attempt.status_code, attempt.request, attempt.response) == (200, None, None)
    finally:
        await store.close()


def test_sampling_keeps_about_the_rate() -> None:
    sampler = PayloadSampler(
        HistorySettings(history_payloads=PayloadCapture.SAMPLE, history_payload_sample_rate=0.25),
        random.Random(7),
    )
    kept = sum(sampler.wanted() for _ in range(4000))
    assert 800 < kept < 1200
    never = PayloadSampler(HistorySettings(), random.Random(7))
    assert not any(never.wanted() for _ in range(100))
