"""The endpoints, through httpx, against the example app on ScraperSky's table (both drivers)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from crmsync_core import ConfigurationError, Engine, Layout, Registry, Store
from crmsync_core.web import MAX_CONTACT_IDS, sync_router

pytestmark = pytest.mark.postgres

TOKEN = "example-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Insert = Callable[..., Any]
Fetch = Callable[..., Any]


@pytest.fixture
async def app(
    scrapersky_url: str, registry: Registry, example: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FastAPI]:
    monkeypatch.setenv("API_TOKEN", TOKEN)
    # These tests look at what the endpoints write: the app's scheduler must not be woken to sync it
    # meanwhile (tests/scrapersky/test_wake.py tests that).
    monkeypatch.setenv("CRMSYNC_WAKE_ON_QUEUE", "off")
    app: FastAPI = example.create_app(scrapersky_url, registry=registry)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sky", headers=AUTH) as c:
        yield c


def errors(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    return detail


async def test_batch_queues_contacts_and_counts_the_rest(
    client: httpx.AsyncClient, db: AsyncEngine, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    await insert(db, ids, email=lambda n: "" if n == 2 else f"p{n}@acme.io")
    unknown = uuid.uuid4()

    first = await client.post(
        "/api/v3/contacts/brevo/sync/batch",
        json={"contact_ids": [str(i) for i in [*ids, unknown]]},
    )
    again = await client.post(
        "/api/v3/contacts/brevo/sync/batch", json={"contact_ids": [str(ids[0])]}
    )

    assert first.status_code == 200
    body = first.json()
    assert {k: body[k] for k in body if k != "message"} == {
        "queued_count": 2,
        "already_queued_count": 0,
        "skipped_count": 1,
        "not_found_count": 1,
    }
    assert "queued 2" in body["message"]
    assert "1 ids match no contact" in body["message"]
    assert again.json()["already_queued_count"] == 1
    rows = await fetch(db, ids)
    assert rows[ids[0]]["brevo_sync_status"] == "Selected"
    assert rows[ids[2]]["brevo_sync_status"] == "Skipped"
    assert rows[ids[0]]["hubspot_sync_status"] == "New"


async def test_an_empty_id_list_is_not_an_error(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v3/contacts/hubspot/sync/batch", json={"contact_ids": []})

    assert response.status_code == 200
    assert response.json()["queued_count"] == 0


async def test_a_malformed_uuid_names_the_offending_item(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v3/contacts/brevo/sync/batch",
        json={"contact_ids": [str(uuid.uuid4()), "not-a-uuid"]},
    )

    (error,) = errors(response)
    assert error["loc"] == ["body", "contact_ids", 1]
    assert "UUID" in error["msg"]


async def test_too_many_ids_point_to_the_filtered_endpoint_limit(
    client: httpx.AsyncClient,
) -> None:
    ids = [str(uuid.UUID(int=n)) for n in range(MAX_CONTACT_IDS + 1)]

    response = await client.post("/api/v3/contacts/brevo/sync/batch", json={"contact_ids": ids})

    (error,) = errors(response)
    assert error["loc"] == ["body", "contact_ids"]
    assert str(MAX_CONTACT_IDS) in error["msg"]


async def test_an_unknown_crm_lists_the_known_ones(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v3/contacts/salesforce/sync/batch", json={"contact_ids": []})

    (error,) = errors(response)
    assert error["loc"] == ["path", "crm"]
    assert "'salesforce'" in error["msg"]
    assert "brevo, hubspot, mautic, n8n" in error["msg"]


async def test_filtered_queues_what_matches(
    client: httpx.AsyncClient, db: AsyncEngine, insert: Insert, fetch: Fetch
) -> None:
    domain = uuid.uuid4()
    gmail = [uuid.uuid4() for _ in range(2)]
    others = [uuid.uuid4() for _ in range(2)]
    await insert(
        db, gmail, email=lambda n: f"Someone{n}@GMAIL.com", has_gmail=True, domain_id=domain
    )
    await insert(db, others, email_type="SERVICE")

    response = await client.post(
        "/api/v3/contacts/mautic/sync/filtered",
        json={
            "domain_id": str(domain),
            "email_contains": "gmail.COM",
            "has_gmail": True,
            "email_type": "CORPORATE",
            "curation_status": "Complete",
            "processing_status": "none",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json()["queued_count"] == 2
    rows = await fetch(db, [*gmail, *others])
    assert {rows[i]["mautic_sync_status"] for i in gmail} == {"Selected"}
    assert {rows[i]["mautic_sync_status"] for i in others} == {"New"}


@pytest.mark.parametrize(
    ("body", "loc", "hint"),
    [
        ({"email_type": "PERSONAL"}, ["body", "email_type"], "'CORPORATE'"),
        ({"curation_status": "Done"}, ["body", "curation_status"], "'Complete'"),
        ({"processing_status": "queued"}, ["body", "processing_status"], "'Queued'"),
        ({"colour": "red"}, ["body", "colour"], "Extra inputs"),
        ({"domain_id": 42}, ["body", "domain_id"], "UUID"),
        ({"name_contains": "a\x00b"}, ["body", "name_contains"], "NUL"),
        ({"email_contains": ""}, ["body", "email_contains"], "at least 1 character"),
    ],
)
async def test_bad_filters_say_what_is_allowed(
    client: httpx.AsyncClient, body: dict[str, Any], loc: list[str], hint: str
) -> None:
    response = await client.post("/api/v3/contacts/brevo/sync/filtered", json=body)

    (error,) = errors(response)
    assert error["loc"] == loc
    assert hint in error["msg"]


async def test_summary_counts_every_status_and_what_is_due(
    app: FastAPI, client: httpx.AsyncClient, db: AsyncEngine, insert: Insert
) -> None:
    ids = [uuid.uuid4() for _ in range(5)]
    await insert(db, ids, email=lambda n: "" if n == 4 else f"p{n}@acme.io")
    await client.post(
        "/api/v3/contacts/n8n/sync/batch", json={"contact_ids": [str(i) for i in ids[:2]]}
    )
    await client.post(
        "/api/v3/contacts/n8n/sync/batch", json={"contact_ids": [str(i) for i in ids[2:]]}
    )
    before = (await client.get("/api/v3/contacts/n8n/status/summary")).json()

    engine: Engine = app.state.crmsync
    await engine.run_once("n8n", limit=2)
    after = (await client.get("/api/v3/contacts/n8n/status/summary")).json()

    assert (before["selected"], before["skipped"], before["due"]) == (4, 1, 4)
    assert before["oldest_due_seconds"] is not None
    assert {k: after[k] for k in after if k != "oldest_due_seconds"} == {
        "crm": "n8n",
        "new": 0,
        "selected": 2,
        "queued": 0,
        "processing": 0,
        "complete": 2,
        "error": 0,
        "skipped": 1,
        "total_contacts": 5,
        "due": 2,
        "retrying": 0,
        "paused_since": None,
        "probe_at": None,
        "out_of_date": None,
        "paused_by_user": None,
    }


async def test_select_and_unselect_for_several_crms(
    client: httpx.AsyncClient, db: AsyncEngine, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4() for _ in range(3)]
    await insert(db, ids)
    body = {"contact_ids": [str(i) for i in ids], "crms": ["brevo", "hubspot", "brevo"]}

    selected = await client.put("/api/v3/contacts/crm/select", json=body)
    unselected = await client.put(
        "/api/v3/contacts/crm/select",
        json={"contact_ids": [str(ids[0])], "crms": ["hubspot"], "action": "unselect"},
    )

    assert selected.status_code == 200, selected.text
    assert selected.json()["crms"] == ["brevo", "hubspot"]
    assert selected.json()["updated_count"] == 6
    assert selected.json()["results"]["brevo"] == {
        "updated_count": 3,
        "unchanged_count": 0,
        "skipped_count": 0,
    }
    assert unselected.json()["updated_count"] == 1
    rows = await fetch(db, ids)
    assert {rows[i]["brevo_sync_status"] for i in ids} == {"Selected"}
    assert rows[ids[0]]["hubspot_sync_status"] == "New"
    assert rows[ids[0]]["hubspot_processing_status"] is None
    assert rows[ids[1]]["hubspot_sync_status"] == "Selected"


async def test_a_contact_being_processed_is_not_unselected(
    client: httpx.AsyncClient, db: AsyncEngine, store: Store, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4()]
    await insert(db, ids)
    await store.queue("brevo", ids)
    await store.claim("brevo", 1, now=datetime.now(UTC))

    response = await client.put(
        "/api/v3/contacts/crm/select",
        json={"contact_ids": [str(ids[0])], "crms": ["brevo"], "action": "unselect"},
    )

    assert response.json()["results"]["brevo"]["unchanged_count"] == 1
    assert (await fetch(db, ids))[ids[0]]["brevo_sync_status"] == "Processing"


async def test_select_refuses_an_unknown_crm_and_changes_nothing(
    client: httpx.AsyncClient, db: AsyncEngine, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4()]
    await insert(db, ids)

    response = await client.put(
        "/api/v3/contacts/crm/select",
        json={"contact_ids": [str(ids[0])], "crms": ["brevo", "pipedrive"]},
    )

    (error,) = errors(response)
    assert error["loc"] == ["body", "crms", 1]
    assert "'pipedrive'" in error["msg"]
    assert (await fetch(db, ids))[ids[0]]["brevo_sync_status"] == "New"


async def test_select_with_nothing_to_do_is_not_an_error(client: httpx.AsyncClient) -> None:
    no_ids = await client.put(
        "/api/v3/contacts/crm/select", json={"contact_ids": [], "crms": ["brevo"]}
    )
    no_crms = await client.put(
        "/api/v3/contacts/crm/select", json={"contact_ids": [str(uuid.uuid4())], "crms": []}
    )

    assert (no_ids.status_code, no_ids.json()["updated_count"]) == (200, 0)
    assert (no_crms.status_code, no_crms.json()["message"]) == (200, "nothing to do: no CRMs")


async def test_the_hosts_auth_guards_every_endpoint(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sky") as anonymous:
        responses = [
            await anonymous.post("/api/v3/contacts/brevo/sync/batch", json={"contact_ids": []}),
            await anonymous.post("/api/v3/contacts/brevo/sync/filtered", json={}),
            await anonymous.get("/api/v3/contacts/brevo/status/summary"),
            await anonymous.put(
                "/api/v3/contacts/crm/select", json={"contact_ids": [], "crms": []}
            ),
        ]

    assert [r.status_code for r in responses] == [401] * 4


# -- the router without the example's wiring ---------------------------------------------------------


def bare_app(router_args: dict[str, Any], database: Any) -> httpx.AsyncClient:
    app = FastAPI()
    app.include_router(sync_router(database, **router_args))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bare")


async def test_a_host_that_only_has_an_engine(
    db: AsyncEngine, registry: Registry, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4()]
    await insert(db, ids)
    args = {"layout": Layout.scrapersky(), "registry": registry, "prefix": "/crm"}

    async with bare_app(args, db) as client:
        response = await client.post("/crm/hubspot/sync/batch", json={"contact_ids": [str(ids[0])]})

    assert response.json()["queued_count"] == 1
    assert (await fetch(db, ids))[ids[0]]["hubspot_sync_status"] == "Selected"


async def test_a_host_connection_dependency_is_used_and_committed(
    db: AsyncEngine, store: Store, registry: Registry, insert: Insert, fetch: Fetch
) -> None:
    ids = [uuid.uuid4()]
    await insert(db, ids)
    seen: list[AsyncConnection] = []

    async def connection() -> AsyncIterator[AsyncConnection]:
        async with db.connect() as conn:
            seen.append(conn)
            yield conn

    args = {"session": connection, "registry": registry, "crms": ["mautic"]}
    async with bare_app(args, store) as client:
        response = await client.post(
            "/api/v3/contacts/mautic/sync/batch", json={"contact_ids": [str(ids[0])]}
        )

    assert response.json()["queued_count"] == 1
    assert len(seen) == 1
    assert (await fetch(db, ids))[ids[0]]["mautic_sync_status"] == "Selected"


async def test_an_unreachable_database_answers_503(registry: Registry) -> None:
    nowhere = create_async_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    args = {"layout": Layout.scrapersky(), "registry": registry}
    try:
        async with bare_app(args, nowhere) as client:
            response = await client.get("/api/v3/contacts/brevo/status/summary")
    finally:
        await nowhere.dispose()

    assert response.status_code == 503
    assert "unavailable" in response.json()["detail"]


def test_a_router_needs_a_crm_to_serve() -> None:
    with pytest.raises(ConfigurationError, match="no CRM to serve"):
        sync_router(
            create_async_engine("postgresql+psycopg://localhost/none"),
            layout=Layout.scrapersky(),
            registry=Registry(load_entry_points=False),
        )
