"""Change detection with each adapter that declares its payload, found through its entry point, against
its own fake CRM (the requests are counted at the transport), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from crmsync_core import Engine, Layout, Registry, SandboxOptions, Store, SyncStatus
from crmsync_core.changes import payload_fingerprint
from crmsync_core.contacts import Contact
from crmsync_core.retry import RequestRetry

NO_WAIT = RequestRetry(attempts=1, initial_wait=0, max_wait=0, max_rate_limit_wait=30)


class Counting(httpx.AsyncBaseTransport):
    """The fake's transport, counting the requests it serves."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)


@pytest.mark.parametrize("crm", ["brevo", "hubspot", "mautic"])
async def test_an_unchanged_reselection_sends_nothing_and_a_new_name_is_sent(
    crm: str, database_url: str
) -> None:
    registry = Registry()
    spec = registry.get(crm)
    assert spec.payload is not None
    sandbox = spec.make_sandbox(SandboxOptions())
    assert sandbox.transport is not None
    counting = Counting(sandbox.transport)
    store = await Store.connect(database_url, Layout.default([crm]), create=True)
    try:
        engine = Engine(
            store,
            registry=registry,
            settings={crm: sandbox.settings},
            transports={crm: counting},
            request_retry=NO_WAIT,
        )
        rows = [
            {"id": uuid.uuid4(), "email": f"grace{n}@example.com", "name": f"Grace Hopper{n}"}
            for n in range(3)
        ]
        await store.add_contacts(rows)
        ids = [row["id"] for row in rows]
        await store.queue(crm, ids)
        assert (await engine.run_once(crm)).synced == 3
        counting.requests.clear()

        await store.queue(crm, ids)
        report = await engine.run_once(crm)

        assert counting.requests == []
        assert report.unchanged == 3
        states = await store.states(crm, ids)
        assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}
    finally:
        await store.close()


@pytest.mark.parametrize("crm", ["brevo", "hubspot", "mautic"])
def test_the_payload_follows_what_the_crm_receives(crm: str) -> None:
    spec = Registry().get(crm)
    settings: Any = spec.make_sandbox(SandboxOptions()).settings
    base = Contact(id=1, email="ada@example.com", name="Ada Lovelace", context="scraped")

    def fingerprint(**changes: Any) -> str | None:
        values = {f: getattr(base, f) for f in base.__slots__}
        return payload_fingerprint(spec, settings, Contact(**(values | changes)))

    assert fingerprint() is not None
    assert fingerprint() == fingerprint()
    assert fingerprint(name="Ada King") != fingerprint()  # sent to every CRM
    assert fingerprint(context="enriched") == fingerprint()  # sent to none of them
    assert fingerprint(email="not an address") is None  # not sent: never skipped as unchanged
