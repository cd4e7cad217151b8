"""The fake Mautic answers like Mautic: what the tests, the demo and the benchmarks rely on."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from crmsync_core.adapter import SandboxOptions
from crmsync_core.ratelimit import RateLimit
from crmsync_mautic import FakeMautic, make_sandbox
from crmsync_mautic.fake import CLIENT_CREDENTIALS_GRANTS

BATCH = "/api/contacts/batch/new"


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def client_for() -> AsyncIterator[Any]:
    clients: list[httpx.AsyncClient] = []

    def make(fake: FakeMautic) -> httpx.AsyncClient:
        clients.append(
            httpx.AsyncClient(transport=fake.transport(), base_url="https://mautic.example.com")
        )
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


def basic(fake: FakeMautic, password: str | None = None) -> dict[str, str]:
    pair = f"{fake.username}:{password or fake.password}".encode()
    return {"Authorization": "Basic " + base64.b64encode(pair).decode()}


async def token(client: httpx.AsyncClient, fake: FakeMautic) -> str:
    response = await client.post(
        "/oauth/v2/token",
        data={
            "grant_type": "client_credentials",
            "client_id": fake.client_id,
            "client_secret": fake.client_secret,
        },
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 3600
    return str(body["access_token"])


async def test_tokens_expire_after_their_lifetime(client_for: Any, clock: Clock) -> None:
    fake = FakeMautic(grant_types=CLIENT_CREDENTIALS_GRANTS, clock=clock)
    client = client_for(fake)
    bearer = {"Authorization": f"Bearer {await token(client, fake)}"}
    assert (
        await client.post(BATCH, json=[{"email": "a@acme.io"}], headers=bearer)
    ).status_code == 201
    clock.now += 3600
    expired = await client.post(BATCH, json=[{"email": "a@acme.io"}], headers=bearer)
    assert expired.status_code == 401
    assert expired.json()["errors"][0]["message"] == "The access token provided has expired."


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({}, "invalid_request"),
        (
            {"grant_type": "client_credentials", "client_id": "1_x", "client_secret": "no"},
            "invalid_client",
        ),
        (
            {
                "grant_type": "client_credentials",
                "client_id": "1_fakemauticclient",
                "client_secret": "fake-mautic-client-secret",
            },
            "unauthorized_client",
        ),
    ],
)
async def test_token_endpoint_refuses_like_fosoauthserver(
    client_for: Any, form: dict[str, str], error: str
) -> None:
    """A client with Mautic's default grants (no ``client_credentials``) is ``unauthorized_client``."""
    response = await client_for(FakeMautic()).post("/oauth/v2/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == error


async def test_upsert_by_email_answers_201_then_200_and_keeps_non_blank_fields(
    client_for: Any,
) -> None:
    fake = FakeMautic()
    client = client_for(fake)
    first = await client.post(
        BATCH, json=[{"email": "Ada@acme.io", "phone": "+44 1", "tags": ["a"]}], headers=basic(fake)
    )
    second = await client.post(
        BATCH,
        json=[{"email": "ada@ACME.io", "phone": "", "firstname": "Ada", "tags": ["b"]}],
        headers=basic(fake),
    )
    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["statusCodes"] == [201]
    assert second.json()["statusCodes"] == [200]
    contact_id = first.json()["contacts"][0]["id"]
    assert second.json()["contacts"][0]["id"] == contact_id
    assert fake.contact("ADA@acme.io") == {
        "id": contact_id,
        "email": "ada@ACME.io",
        "phone": "+44 1",
        "firstname": "Ada",
        "tags": ["a", "b"],
    }


async def test_maps_serialise_as_php_does_or_always_as_objects(client_for: Any) -> None:
    payload = [{"email": "a@acme.io"}, {"email": "b@rejected.invalid"}, {"email": "c@acme.io"}]
    php = FakeMautic()
    body = (await client_for(php).post(BATCH, json=payload, headers=basic(php))).json()
    assert body["statusCodes"] == [201, 400, 201]
    assert set(body["contacts"]) == {"0", "2"}
    assert set(body["errors"]) == {"1"}
    assert body["errors"]["1"]["code"] == 400

    objects = FakeMautic(map_style="objects")
    body = (await client_for(objects).post(BATCH, json=payload, headers=basic(objects))).json()
    assert body["statusCodes"] == {"0": 201, "1": 400, "2": 201}


async def test_more_than_the_batch_limit_is_a_500_like_mautic(client_for: Any) -> None:
    fake = FakeMautic(batch_limit=2)
    response = await client_for(fake).post(
        BATCH, json=[{"email": f"{n}@acme.io"} for n in range(3)], headers=basic(fake)
    )
    assert response.status_code == 500
    assert "A max of 2 entities are supported at a time." in response.text
    assert fake.contacts == {}


async def test_api_and_basic_auth_can_be_switched_off(client_for: Any) -> None:
    off = FakeMautic(api_enabled=False)
    response = await client_for(off).post(BATCH, json=[], headers=basic(off))
    assert response.status_code == 403
    assert response.json()["errors"][0]["type"] == "api_disabled"

    no_basic = FakeMautic(basic_auth_enabled=False)
    response = await client_for(no_basic).post(BATCH, json=[], headers=basic(no_basic))
    assert response.status_code == 403
    assert response.json()["errors"][0]["message"].startswith("Basic Auth disabled.")


async def test_wrong_password_and_missing_auth_are_401(client_for: Any) -> None:
    fake = FakeMautic()
    client = client_for(fake)
    assert (await client.post(BATCH, json=[], headers=basic(fake, "nope"))).status_code == 401
    assert (await client.post(BATCH, json=[])).status_code == 401
    assert fake.contacts == {}


async def test_rate_limit_answers_429_with_its_headers_until_the_window_resets(
    client_for: Any, clock: Clock
) -> None:
    fake = FakeMautic(rate_limit=RateLimit(2, 3600), wall_clock=clock)
    client = client_for(fake)
    statuses = [
        (await client.post(BATCH, json=[{"email": "a@acme.io"}], headers=basic(fake))).status_code
        for _ in range(3)
    ]
    assert statuses == [201, 201, 429]
    limited = await client.post(BATCH, json=[], headers=basic(fake))
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Reset"]) == int(clock.now) + 3600
    clock.now += 3600
    assert (await client.post(BATCH, json=[], headers=basic(fake))).status_code == 201


async def test_injected_failures_are_deterministic_from_the_seed(client_for: Any) -> None:
    async def statuses(seed: int) -> list[int]:
        fake = FakeMautic(failure_rate=0.5, seed=seed)
        client = client_for(fake)
        return [
            (await client.post(BATCH, json=[], headers=basic(fake))).status_code for _ in range(20)
        ]

    first = await statuses(3)
    assert first == await statuses(3)
    assert set(first) == {201, 503}


async def test_scripted_failures_and_per_contact_codes(client_for: Any) -> None:
    fake = FakeMautic()
    client = client_for(fake)
    fake.fail_next(502, times=2)
    fake.reject("b@acme.io", 500, "Deadlock found when trying to get lock")
    answers = [
        await client.post(
            BATCH, json=[{"email": "a@acme.io"}, {"email": "b@acme.io"}], headers=basic(fake)
        )
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [502, 502, 201]
    assert answers[2].json()["statusCodes"] == [201, 500]
    assert "Deadlock" in answers[2].json()["errors"]["1"]["message"]


async def test_sandbox_points_settings_at_the_fake_with_oauth() -> None:
    sandbox = make_sandbox(SandboxOptions(failure_rate=0.25, seed=9))
    fake = sandbox.fake
    assert isinstance(fake, FakeMautic)
    assert fake.failure_rate == 0.25
    assert sandbox.settings.client_id == fake.client_id
    assert sandbox.settings.client_secret is not None
    assert sandbox.settings.client_secret.get_secret_value() == fake.client_secret
    assert sandbox.settings.base_url is not None
