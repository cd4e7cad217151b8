"""The fake HubSpot answers as HubSpot does: the tests, the demo and the benchmark rely on it."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest

from crmsync_core.adapter import SandboxOptions
from crmsync_core.ratelimit import RateLimit
from crmsync_hubspot import FakeHubspot, make_sandbox
from crmsync_hubspot.fake import BASE_URL

UPSERT = "/crm/v3/objects/contacts/batch/upsert"


class Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def client(fake: FakeHubspot, token: str | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=BASE_URL,
        transport=fake.transport(),
        headers={"Authorization": f"Bearer {token or fake.token}"},
    )


def upsert_body(*emails: str, **properties: str) -> dict[str, Any]:
    return {
        "inputs": [
            {"idProperty": "email", "id": e, "properties": {"email": e, **properties}}
            for e in emails
        ]
    }


async def test_wrong_token_is_401_invalid_authentication(fake: FakeHubspot) -> None:
    async with client(fake, token="pat-wrong") as http:
        response = await http.post(UPSERT, json=upsert_body("a@example.com"))
    assert response.status_code == 401
    assert response.json()["category"] == "INVALID_AUTHENTICATION"
    assert fake.contacts == {}


async def test_upsert_gives_stable_ids_and_new_flags(fake: FakeHubspot) -> None:
    async with client(fake) as http:
        first = await http.post(UPSERT, json=upsert_body("a@example.com", "b@example.com"))
        again = await http.post(UPSERT, json=upsert_body("A@example.com", firstname="Ann"))
    assert first.status_code == 200
    created = {r["properties"]["email"]: r for r in first.json()["results"]}
    assert all(r["new"] for r in created.values())
    [updated] = again.json()["results"]
    assert updated["id"] == created["a@example.com"]["id"]
    assert updated["new"] is False
    assert fake.contact("a@example.com").properties["firstname"] == "Ann"  # type: ignore[union-attr]


async def test_batch_rules(fake: FakeHubspot) -> None:
    async with client(fake) as http:
        duplicate = await http.post(UPSERT, json=upsert_body("a@example.com", "A@example.com"))
        too_many = await http.post(
            UPSERT, json=upsert_body(*(f"u{n}@example.com" for n in range(101)))
        )
        unknown = await http.post(UPSERT, json=upsert_body("a@example.com", nickname="Al"))
    assert duplicate.status_code == 400
    assert "Duplicate IDs" in duplicate.json()["message"]
    assert too_many.status_code == 400
    assert unknown.status_code == 400
    body = unknown.json()
    assert body["category"] == "VALIDATION_ERROR"
    details = json.loads(body["message"].partition(": ")[2])
    assert details[0]["error"] == "PROPERTY_DOESNT_EXIST"
    assert details[0]["name"] == "nickname"
    assert fake.contacts == {}


def traced(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` with each input's e-mail as its ``objectWriteTraceId`` (multi-status mode)."""
    return {"inputs": [{**item, "objectWriteTraceId": item["id"]} for item in body["inputs"]]}


async def test_invalid_input_answers_207_in_multi_status_mode_else_400(fake: FakeHubspot) -> None:
    """HubSpot's "Multi-status errors" documentation: with an ``objectWriteTraceId`` on every input,
    invalid inputs fail alone (207) and each error names its input's trace id in ``context``."""
    emails = ("good@example.com", "bad@rejected.invalid")
    async with client(fake) as http:
        whole = await http.post(UPSERT, json=upsert_body(*emails))
        partial = await http.post(UPSERT, json=traced(upsert_body(*emails)))
        fake.rejection = "batch"
        forced_whole = await http.post(UPSERT, json=traced(upsert_body(*emails)))
        fake.rejection, fake.error_context = "partial", "ids"
        ids_form = await http.post(UPSERT, json=upsert_body(*emails))
    assert whole.status_code == 400 and forced_whole.status_code == 400
    assert "INVALID_EMAIL" in whole.json()["message"]
    assert partial.status_code == 207
    body = partial.json()
    assert body["numErrors"] == 1
    assert body["errors"][0]["context"] == {"objectWriteTraceId": ["bad@rejected.invalid"]}
    assert body["errors"][0]["errors"][0]["code"] == "INVALID_EMAIL"
    assert [r["properties"]["email"] for r in body["results"]] == ["good@example.com"]
    assert ids_form.status_code == 207
    assert ids_form.json()["errors"][0]["context"] == {"ids": ["bad@rejected.invalid"]}


async def test_an_unknown_property_fails_each_input_in_multi_status_mode(fake: FakeHubspot) -> None:
    async with client(fake) as http:
        response = await http.post(UPSERT, json=traced(upsert_body("a@example.com", nickname="Al")))
    assert response.status_code == 207
    error = response.json()["errors"][0]
    assert error["errors"][0] == {
        "message": 'Property "nickname" does not exist',
        "code": "PROPERTY_DOESNT_EXIST",
        "in": "nickname",
    }
    assert "PROPERTY_DOESNT_EXIST" in error["message"]
    assert fake.contacts == {}


