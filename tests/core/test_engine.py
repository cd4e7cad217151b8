"""The engine through real stores: retries, fatal errors, hooks, limits, concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest

from crmsync_core import (
    Contact,
    Layout,
    Outcome,
    ProcessingStatus,
    RateLimitExhaustedError,
    Store,
    Synced,
    SyncStatus,
    hookimpl,
)
from crmsync_core.adapter import AdapterContext
from crmsync_core.errors import AdapterNotInstalledError, AuthenticationError, ConfigurationError
from crmsync_core.ratelimit import Limiter, RateLimit
from crmsync_core.testing import SandboxCrm, SandboxSettings, sandbox_adapter_spec

from .conftest import Clock, engine_with_adapter, make_engine, rows

S, P = SyncStatus, ProcessingStatus


async def queue(store: Store, people: list[dict[str, Any]], clock: Clock) -> list[Any]:
    ids = [r["id"] for r in people]
    await store.add_contacts(people)
    await store.queue("sandbox", ids, now=clock())
    return ids


async def test_syncs_everything_due_and_stores_remote_ids(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    ids = await queue(store, rows(250) + rows(3, email="not-an-email"), clock)
    report = await make_engine(store, crm, clock).run_once("sandbox")
    assert (report.claimed, report.synced, report.skipped, report.failed) == (253, 250, 3, 0)
    assert report.stale == 0, "every result was written"
    states = await store.states("sandbox", ids)
    complete = [s for s in states.values() if s.sync_status is S.COMPLETE]
    assert len(complete) == 250 and all(s.remote_id for s in complete)
    skipped = [s for s in states.values() if s.sync_status is S.SKIPPED]
    assert {s.error for s in skipped} == {"invalid e-mail address 'not-an-email'"}
    assert max(crm.batch_sizes) <= 100, "batches never exceed the adapter's limit"


async def test_transient_failures_follow_the_retry_policy_then_error(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    crm.failure_rate = 1.0
    (contact_id,) = await queue(store, rows(1), clock)
    engine = make_engine(store, crm, clock, sync_max_retries=3, sync_retry_delay_minutes=5)
    waits = []
    for expected_attempts in (1, 2, 3):
        report = await engine.run_once("sandbox")
        assert report.retrying == 1
        state = (await store.states("sandbox", [contact_id]))[contact_id]
        assert (state.sync_status, state.processing_status, state.attempts) == (
            S.QUEUED,
            P.QUEUED,
            expected_attempts,
        )
        assert state.error == "sandbox: HTTP 503 (injected failure)"
        assert state.next_attempt_at is not None
        waits.append((state.next_attempt_at - clock()).total_seconds() / 60)
        assert (await engine.run_once("sandbox")).claimed == 0, "not due before its time"
        clock.now = state.next_attempt_at
    assert waits == [5, 10, 20]
    report = await engine.run_once("sandbox")
    assert report.failed == 1
    state = (await store.states("sandbox", [contact_id]))[contact_id]
    assert (state.sync_status, state.processing_status, state.attempts) == (S.ERROR, P.ERROR, 4)
    assert "gave up after 4 attempts" in (state.error or "")


async def test_permanent_failure_uses_no_retries(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    (contact_id,) = await queue(store, rows(1, email="x@rejected.invalid"), clock)
    report = await make_engine(store, crm, clock).run_once("sandbox")
    assert report.failed == 1 and report.sample_errors["permanent"] == [
        "sandbox: the CRM rejected this address"
    ]
    state = (await store.states("sandbox", [contact_id]))[contact_id]
    assert (state.sync_status, state.attempts) == (S.ERROR, 1)


async def test_requeueing_resets_the_retry_state(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    (contact_id,) = await queue(store, rows(1, email="x@rejected.invalid"), clock)
    engine = make_engine(store, crm, clock)
    await engine.run_once("sandbox")
    await store.queue("sandbox", [contact_id], now=clock())
    state = (await store.states("sandbox", [contact_id]))[contact_id]
    assert (state.sync_status, state.attempts, state.error) == (S.SELECTED, 0, None)


async def test_bad_credentials_stop_the_run_and_leave_contacts_queued(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    ids = await queue(store, rows(30), clock)
    engine = make_engine(store, crm, clock, api_key="wrong-key")
    report = await engine.run_once("sandbox")
    assert report.stopped is not None and "SANDBOX_API_KEY" in report.stopped
    assert report.released == report.claimed > 0
    assert report.errors_by_kind["fatal"] == 1
    states = await store.states("sandbox", ids)
    # Claimed contacts go back as Queued; any the run never reached stay Selected.
    assert {s.sync_status for s in states.values()} <= {S.QUEUED, S.SELECTED}
    assert {(s.processing_status, s.attempts, s.error) for s in states.values()} == {
        (P.QUEUED, 0, None)
    }


async def test_missing_settings_stop_before_anything_is_claimed(store: Store, clock: Clock) -> None:
    class KeyRequired:
        @staticmethod
        def factory(settings: SandboxSettings, context: AdapterContext) -> Any:
            raise ConfigurationError("SANDBOX_API_KEY is not set: create a key and set it")

    ids = await queue(store, rows(5), clock)
    engine = engine_with_adapter(store, clock, KeyRequired.factory)
    report = await engine.run_once("sandbox")
    assert report.stopped == "SANDBOX_API_KEY is not set: create a key and set it"
    assert report.claimed == 0
    assert {s.sync_status for s in (await store.states("sandbox", ids)).values()} == {S.SELECTED}


async def test_daily_limit_reports_when_to_resume(store: Store, clock: Clock) -> None:
    class Exhausted:
        def __init__(self, settings: SandboxSettings, context: AdapterContext) -> None:
            pass

        async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
            raise RateLimitExhaustedError("daily limit reached", resume_after=3600)

        async def aclose(self) -> None:
            pass

    ids = await queue(store, rows(5), clock)
    engine = engine_with_adapter(store, clock, Exhausted)
    report = await engine.run_once("sandbox")
    assert (report.stopped, report.resume_after) == ("daily limit reached", 3600)
    states = await store.states("sandbox", ids)
    assert {(s.processing_status, s.attempts) for s in states.values()} == {(P.QUEUED, 0)}


async def test_an_adapter_that_breaks_the_protocol_loses_no_contact(
    store: Store, clock: Clock
) -> None:
    class Forgetful:
        def __init__(self, settings: SandboxSettings, context: AdapterContext) -> None:
            pass

        async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
            # Answers for the first contact only, twice, plus a stranger.
            return [
                Synced(contacts[0].id, "1"),
                Synced(contacts[0].id, "2"),
                Synced("stranger", "3"),
            ]

        async def aclose(self) -> None:
            pass

    ids = await queue(store, rows(3), clock)
    engine = engine_with_adapter(store, clock, Forgetful, sync_concurrency=1)
    report = await engine.run_once("sandbox")
    assert (report.synced, report.retrying) == (1, 2)
    states = await store.states("sandbox", ids)
    assert sorted(s.sync_status for s in states.values()) == [S.COMPLETE, S.QUEUED, S.QUEUED]
    assert {s.error for s in states.values() if s.sync_status is S.QUEUED} == {
        "sandbox adapter returned no outcome for this contact"
    }


async def test_lifecycle_hooks(store: Store, crm: SandboxCrm, clock: Clock) -> None:
    seen: dict[str, list[Any]] = {"synced": [], "failed": [], "finished": []}

    class Host:
        @hookimpl
        def contact_synced(self, crm: str, contact: Contact, remote_id: str | None) -> None:
            seen["synced"].append((crm, contact.email, remote_id))

        @hookimpl
        def contact_failed(
            self, crm: str, contact: Contact, reason: str, notification_email: str | None
        ) -> None:
            seen["failed"].append((crm, contact.email, reason, notification_email))

        @hookimpl
        def run_finished(self, crm: str, report: Any) -> None:
            seen["finished"].append((crm, report.synced))

    await queue(store, rows(2) + rows(1, email="no@rejected.invalid"), clock)
    engine = make_engine(store, crm, clock, sync_failure_notification_email="ops@example.com")
    engine.registry.register(Host())
    await engine.run_once("sandbox")
    assert sorted(e for _, e, _ in seen["synced"]) == ["person0@example.com", "person1@example.com"]
    assert seen["failed"] == [
        (
            "sandbox",
            "no@rejected.invalid",
            "sandbox: the CRM rejected this address",
            "ops@example.com",
        )
    ]
    assert seen["finished"] == [("sandbox", 2)]


async def test_a_broken_hook_does_not_stop_the_sync(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    class Broken:
        @hookimpl
        def contact_synced(self, crm: str, contact: Contact, remote_id: str | None) -> None:
            raise RuntimeError("notifier down")

    ids = await queue(store, rows(3), clock)
    engine = make_engine(store, crm, clock)
    engine.registry.register(Broken())
    assert (await engine.run_once("sandbox")).synced == 3
    assert {s.sync_status for s in (await store.states("sandbox", ids)).values()} == {S.COMPLETE}


async def test_limit_and_batch_size(store: Store, crm: SandboxCrm, clock: Clock) -> None:
    await queue(store, rows(50), clock)
    engine = make_engine(store, crm, clock, sync_scheduler_batch_size=7, sync_concurrency=3)
    report = await engine.run_once("sandbox", limit=20)
    assert report.claimed == 20
    assert max(crm.batch_sizes) == 7
    assert (await store.summary("sandbox", now=clock())).due == 30


async def test_unknown_crm_names_the_package_to_install(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    with pytest.raises(AdapterNotInstalledError, match="pip install crmsync-pipedrive"):
        await make_engine(store, crm, clock).run_once("pipedrive")


async def test_crm_without_columns_is_a_clear_error(
    database_url: str, crm: SandboxCrm, clock: Clock
) -> None:
    store = await Store.connect(database_url, layout=Layout.default(["other"]), create=True)
    try:
        with pytest.raises(ConfigurationError, match="no columns for CRM 'sandbox'"):
            await make_engine(store, crm, clock).run_once("sandbox")
    finally:
        await store.close()


async def test_one_crms_failures_leave_another_crms_schedule_alone(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    crm.failure_rate = 1.0
    ids = await queue(store, rows(3), clock)
    await store.queue("other", ids, now=clock())
    engine = make_engine(store, crm, clock)
    await engine.run_once("sandbox")
    report = await engine.run_once("other")
    assert report.synced == 3
    assert {s.attempts for s in (await store.states("sandbox", ids)).values()} == {1}


async def test_rate_limit_is_shared_by_every_batch(
    store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    class FakeTime:
        now = 0.0

        def clock(self) -> float:
            return self.now

        async def sleep(self, seconds: float) -> None:
            self.now += seconds

    time = FakeTime()
    await queue(store, rows(40), clock)
    engine = make_engine(store, crm, clock, sync_scheduler_batch_size=5, sync_concurrency=4)
    engine._limiters["sandbox"] = Limiter(RateLimit(2, 1.0), clock=time.clock, sleep=time.sleep)
    report = await engine.run_once("sandbox")
    assert report.synced == 40
    assert len(crm.batch_sizes) == 8
    # Four lanes, one budget: 8 requests, at most 2 in any second (so at least 3 s), near the limit
    # (the slots' room for a late request and the CRM's delay included: the sandbox does not report
    # its answers), and the whole wait is the limiter's.
    assert 3.0 <= time.now <= 7 * 1.045 / 2 + 0.5
    assert report.rate_limited_seconds == pytest.approx(time.now)


def test_sandbox_spec_name_validation() -> None:
    with pytest.raises(ValueError, match="lower-case"):
        sandbox_adapter_spec(name="Bad Name")


async def test_a_slow_push_keeps_its_claim(database_url: str) -> None:
    """A push longer than the claim timeout renews its claim, so no other worker takes it back."""
    from datetime import UTC, datetime, timedelta

    store = await Store.connect(
        database_url, layout=Layout.default(["sandbox", "other"]), create=True
    )
    try:
        crm = SandboxCrm(latency_seconds=2.5)
        ids = [r["id"] for r in rows(5)]
        await store.add_contacts(
            [{"id": i, "email": f"{n}@example.com"} for n, i in enumerate(ids)]
        )
        await store.queue("sandbox", ids)
        # A claim timeout of 1.2 s: renewed every 0.4 s while the push takes 2.5 s.
        engine = make_engine(store, crm, lambda: datetime.now(UTC), sync_claim_timeout_minutes=0.02)  # type: ignore[arg-type]
        run = asyncio.create_task(engine.run_once("sandbox"))
        await asyncio.sleep(1.8)
        taken_back = await store.release_expired(
            "sandbox", now=datetime.now(UTC), older_than=timedelta(seconds=1.2)
        )
        report = await run
        assert taken_back == 0
        assert (report.synced, report.stale) == (5, 0)
    finally:
        await store.close()


async def test_a_result_that_came_too_late_is_not_written_nor_announced(
    store: Store, clock: Clock
) -> None:
    """If another worker took the contacts back while this one pushed, its results are stale: not
    written, counted, and no hook hears of them (the other worker's run will report them)."""
    announced: list[Any] = []

    class Host:
        @hookimpl
        def contact_synced(self, crm: str, contact: Contact, remote_id: str | None) -> None:
            announced.append(contact.id)

    class TakenOverMidPush:
        def __init__(self, settings: SandboxSettings, context: AdapterContext) -> None:
            pass

        async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
            # Meanwhile, the claim expires and another worker claims the same contacts.
            later = clock() + timedelta(hours=1)
            await store.release_expired("sandbox", now=later, older_than=timedelta(minutes=10))
            await store.claim("sandbox", len(contacts), now=later)
            return [Synced(c.id, "late") for c in contacts]

        async def aclose(self) -> None:
            pass

    ids = await queue(store, rows(4), clock)
    engine = engine_with_adapter(store, clock, TakenOverMidPush, Host(), sync_concurrency=1)
    report = await engine.run_once("sandbox")
    assert report.stale == 4
    assert announced == []
    states = await store.states("sandbox", ids)
    assert {(s.sync_status, s.remote_id) for s in states.values()} == {(S.PROCESSING, None)}


async def test_report_counts_are_exact_when_lanes_release_side_by_side(
    store: Store, clock: Clock
) -> None:
    """Four lanes: the first four batches are accepted, the next four all get the fatal answer
    together and are released at the same time; the report counts every contact of each."""
    lanes = 4
    in_flight = asyncio.Event()
    waiting = 0

    class RefusesMidRun:
        pushes = 0

        def __init__(self, settings: SandboxSettings, context: AdapterContext) -> None:
            pass

        async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
            nonlocal waiting
            RefusesMidRun.pushes += 1
            if RefusesMidRun.pushes <= lanes:
                return [Synced(c.id, f"remote-{c.id}") for c in contacts]
            waiting += 1
            if waiting == lanes:
                in_flight.set()
            await in_flight.wait()  # every lane holds a batch when the answer comes
            raise AuthenticationError("sandbox refused the credentials: set SANDBOX_API_KEY")

        async def aclose(self) -> None:
            pass

    ids = await queue(store, rows(100), clock)
    engine = engine_with_adapter(
        store, clock, RefusesMidRun, sync_concurrency=lanes, sync_scheduler_batch_size=10
    )
    report = await engine.run_once("sandbox")

    assert report.stopped is not None
    assert (report.claimed, report.synced, report.released) == (80, 40, 40)
    states = (await store.states("sandbox", ids)).values()
    assert sum(s.sync_status is S.COMPLETE for s in states) == report.synced
    assert sum(s.processing_status is P.PROCESSING for s in states) == 0
    back = [s for s in states if s.sync_status is S.QUEUED]  # claimed, then handed back
    assert len(back) == report.released
    assert {(s.processing_status, s.attempts) for s in back} == {(P.QUEUED, 0)}
