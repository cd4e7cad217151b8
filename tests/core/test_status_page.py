"""The status page and its actions, through httpx against an app, on a SQLite file and on PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from html import escape
from typing import Annotated

import httpx
import psycopg
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from sqlalchemy.engine import make_url

from crmsync_core import Layout, Store
from crmsync_core.status import SyncStatus
from crmsync_core.testing import SandboxCrm
from crmsync_core.web import sync_router

from .conftest import Clock, make_engine
from .test_changes import delivered, update

PAGE = "/api/v3/contacts/status"
AUTH = {"X-Token": "secret", "X-Admin": "yes"}


def user(x_token: Annotated[str | None, Header()] = None) -> None:
    if x_token != "secret":
        raise HTTPException(401, "not authenticated")


def admin(x_admin: Annotated[str | None, Header()] = None) -> None:
    if x_admin != "yes":
        raise HTTPException(403, "not an admin")


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    app = FastAPI()
    app.include_router(
        sync_router(
            store,
            crms=["sandbox", "other"],
            dependencies=[Depends(user)],
            action_dependencies=[Depends(admin)],
        )
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app", headers=AUTH) as c:
        yield c


async def seeded(store: Store, crm: SandboxCrm, clock: Clock) -> list[uuid.UUID]:
    """Six contacts queued for the sandbox and run once: 3 Complete, 2 Error (rejected), 1 Skipped."""
    ids = [uuid.uuid4() for _ in range(6)]
    emails = ["a@acme.io", "b@acme.io", "c@acme.io", "x@rejected.invalid", "y@rejected.invalid", ""]
    await store.add_contacts(
        {"id": i, "email": e, "name": f"Contact {n}"}
        for n, (i, e) in enumerate(zip(ids, emails, strict=True))
    )
    await store.queue("sandbox", ids, now=clock())
    await make_engine(store, crm, clock).run_once("sandbox")
    return ids


def counts(html: str, crm: str) -> dict[str, int]:
    """The count tiles of one CRM's panel."""
    section = html.split(f'data-crm="{crm}"', 1)[1].split("</section>", 1)[0]
    return {
        label: int(value.replace(",", ""))
        for label, value in re.findall(r'data-count="([^"]+)"><b>([\d,]+)</b>', section)
    }


