"""The fake n8n answers like n8n's Webhook node: the tests, the demo and the benchmarks rely on it."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from crmsync_core.adapter import SandboxOptions
from crmsync_core.ratelimit import RateLimit
from crmsync_n8n import FakeN8n, make_sandbox

BASE = "https://n8n.example.com"
CONTACT = {"contact_id": "c1", "email": "a@acme.io"}


async def post(
    fake: FakeN8n, path: str = "/webhook/scrapersky-contacts", **kwargs: Any
) -> httpx.Response:
    kwargs.setdefault("json", CONTACT)
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE) as client:
        return await client.post(path, **kwargs)


async def test_on_received_answers_at_once_that_the_workflow_started() -> None:
    fake = FakeN8n()

    response = await post(fake, headers={"Idempotency-Key": "k1"})

    assert response.status_code == 200
    assert response.json() == {"message": "Workflow was started"}
    (received,) = fake.received
    assert received.body == CONTACT
    assert received.idempotency_key == "k1"
    assert fake.contacts == {"c1": CONTACT}


async def test_last_node_answers_with_the_execution_id() -> None:
    fake = FakeN8n(response_mode="lastNode")

    first = await post(fake)
    second = await post(fake)

    assert first.json()["executionId"] == "1"
    assert second.json()["executionId"] == "2"


async def test_last_node_failing_workflow_is_500() -> None:
    response = await post(FakeN8n(response_mode="lastNode", workflow_fails=True))

    assert response.status_code == 500


async def test_arrays_are_split_into_contacts_and_duplicates_counted() -> None:
    fake = FakeN8n()
    other = {"contact_id": "c2", "email": "b@acme.io"}

    await post(fake, json=[CONTACT, other], headers={"Idempotency-Key": "k"})
    await post(fake, json=[CONTACT, other], headers={"Idempotency-Key": "k"})

    assert set(fake.contacts) == {"c1", "c2"}
    assert fake.duplicates == 1


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 403),
        ({"Authorization": "Bearer wrong"}, 403),
        ({"Authorization": "Bearer s3cret"}, 200),
    ],
)
async def test_header_auth(headers: dict[str, str], status: int) -> None:
    fake = FakeN8n.with_bearer("s3cret")

    response = await post(fake, headers=headers)

    assert response.status_code == status
    if status == 403:
        assert response.text == "Authorization data is wrong!"
        assert not fake.received


@pytest.mark.parametrize(
    ("auth", "status", "text"),
    [
        (None, 401, "Authorization is required!"),
        (("me", "wrong"), 403, "Authorization data is wrong!"),
        (("me", "s3cret"), 200, None),
    ],
)
async def test_basic_auth(auth: tuple[str, str] | None, status: int, text: str | None) -> None:
    fake = FakeN8n(auth="basic", user="me", password="s3cret")

    response = await post(fake, auth=auth)

    assert response.status_code == status
    if text:
        assert response.text == text
        assert response.headers["WWW-Authenticate"] == 'Basic realm="Webhook"'


async def test_inactive_workflow_is_not_registered() -> None:
    response = await post(FakeN8n(active=False))

    assert response.status_code == 404
    assert response.json()["message"] == (
        'The requested webhook "POST scrapersky-contacts" is not registered.'
    )
    assert "active" in response.json()["hint"]


async def test_wrong_method_is_404() -> None:
    fake = FakeN8n()
    async with httpx.AsyncClient(transport=fake.transport(), base_url=BASE) as client:
        response = await client.get("/webhook/scrapersky-contacts")

    assert response.status_code == 404
    assert "GET" in response.json()["message"]


async def test_test_url_answers_one_call_after_listen() -> None:
    fake = FakeN8n()
    path = "/webhook-test/scrapersky-contacts"

    before = await post(fake, path)
    fake.listen()
    during = await post(fake, path)
    after = await post(fake, path)

    assert [before.status_code, during.status_code, after.status_code] == [404, 200, 404]
    assert "Execute workflow" in after.json()["hint"]


async def test_payload_larger_than_the_limit_is_413() -> None:
    fake = FakeN8n(max_payload_bytes=20)

    response = await post(fake)

    assert response.status_code == 413
    assert not fake.received


async def test_rate_limit_answers_429_with_retry_after() -> None:
    fake = FakeN8n(rate_limit=RateLimit(2, 60.0))

    statuses = [(await post(fake)).status_code for _ in range(3)]
    refused = await post(fake)

    assert statuses == [200, 200, 429]
    assert 0 < int(refused.headers["Retry-After"]) <= 60


async def test_failure_injection_is_deterministic_for_a_seed() -> None:
    async def run(seed: int) -> list[int]:
        fake = FakeN8n(failure_rate=0.3, seed=seed)
        return [(await post(fake)).status_code for _ in range(40)]

    first, again, other = await run(1), await run(1), await run(2)

    assert first == again
    assert first != other
    assert set(first) == {200, 503}


async def test_sandbox_settings_point_at_the_fake() -> None:
    sandbox = make_sandbox(SandboxOptions(failure_rate=0.5, seed=3))
    fake = sandbox.fake
    assert isinstance(fake, FakeN8n)
    assert (fake.failure_rate, fake.seed) == (0.5, 3)
    assert sandbox.settings.webhook_secret is not None
    secret = sandbox.settings.webhook_secret.get_secret_value()
    assert sandbox.settings.webhook_url is not None
    url = httpx.URL(sandbox.settings.webhook_url.get_secret_value())

    async with httpx.AsyncClient(transport=sandbox.transport) as client:
        statuses = {
            (
                await client.post(url, json=CONTACT, headers={"Authorization": f"Bearer {secret}"})
            ).status_code
            for _ in range(10)
        }

    assert statuses == {200, 503}