async def test_rolling_rate_limit_with_hubspot_headers() -> None:
    clock = Clock(1_000_000.0)
    fake = FakeHubspot(rate_limit=RateLimit(2, 10.0), clock=clock)
    async with client(fake) as http:
        first = await http.post(UPSERT, json=upsert_body("a@example.com"))
        await http.post(UPSERT, json=upsert_body("b@example.com"))
        limited = await http.post(UPSERT, json=upsert_body("c@example.com"))
        clock.now += 10.0
        after = await http.post(UPSERT, json=upsert_body("c@example.com"))
    assert first.headers["X-HubSpot-RateLimit-Max"] == "2"
    assert first.headers["X-HubSpot-RateLimit-Remaining"] == "1"
    assert first.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert limited.status_code == 429
    assert limited.json()["policyName"] == "TEN_SECONDLY_ROLLING"
    assert limited.json()["errorType"] == "RATE_LIMIT"
    assert limited.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    assert after.status_code == 200
    assert fake.rate_limited == 1


async def test_daily_limit_resets_at_midnight_in_the_account_time_zone() -> None:
    zone = ZoneInfo("America/New_York")
    clock = Clock(datetime(2026, 11, 5, 23, 59, tzinfo=zone).timestamp())
    fake = FakeHubspot(daily_limit=2, timezone="America/New_York", clock=clock)
    async with client(fake) as http:
        statuses = [
            (await http.post(UPSERT, json=upsert_body(f"u{n}@example.com"))).status_code
            for n in range(3)
        ]
        limited = await http.post(UPSERT, json=upsert_body("late@example.com"))
        clock.now += 60.0  # 00:00 in New York
        next_day = await http.post(UPSERT, json=upsert_body("late@example.com"))
    assert statuses == [200, 200, 429]
    assert limited.json()["policyName"] == "DAILY"
    assert limited.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
    assert next_day.status_code == 200
    assert next_day.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"


async def test_failure_injection(fake: FakeHubspot) -> None:
    fake.fail_next(502, body="<html>bad gateway</html>")
    fake.fail_next(None)
    async with client(fake) as http:
        assert (await http.post(UPSERT, json=upsert_body("a@example.com"))).status_code == 502
        with pytest.raises(httpx.ReadTimeout):
            await http.post(UPSERT, json=upsert_body("a@example.com"))
        assert (await http.post(UPSERT, json=upsert_body("a@example.com"))).status_code == 200


async def test_failure_rate_is_deterministic_per_seed() -> None:
    async def statuses(seed: int) -> list[int]:
        fake = FakeHubspot(failure_rate=0.3, seed=seed)
        async with client(fake) as http:
            return [
                (await http.post(UPSERT, json=upsert_body("a@example.com"))).status_code
                for _ in range(40)
            ]

    first = await statuses(3)
    assert first == await statuses(3)
    assert {502, 503, 504} & set(first)
    assert 200 in first


async def test_properties_endpoints() -> None:
    fake = FakeHubspot(properties={"email"})
    definition = {
        "name": "scrapersky_page_id",
        "label": "Page",
        "type": "string",
        "fieldType": "text",
        "groupName": "contactinformation",
    }
    async with client(fake) as http:
        missing = await http.get("/crm/v3/properties/contacts/scrapersky_page_id")
        created = await http.post("/crm/v3/properties/contacts", json=definition)
        found = await http.get("/crm/v3/properties/contacts/scrapersky_page_id")
        conflict = await http.post("/crm/v3/properties/contacts", json=definition)
    assert missing.status_code == 404
    assert created.status_code == 201
    assert found.json()["name"] == "scrapersky_page_id"
    assert conflict.status_code == 409
    assert "scrapersky_page_id" in fake.properties


async def test_dated_path_is_served_and_unknown_paths_are_404(fake: FakeHubspot) -> None:
    async with client(fake) as http:
        dated = await http.post(
            "/crm/objects/2026-03/contacts/batch/upsert", json=upsert_body("a@example.com")
        )
        unknown = await http.post("/crm/v4/nothing", json={})
    assert dated.status_code == 200
    assert unknown.status_code == 404


def test_sandbox_follows_the_options_and_has_the_custom_properties() -> None:
    sandbox = make_sandbox(SandboxOptions(failure_rate=0.2, rate_limit=RateLimit(5, 1.0), seed=9))
    fake = sandbox.fake
    assert isinstance(fake, FakeHubspot)
    assert fake.rate_limit == RateLimit(5, 1.0)
    assert (fake.failure_rate, fake.seed) == (0.2, 9)
    assert set(sandbox.settings.custom_properties().values()) <= fake.properties
    assert sandbox.settings.api_key is not None
    assert sandbox.settings.api_key.get_secret_value() == fake.token
