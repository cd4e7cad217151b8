"""The fake Brevo answers like Brevo: the adapter's tests, the demo and the benchmark rely on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from crmsync_brevo import FakeBrevo, ManualClock
from crmsync_brevo.fake import IMPORT_REPORT_KEYS, REPORT_HOST, SANDBOX_BASE_URL, SANDBOX_LIST_ID
from crmsync_core.ratelimit import RateLimit

KEY = "xkeysib-fake-test-000000000"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakeBrevo:
    return FakeBrevo(api_key=KEY, clock=clock, import_delay_seconds=10.0)


@pytest.fixture
async def brevo(fake: FakeBrevo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=fake.transport(), base_url=SANDBOX_BASE_URL, headers={"api-key": KEY}
    ) as client:
        yield client


async def test_a_wrong_key_is_refused_with_brevos_body(brevo: httpx.AsyncClient) -> None:
    response = await brevo.post(
        "/contacts", json={"email": "a@acme.io"}, headers={"api-key": "nope"}
    )
    assert response.status_code == 401
    assert response.json() == {"code": "unauthorized", "message": "Key not found"}


async def test_contacts_are_created_then_updated_only_when_enabled(
    brevo: httpx.AsyncClient, fake: FakeBrevo
) -> None:
    created = await brevo.post(
        "/contacts", json={"email": "A@acme.io", "attributes": {"FIRSTNAME": "1"}}
    )
    assert created.status_code == 201
    assert created.json() == {"id": fake.contact("a@acme.io").id}  # type: ignore[union-attr]
    refused = await brevo.post("/contacts", json={"email": "a@acme.io"})
    assert refused.status_code == 400
    assert refused.json()["code"] == "duplicate_parameter"
    body = {"email": "a@acme.io", "attributes": {"FIRSTNAME": "2"}, "updateEnabled": True}
    updated = await brevo.post("/contacts", json=body)
    assert (updated.status_code, updated.content) == (204, b"")
    assert fake.contact("a@acme.io").attributes == {"FIRSTNAME": "2"}  # type: ignore[union-attr]


async def test_the_rate_limit_answers_429_with_brevos_headers(clock: ManualClock) -> None:
    fake = FakeBrevo(api_key=KEY, clock=clock, rate_limit=RateLimit(2, 1.0))
    async with httpx.AsyncClient(
        transport=fake.transport(), base_url=SANDBOX_BASE_URL, headers={"api-key": KEY}
    ) as brevo:
        answers = [await brevo.post("/contacts", json={"email": f"{n}@acme.io"}) for n in range(3)]
        assert [a.status_code for a in answers] == [201, 201, 429]
        assert answers[0].headers["x-sib-ratelimit-limit"] == "2"
        assert answers[0].headers["x-sib-ratelimit-remaining"] == "1"
        assert answers[2].headers["x-sib-ratelimit-remaining"] == "0"
        assert float(answers[2].headers["x-sib-ratelimit-reset"]) == pytest.approx(1.0)
        clock.advance(1.0)
        assert (await brevo.post("/contacts", json={"email": "3@acme.io"})).status_code == 201
    assert fake.rate_limited == 1


async def test_the_window_slides_and_every_other_endpoint_has_its_own_hourly_bucket(
    clock: ManualClock,
) -> None:
    # Brevo's general tier: /v3/contacts* 10 per second, every other endpoint (processes included)
    # 100 per hour; here 2 and 2.
    fake = FakeBrevo(
        api_key=KEY, clock=clock, rate_limit=RateLimit(2, 1.0), other_rate_limit=RateLimit(2, 3600)
    )
    async with httpx.AsyncClient(
        transport=fake.transport(), base_url=SANDBOX_BASE_URL, headers={"api-key": KEY}
    ) as brevo:
        assert (await brevo.post("/contacts", json={"email": "a@acme.io"})).status_code == 201
        clock.advance(0.6)
        assert (await brevo.post("/contacts", json={"email": "b@acme.io"})).status_code == 201
        clock.advance(0.6)  # a fixed window would have restarted; the sliding one still holds b
        third = await brevo.post("/contacts", json={"email": "c@acme.io"})
        assert third.status_code == 201
        assert third.headers["x-sib-ratelimit-remaining"] == "0"
        assert float(third.headers["x-sib-ratelimit-reset"]) == pytest.approx(0.4)
        polls = [(await brevo.get("/processes/1")).status_code for _ in range(3)]
        assert polls[2] == 429  # the third poll of the hour, whatever the contacts bucket says
        assert polls[:2] == [404, 404]
    assert len(fake.arrivals["other"]) == 3


async def test_imports_are_processes_that_complete_after_a_delay(
    brevo: httpx.AsyncClient, fake: FakeBrevo, clock: ManualClock
) -> None:
    items = [{"email": "ok@acme.io"}, {"email": "bad@rejected.invalid"}, {"email": "OK@acme.io"}]
    started = await brevo.post(
        "/contacts/import", json={"jsonBody": items, "listIds": [SANDBOX_LIST_ID]}
    )
    assert started.status_code == 202
    process_id = started.json()["processId"]

    async def status() -> dict[str, object]:
        return (await brevo.get(f"/processes/{process_id}")).json()  # type: ignore[no-any-return]

    assert (await status())["status"] == "queued"
    clock.advance(6.0)
    assert (await status())["status"] == "processing"
    assert fake.contacts == {}
    clock.advance(4.0)
    done = await status()
    assert done["status"] == "completed"
    report = done["info"]["import"]  # type: ignore[index]
    assert set(report) == set(IMPORT_REPORT_KEYS)
    assert report["invalid_emails"].startswith(f"https://{REPORT_HOST}/")
    assert report["duplicate_email_id"].startswith(f"https://{REPORT_HOST}/")
    assert report["duplicate_phone_id"] is None
    assert list(fake.contacts) == ["ok@acme.io"]
    async with httpx.AsyncClient(transport=fake.transport()) as files:
        csv_text = (await files.get(report["invalid_emails"])).text
    assert csv_text == "EMAIL\nbad@rejected.invalid\n"


async def test_imports_can_report_counts_as_the_older_spec_says(
    brevo: httpx.AsyncClient, fake: FakeBrevo, clock: ManualClock
) -> None:
    fake.import_report = "counts"
    items = [{"email": "ok@acme.io"}, {"email": "bad@rejected.invalid"}]
    started = await brevo.post(
        "/contacts/import", json={"jsonBody": items, "listIds": [SANDBOX_LIST_ID]}
    )
    clock.advance(60.0)
    done = (await brevo.get(f"/processes/{started.json()['processId']}")).json()
    assert done["info"]["import"]["invalid_emails"] == 1
    assert done["info"]["import"]["duplicate_email_id"] is None


async def test_imports_need_a_known_list(brevo: httpx.AsyncClient) -> None:
    body = {"jsonBody": [{"email": "a@acme.io"}]}
    assert (await brevo.post("/contacts/import", json=body)).status_code == 400
    unknown = await brevo.post("/contacts/import", json={**body, "listIds": [999]})
    assert unknown.json()["code"] == "document_not_found"


async def test_injected_failures_are_deterministic_by_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        fake = FakeBrevo(api_key=KEY, failure_rate=0.5, seed=seed)
        seen = []
        async with httpx.AsyncClient(
            transport=fake.transport(), base_url=SANDBOX_BASE_URL, headers={"api-key": KEY}
        ) as brevo:
            for n in range(20):
                try:
                    response = await brevo.post("/contacts", json={"email": f"{n}@acme.io"})
                    seen.append(response.status_code)
                except httpx.TransportError:
                    seen.append(0)
        return seen

    first = await statuses(3)
    assert first == await statuses(3)
    assert {0, 503} & set(first)
    assert 201 in first


async def test_attributes_the_account_lacks_are_dropped_silently_and_can_be_created(
    brevo: httpx.AsyncClient, fake: FakeBrevo
) -> None:
    body = {"email": "b@acme.io", "attributes": {"FIRSTNAME": "Bo", "SHOE_SIZE": "44"}}
    assert (await brevo.post("/contacts", json=body)).status_code == 201
    assert fake.contact("b@acme.io").attributes == {"FIRSTNAME": "Bo"}  # type: ignore[union-attr]

    listed = (await brevo.get("/contacts/attributes")).json()["attributes"]
    assert {"name": "HAS_GMAIL", "category": "normal", "type": "boolean"} in listed
    assert "SHOE_SIZE" not in {a["name"] for a in listed}

    created = await brevo.post("/contacts/attributes/normal/SHOE_SIZE", json={"type": "float"})
    assert (created.status_code, created.content) == (201, b"")
    twice = await brevo.post("/contacts/attributes/normal/SHOE_SIZE", json={"type": "float"})
    assert twice.status_code == 400
    assert fake.attributes["SHOE_SIZE"] == "float"


async def test_a_list_is_found_by_id_or_is_404(brevo: httpx.AsyncClient) -> None:
    found = await brevo.get("/contacts/lists/2")
    assert found.status_code == 200 and found.json()["id"] == 2
    missing = await brevo.get("/contacts/lists/99")
    assert (missing.status_code, missing.json()["code"]) == (404, "document_not_found")
