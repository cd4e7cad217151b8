"""The engine's field preflight against the fake Brevo: an attribute the account lacks is named in one
warning per worker (Brevo would drop it silently), and BREVO_SYNC_REQUIRE_FIELDS=true stops the run."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

import crmsync_brevo.plugin
from crmsync_brevo import BrevoSettings, FakeBrevo
from crmsync_brevo.fake import SANDBOX_BASE_URL
from crmsync_core import Engine, Layout, Store, SyncStatus
from crmsync_core.plugins import Registry
from crmsync_core.retry import NO_WAIT
from crmsync_core.testing import MovableClock, contact_rows

KEY = "xkeysib-preflight-0123456789"
START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    store = await Store.connect(database_url, layout=Layout.default(["brevo"]), create=True)
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def fake() -> FakeBrevo:
    account = FakeBrevo(api_key=KEY)
    del account.attributes["DOMAIN_ID"]
    return account


def make_engine(store: Store, fake: FakeBrevo, clock: MovableClock, **changes: Any) -> Engine:
    settings = BrevoSettings(
        api_key=KEY, api_base_url=SANDBOX_BASE_URL, list_id=None, sync_retry_jitter=0, **changes
    )
    return Engine(
        store,
        registry=Registry(load_entry_points=False, plugins=[crmsync_brevo.plugin]),
        settings={"brevo": settings},
        transports={"brevo": fake.transport()},
        request_retry=NO_WAIT,
        clock=clock,
    )


async def queue(store: Store, count: int, seed: int = 3) -> list[Any]:
    rows = list(contact_rows(count, seed=seed))
    await store.add_contacts(rows)
    ids = [row["id"] for row in rows]
    await store.queue("brevo", ids, now=START)
    return ids


def preflight_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and "lacks mapped field" in r.getMessage()
    ]


async def test_a_missing_attribute_is_named_once_per_worker(
    store: Store, fake: FakeBrevo, caplog: pytest.LogCaptureFixture
) -> None:
    clock = MovableClock(START)
    engine = make_engine(store, fake, clock)
    first = await queue(store, 5)
    with caplog.at_level(logging.WARNING, logger="crmsync"):
        report = await engine.run_once("brevo")
        clock.advance(minutes=10)
        second = await queue(store, 5, seed=4)
        again = await engine.run_once("brevo")

    [warning] = preflight_warnings(caplog)
    assert "brevo: the account lacks mapped field(s) DOMAIN_ID" in warning
    assert "crmsync brevo setup" in warning
    assert "BREVO_SYNC_REQUIRE_FIELDS=true" in warning
    assert KEY not in caplog.text
    # The sync goes on (as before), and the data really is missing in Brevo: hence the warning.
    assert report.synced == 5 and again.synced == 5
    states = await store.states("brevo", first + second)
    assert {s.sync_status for s in states.values()} == {SyncStatus.COMPLETE}
    assert all("DOMAIN_ID" not in c.attributes for c in fake.contacts.values())
    assert len(fake.requests_to("GET", "/contacts/attributes")) == 1


async def test_strict_mode_stops_the_run_naming_the_attribute_and_setup(
    store: Store, fake: FakeBrevo
) -> None:
    ids = await queue(store, 4)
    engine = make_engine(store, fake, MovableClock(START), sync_require_fields=True)
    report = await engine.run_once("brevo")

    assert report.stopped is not None
    assert "DOMAIN_ID" in report.stopped and "crmsync brevo setup" in report.stopped
    assert report.synced == 0 and report.claimed == 0
    assert not fake.requests_to("POST", "/contacts")
    states = await store.states("brevo", ids)
    assert {s.sync_status for s in states.values()} == {SyncStatus.SELECTED}  # untouched

    # Once the attribute exists the same worker syncs, without a restart.
    fake.attributes["DOMAIN_ID"] = "text"
    report = await engine.run_once("brevo")
    assert report.stopped is None and report.synced == 4
    assert all("DOMAIN_ID" in c.attributes for c in fake.contacts.values())
