"""What the CRM said about a contact is what the table records, whatever happens to the rest of its batch."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import httpx

from crmsync_core import (
    AdapterContext,
    AuthenticationError,
    Contact,
    Engine,
    Outcome,
    Registry,
    Store,
    StoreError,
    Synced,
    SyncStatus,
)
from crmsync_core.adapter import AdapterSpec
from crmsync_core.contacts import TransientFailure
from crmsync_core.errors import TransientError
from crmsync_core.http import CrmClient
from crmsync_core.retry import NO_WAIT
from crmsync_core.status import Event
from crmsync_core.store import Resolution
from crmsync_core.testing import SandboxSettings

from .conftest import AdapterPlugin, Clock, engine_with_adapter, rows

S = SyncStatus


class AnswersThenFails:
    """Sends one request per contact; the CRM accepts the first ``accepted``, then ``error`` is raised."""

    def __init__(self, context: AdapterContext, accepted: int, error: Exception) -> None:
        self.context = context
        self.accepted = accepted
        self.error = error
        self.sent: list[Any] = []

    async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
        for contact in contacts:
            if len(self.sent) >= self.accepted:
                raise self.error
            self.sent.append(contact.id)
            self.context.report(Synced(contact.id, f"remote-{len(self.sent)}"))
        return [Synced(c.id) for c in contacts]

    async def aclose(self) -> None:
        pass


async def queued(store: Store, count: int, clock: Clock) -> list[Any]:
    people = rows(count)
    await store.add_contacts(people)
    await store.queue("sandbox", [p["id"] for p in people], by_system=True, now=clock())
    return [p["id"] for p in people]


async def test_a_fatal_answer_keeps_what_the_crm_accepted(store: Store, clock: Clock) -> None:
    ids = await queued(store, 10, clock)
    adapters: list[AnswersThenFails] = []

    def factory(settings: Any, context: AdapterContext) -> AnswersThenFails:
        adapters.append(AnswersThenFails(context, 3, AuthenticationError("HTTP 401: fix the key")))
        return adapters[-1]

    engine = engine_with_adapter(store, clock, factory, sync_concurrency=1)
    report = await engine.run_once("sandbox")

    assert report.stopped == "HTTP 401: fix the key"
    assert (report.synced, report.released, report.retrying, report.failed) == (3, 7, 0, 0)
    states = await store.states("sandbox", ids)
    complete = {i for i, s in states.items() if s.sync_status is S.COMPLETE}
    assert complete == set(adapters[0].sent), "the accepted contacts are Complete"
    assert {states[i].remote_id for i in complete} == {"remote-1", "remote-2", "remote-3"}
    assert Counter(s.sync_status for s in states.values()) == {S.COMPLETE: 3, S.QUEUED: 7}
    assert {s.attempts for s in states.values()} == {0}, "the refused contacts go back untouched"


async def test_a_database_error_mid_push_is_no_attempt(store: Store, clock: Clock) -> None:
    ids = await queued(store, 10, clock)

    def factory(settings: Any, context: AdapterContext) -> AnswersThenFails:
        return AnswersThenFails(context, 4, StoreError("database error: connection terminated"))

    engine = engine_with_adapter(store, clock, factory, sync_concurrency=1)
    report = await engine.run_once("sandbox")

    assert report.database_errors >= 1
    assert report.stopped is not None and "database" in report.stopped
    states = await store.states("sandbox", ids)
    assert Counter(s.sync_status for s in states.values()) == {S.COMPLETE: 4, S.QUEUED: 6}
    assert {s.attempts for s in states.values()} == {0}
    assert {s.error for s in states.values()} == {None}


async def test_a_redelivered_contact_keeps_its_remote_id(store: Store, clock: Clock) -> None:
    first, fresh = await queued(store, 2, clock)
    claim = await store.claim("sandbox", 10, now=clock())
    await store.record(
        claim,
        [
            Resolution(first, Event.SUCCEED, remote_id="4711"),
            Resolution(fresh, Event.SUCCEED, fallback_id="person1@example.com"),
        ],
        now=clock(),
    )
    # Sent again (after a crash, say): the CRM answers without an id (Brevo's 204).
    await store.queue("sandbox", [first], by_system=True, now=clock())
    again = await store.claim("sandbox", 10, now=clock())
    await store.record(
        again,
        [Resolution(first, Event.SUCCEED, fallback_id="person0@example.com")],
        now=clock(),
    )
    states = await store.states("sandbox", [first, fresh])
    assert states[first].remote_id == "4711", "an answer without an id never replaces one"
    assert states[fresh].remote_id == "person1@example.com", "with none known, the fallback"
    # A real id from the CRM still replaces the old one (the contact was recreated there).
    await store.queue("sandbox", [first], by_system=True, now=clock())
    third = await store.claim("sandbox", 10, now=clock())
    await store.record(third, [Resolution(first, Event.SUCCEED, remote_id="4712")], now=clock())
    assert (await store.states("sandbox", [first]))[first].remote_id == "4712"


class Down(httpx.AsyncBaseTransport):
    """A CRM that refuses connections while ``down``."""

    def __init__(self) -> None:
        self.down = True
        self.requests = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        return httpx.Response(201, json={"id": self.requests})


class OnePerContact:
    def __init__(self, context: AdapterContext) -> None:
        self.client = CrmClient(context, crm="sandbox", base_url="http://crm.test", auth_hint="-")

    async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
        outcomes: list[Outcome] = []
        for contact in contacts:
            try:
                response = await self.client.request("POST", "/contacts", json={"e": contact.email})
                answer: Outcome = Synced(contact.id, str(response.json()["id"]))
            except TransientError as exc:
                answer = TransientFailure(contact.id, exc.message)
            self.client.context.report(answer)
            outcomes.append(answer)
        return outcomes

    async def aclose(self) -> None:
        await self.client.aclose()


async def test_an_outage_pauses_the_crm_without_using_attempts(store: Store, clock: Clock) -> None:
    ids = await queued(store, 10, clock)
    crm = Down()
    spec = AdapterSpec(
        name="sandbox",
        settings_model=SandboxSettings,
        factory=lambda settings, context: OnePerContact(context),
        max_batch_size=5,
        rate_limit=None,
        partial_success=False,
    )
    settings = SandboxSettings(
        sync_concurrency=1, sync_circuit_failures=3, sync_circuit_cooldown_seconds=60
    )
    engine = Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[AdapterPlugin(spec)]),
        settings={"sandbox": settings},
        transports={"sandbox": crm},
        request_retry=NO_WAIT,
        clock=clock,
    )

    first = await engine.run_once("sandbox")
    assert first.paused_since == clock()
    assert first.stopped is not None and "paused" in first.stopped
    assert first.resume_after == 60
    assert crm.requests == 3, "three failures in a row, then nothing more is sent"

    # Within the cool-down, a run sends nothing and says since when.
    clock.advance(seconds=30)
    assert "paused since" in ((await engine.run_once("sandbox")).stopped or "")
    assert crm.requests == 3
    summary = await store.summary("sandbox")
    assert summary.paused_since is not None

    # Past it, one probe; still down: paused again for twice as long.
    clock.advance(seconds=31)
    again = await engine.run_once("sandbox")
    assert crm.requests == 4
    assert again.resume_after == 120

    # The CRM is back: the probe resumes it and the queue drains.
    crm.down = False
    clock.advance(seconds=121)
    last = await engine.run_once("sandbox")
    assert last.stopped is None
    assert last.synced == 10
    states = await store.states("sandbox", ids)
    assert {s.sync_status for s in states.values()} == {S.COMPLETE}
    assert {s.attempts for s in states.values()} == {0}, "the outage used no attempt"
    assert (await store.summary("sandbox")).paused_since is None