async def test_the_page_shows_each_crms_counts_and_failure_reasons(
    client: httpx.AsyncClient, store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    await seeded(store, crm, clock)

    response = await client.get(PAGE)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    sandbox = counts(response.text, "sandbox")
    assert sandbox["Complete"] == 3
    assert sandbox["Error"] == 2
    assert sandbox["Skipped"] == 1
    assert sandbox["total"] == 6
    assert sandbox["due now"] == 0
    assert counts(response.text, "other")["New"] == 6
    section = response.text.split('data-crm="sandbox"', 1)[1]
    failure = re.search(r'<tr class="failure"><td class="num">(\d+)</td>', section)
    assert failure is not None
    assert failure.group(1) == "2"
    assert "x@rejected.invalid" in section
    # Self-contained: nothing to fetch, nothing to run.
    assert "<script" not in response.text
    assert "http://" not in response.text.replace('xmlns="http://www.w3.org/2000/svg"', "")


async def test_contact_fields_are_shown_as_text(
    client: httpx.AsyncClient, store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    contact = uuid.uuid4()
    name = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    await store.add_contacts([{"id": contact, "email": "e@rejected.invalid", "name": name}])
    await store.queue("sandbox", [contact], now=clock())
    await make_engine(store, crm, clock).run_once("sandbox")

    page = await client.get(PAGE)
    lookup = await client.get(PAGE, params={"contact": "e@rejected.invalid"})

    for response in (page, lookup):
        assert "<script" not in response.text
        assert "<img" not in response.text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in lookup.text


async def test_the_lookup_finds_a_contact_by_id_or_e_mail(
    client: httpx.AsyncClient, store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    ids = await seeded(store, crm, clock)

    by_email = await client.get(PAGE, params={"contact": "X@Rejected.Invalid"})
    by_id = await client.get(PAGE, params={"contact": str(ids[0])})
    unknown = await client.get(PAGE, params={"contact": "nobody@acme.io"})

    assert f'data-contact="{ids[3]}"' in by_email.text
    row = re.search(r'<tr data-crm="sandbox">.*?</tr>', by_email.text)
    assert row is not None
    assert '<td class="sync-status">Error</td>' in row.group(0)
    assert "rejected" in row.group(0)
    assert f'data-contact="{ids[0]}"' in by_id.text
    assert '<td class="sync-status">Complete</td>' in by_id.text
    assert "No contact has the id or e-mail address" in unknown.text


async def test_retry_queues_the_error_contacts_of_a_reason_again(
    client: httpx.AsyncClient, store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    ids = await seeded(store, crm, clock)
    reason = (await store.failure_reasons("sandbox"))[0].reason
    assert reason is not None

    response = await client.post(f"{PAGE}/sandbox/retry", data={"reason": reason})

    assert response.status_code == 303
    page = await client.get(response.headers["location"])
    assert "sandbox: 2 Error contacts queued again" in page.text
    states = await store.states("sandbox", ids)
    assert [states[i].sync_status for i in ids[3:5]] == [SyncStatus.SELECTED] * 2
    assert states[ids[0]].sync_status is SyncStatus.COMPLETE
    assert counts(page.text, "sandbox")["due now"] == 2


async def test_unselect_takes_a_contact_out_of_the_queue(
    client: httpx.AsyncClient, store: Store
) -> None:
    contact = uuid.uuid4()
    await store.add_contacts([{"id": contact, "email": "q@acme.io", "name": "Q"}])
    await store.queue("sandbox", [contact])

    lookup = await client.get(PAGE, params={"contact": str(contact)})
    response = await client.post(f"{PAGE}/sandbox/unselect", data={"contact_id": str(contact)})

    assert 'name="unselect"' in lookup.text
    assert response.status_code == 303
    assert (await store.states("sandbox", [contact]))[contact].sync_status is SyncStatus.NEW


async def test_a_user_pause_stops_runs_until_resumed_and_the_breaker_never_lifts_it(
    client: httpx.AsyncClient, store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    contact = uuid.uuid4()
    await store.add_contacts([{"id": contact, "email": "p@acme.io", "name": "P"}])
    await store.queue("sandbox", [contact], now=clock())
    engine = make_engine(store, crm, clock)

    paused = await client.post(f"{PAGE}/sandbox/pause", data={"reason": "list migration"})
    report = await engine.run_once("sandbox")
    # What the engine does when a CRM answers a probe, and when it trips the breaker:
    await store.close_circuit("sandbox")
    await store.open_circuit("sandbox", now=clock(), cooldown=1, max_cooldown=2)
    page = await client.get(PAGE)
    still = await store.circuit("sandbox")

    assert paused.status_code == 303
    assert report.stopped is not None
    assert "paused by a user" in report.stopped
    assert "list migration" in report.stopped
    assert (await store.states("sandbox", [contact]))[contact].sync_status is SyncStatus.SELECTED
    assert still is not None
    assert still.paused_by_user == "list migration"
    assert "Paused by a user" in page.text
    assert "list migration" in page.text

    resumed = await client.post(f"{PAGE}/sandbox/resume")
    after = await engine.run_once("sandbox")

    assert resumed.status_code == 303
    assert await store.circuit("sandbox") is None
    assert after.stopped is None
    assert (await store.states("sandbox", [contact]))[contact].sync_status is SyncStatus.COMPLETE


async def test_the_page_needs_the_hosts_auth_and_actions_their_own(
    client: httpx.AsyncClient, store: Store
) -> None:
    anonymous = await client.get(PAGE, headers={"X-Token": "wrong"})
    reader = await client.get(PAGE, headers={"X-Admin": "no"})
    action = await client.post(f"{PAGE}/sandbox/pause", headers={"X-Admin": "no"})
    foreign = await client.post(f"{PAGE}/sandbox/pause", headers={"Origin": "https://evil.example"})
    cross_site = await client.post(
        f"{PAGE}/sandbox/pause",
        headers={"Origin": "http://app", "Sec-Fetch-Site": "cross-site"},
    )
    behind_a_proxy = await client.post(
        f"{PAGE}/sandbox/retry",
        data={"reason": "none such"},
        headers={"Origin": "https://crm.example", "X-Forwarded-Host": "crm.example"},
    )
    no_reason = await client.post(f"{PAGE}/sandbox/retry")

    assert anonymous.status_code == 401
    assert reader.status_code == 200
    assert action.status_code == 403
    assert foreign.status_code == 403
    assert cross_site.status_code == 403
    assert behind_a_proxy.status_code == 303
    assert no_reason.status_code == 422
    assert await store.circuit("sandbox") is None


async def test_the_page_can_be_left_out(store: Store) -> None:
    app = FastAPI()
    app.include_router(sync_router(store, crms=["sandbox"], status_page=False))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        response = await client.get(PAGE)

    assert response.status_code == 404


async def test_a_user_pause_reaches_a_worker_with_its_own_store(
    client: httpx.AsyncClient, store: Store, database_url: str
) -> None:
    worker_store = await Store.connect(database_url, layout=store.layout)
    try:
        before = await worker_store.circuit("sandbox")
        await client.post(f"{PAGE}/sandbox/pause", data={"reason": "audit"})
        during = await worker_store.circuit("sandbox")
        await client.post(f"{PAGE}/sandbox/resume")
        after = await worker_store.circuit("sandbox")
    finally:
        await worker_store.close()

    assert before is None
    assert during is not None
    assert during.paused_by_user == "audit"
    assert after is None


async def test_the_summary_endpoint_says_a_user_paused_the_crm(
    client: httpx.AsyncClient,
) -> None:
    await client.post(f"{PAGE}/sandbox/pause", data={"reason": "rotating the key"})

    summary = (await client.get("/api/v3/contacts/sandbox/status/summary")).json()

    assert summary["paused_by_user"] == "rotating the key"
    assert summary["paused_since"] is not None


async def test_runs_attempts_and_the_chart_come_from_run_history(
    client: httpx.AsyncClient, store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    clock.now = datetime.now(UTC)  # the chart covers the real last 24 hours
    ids = await seeded(store, crm, clock)

    page = await client.get(PAGE)
    lookup = await client.get(PAGE, params={"contact": "x@rejected.invalid"})

    section = page.text.split('data-crm="sandbox"', 1)[1].split("</section>", 1)[0]
    assert 'aria-label="3 synced and 2 failed in the last 24 hours"' in section
    runs = re.findall(
        r'<tr><td>[^<]+</td><td class="num">(\d+)</td><td class="num">(\d+)</td>', section
    )
    assert runs == [("3", "2")]
    assert "No run recorded." in page.text.split('data-crm="other"', 1)[1]
    assert f'data-contact="{ids[3]}"' in lookup.text
    attempts = lookup.text.split("<h3>Attempts</h3>", 1)[1]
    assert "<td>sandbox</td><td>failed</td>" in attempts
    assert "rejected" in attempts


@pytest.mark.parametrize(
    "query",
    ["a%00b%40acme.io", "%ED%A0%80%40acme.io", "x" * 5_000, "%20%20", "12345", "%27+OR+1%3D1+--"],
    ids=["nul", "invalid-utf-8", "long", "blank", "digits", "quote"],
)
async def test_any_lookup_text_is_answered(client: httpx.AsyncClient, query: str) -> None:
    response = await client.get(f"{PAGE}?contact={query}")

    assert response.status_code == 200
    assert "<script" not in response.text


async def test_a_run_stopped_by_a_bad_key_is_shown_with_what_to_fix(
    client: httpx.AsyncClient, store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    contact = uuid.uuid4()
    await store.add_contacts([{"id": contact, "email": "k@acme.io", "name": "K"}])
    await store.queue("sandbox", [contact], now=clock())
    report = await make_engine(store, crm, clock, api_key="wrong-key").run_once("sandbox")

    page = await client.get(PAGE)

    assert report.stopped is not None
    section = page.text.split('data-crm="sandbox"', 1)[1].split("</section>", 1)[0]
    stopped = re.search(r'<p class="stopped">(.*?)</p>', section)
    assert stopped is not None
    assert "The last run stopped" in stopped.group(1)
    assert escape(report.stopped) in stopped.group(1)
    assert "wrong-key" not in page.text


@pytest.mark.postgres
async def test_a_circuit_table_from_before_user_pauses_is_read_and_then_extended(
    postgres_url: str,
) -> None:
    dsn = make_url(postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE crmsync_circuits (crm varchar(64) PRIMARY KEY, opened_at timestamptz NOT "
            "NULL, probe_at timestamptz NOT NULL, cooldown_seconds double precision NOT NULL)"
        )
        conn.execute(
            "INSERT INTO crmsync_circuits VALUES ('sandbox', now(), now() + interval '1 hour', 60)"
        )
    store = await Store.connect(postgres_url, layout=Layout.default(["sandbox"]), create=True)
    try:
        breaker = await store.circuit("sandbox")
        await store.pause("sandbox", reason="maintenance")
        user = await store.circuit("sandbox")
    finally:
        await store.close()

    assert breaker is not None
    assert breaker.paused_by_user is None
    assert user is not None
    assert user.paused_by_user == "maintenance"


async def test_form_text_the_database_cannot_hold_is_cleaned(
    client: httpx.AsyncClient, store: Store
) -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    paused = await client.post(
        f"{PAGE}/sandbox/pause", content="reason=a%00b%ED%A0%80", headers=headers
    )
    retried = await client.post(f"{PAGE}/sandbox/retry", content="reason=x%00y", headers=headers)

    assert paused.status_code == 303
    assert retried.status_code == 303
    state = await store.circuit("sandbox")
    assert state is not None
    assert state.paused_by_user == "ab\ufffd\ufffd\ufffd"


async def test_the_page_shows_how_many_complete_contacts_are_out_of_date(
    client: httpx.AsyncClient, store: Store, crm: SandboxCrm, clock: Clock
) -> None:
    ids = await delivered(store, crm, clock, 3)
    await update(store, ids[0], clock, name="Grace Hopper")

    sandbox = counts((await client.get(PAGE)).text, "sandbox")

    assert sandbox["Complete"] == 3
    assert sandbox["out of date"] == 1
