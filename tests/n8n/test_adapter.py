"""The n8n adapter against a fake Webhook node (and, where n8n cannot misbehave enough, a transport)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from crmsync_core.adapter import AdapterContext
from crmsync_core.contacts import Contact, PermanentFailure, Skipped, Synced, TransientFailure
from crmsync_core.errors import AuthenticationError, ConfigurationError, FatalError
from crmsync_core.retry import RequestRetry
from crmsync_core.testing import MovableClock
from crmsync_n8n import SPEC, FakeN8n, N8nAdapter, N8nSettings, contact_payload
from crmsync_n8n.mapping import format_timestamp

SECRET = "n8n-secret-0123456789"
WEBHOOK_URL = "https://n8n.example.com/webhook/scrapersky-contacts"
MakeAdapter = Callable[..., N8nAdapter]


def contacts(count: int, *, prefix: str = "person") -> list[Contact]:
    return [
        Contact(
            id=uuid.UUID(int=n + 1),
            email=f"{prefix}{n}@acme.io",
            name=f"Person {n}",
            domain_id=uuid.UUID(int=1000),
            page_id=uuid.UUID(int=2000 + n),
        )
        for n in range(count)
    ]


def answer(status: int, **kwargs: Any) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(status, **kwargs))


async def push(adapter: N8nAdapter, batch: list[Contact]) -> dict[object, Any]:
    try:
        outcomes = await adapter.push(batch)
    finally:
        await adapter.aclose()
    assert len(outcomes) == len(batch)
    return {o.contact_id: o for o in outcomes}


# -- what is sent ---------------------------------------------------------------------------------


async def test_one_post_per_contact_with_scraperskys_object(
    make_adapter: MakeAdapter, now: datetime
) -> None:
    fake = FakeN8n.with_bearer(SECRET)
    batch = contacts(3)

    outcomes = await push(make_adapter(fake.transport(), webhook_secret=SECRET), batch)

    assert all(isinstance(o, Synced) for o in outcomes.values())
    assert len(fake.received) == 3
    bodies = sorted((r.body for r in fake.received), key=lambda b: b["contact_id"])
    assert bodies[0] == {
        "contact_id": "00000000-0000-0000-0000-000000000001",
        "email": "person0@acme.io",
        "name": "Person 0",
        "scrapersky_domain_id": "00000000-0000-0000-0000-0000000003e8",
        "scrapersky_page_id": "00000000-0000-0000-0000-0000000007d0",
        "timestamp": "2026-11-22T15:04:05.123456Z",
    }
    for received in fake.received:
        assert received.path == "/webhook/scrapersky-contacts"
        assert received.headers["authorization"] == f"Bearer {SECRET}"
        assert received.headers["content-type"] == "application/json"


async def test_no_secret_sends_no_authorization_header(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n()

    await push(make_adapter(fake.transport()), contacts(1))

    assert "authorization" not in fake.received[0].headers


async def test_idempotency_key_is_the_same_when_the_same_data_is_sent_again(
    make_adapter: MakeAdapter, now: datetime
) -> None:
    fake = FakeN8n()
    batch = contacts(2)

    await push(make_adapter(fake.transport()), batch)
    await push(make_adapter(fake.transport(), clock=lambda: now + timedelta(minutes=5)), batch)
    changed = [Contact(id=batch[0].id, email=batch[0].email, name="Someone Else")]
    await push(make_adapter(fake.transport()), changed)

    keys = [r.idempotency_key for r in fake.received]
    assert all(keys)
    assert len(keys) == 5
    assert fake.duplicates == 2, "the resent contacts carry the keys they had"
    assert len(set(keys)) == 3, "changed data gets a new key"
    assert fake.received[0].body["timestamp"] != fake.received[2].body["timestamp"]


async def test_idempotency_key_is_the_sha256_of_the_object_without_timestamp(
    make_adapter: MakeAdapter,
) -> None:
    fake = FakeN8n()

    await push(make_adapter(fake.transport()), contacts(1))

    received = fake.received[0]
    stable = {k: v for k, v in received.body.items() if k != "timestamp"}
    canonical = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert received.idempotency_key == hashlib.sha256(canonical.encode()).hexdigest()


async def test_invalid_emails_are_skipped_without_a_request(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n()
    bad = [
        Contact(id=uuid.uuid4(), email=None),
        Contact(id=uuid.uuid4(), email="not-an-email"),
    ]

    outcomes = await push(make_adapter(fake.transport()), bad)

    assert all(isinstance(o, Skipped) and o.reason for o in outcomes.values())
    assert fake.requests == 0


async def test_extra_fields_are_added_to_scraperskys_object(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n()
    contact = Contact(id=uuid.uuid4(), email="a@acme.io", name="A B", phone_number="0612345678")

    await push(make_adapter(fake.transport(), extra_fields=("phone_number",)), [contact])

    body = fake.received[0].body
    assert list(body)[-1] == "phone_number"
    assert body["phone_number"] == "0612345678"


class InFlight:
    """A webhook that answers after a few turns of the event loop, counting the requests in flight."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0

    async def answer(self, request: httpx.Request) -> httpx.Response:
        self.now += 1
        self.most = max(self.most, self.now)
        for _ in range(3):
            await asyncio.sleep(0)
        self.now -= 1
        return httpx.Response(200, json={"message": "Workflow was started"})


async def test_requests_in_flight_are_bounded_by_sync_concurrency(
    make_adapter: MakeAdapter,
) -> None:
    webhook = InFlight()
    outcomes = await push(
        make_adapter(httpx.MockTransport(webhook.answer), sync_concurrency=3),
        contacts(SPEC.max_batch_size),
    )

    assert all(isinstance(o, Synced) for o in outcomes.values())
    assert webhook.most == 3


async def test_batches_pushed_side_by_side_share_the_requests_in_flight(
    make_adapter: MakeAdapter,
) -> None:
    # The engine keeps {CRM}_SYNC_CONCURRENCY batches in flight; the setting bounds the CRM's
    # requests in flight in all, not per batch (it was 3 x 3 here).
    webhook = InFlight()
    adapter = make_adapter(httpx.MockTransport(webhook.answer), sync_concurrency=3)
    batches = [contacts(20, prefix=f"batch{b}-") for b in range(3)]
    try:
        pushed = await asyncio.gather(*(adapter.push(batch) for batch in batches))
    finally:
        await adapter.aclose()

    assert [len(outcomes) for outcomes in pushed] == [20, 20, 20]
    assert all(isinstance(o, Synced) for outcomes in pushed for o in outcomes)
    assert webhook.most == 3


async def test_default_timeout_is_30_seconds(make_adapter: MakeAdapter) -> None:
    seen: list[dict[str, float]] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200)

    await push(make_adapter(httpx.MockTransport(record)), contacts(1))
    await push(make_adapter(httpx.MockTransport(record), timeout_seconds=5), contacts(1))

    assert seen[0] == {"connect": 30.0, "read": 30.0, "write": 30.0, "pool": 30.0}
    assert seen[1]["read"] == 5.0


# -- batch mode -----------------------------------------------------------------------------------


async def test_batch_mode_posts_arrays_of_scraperskys_objects(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n()
    batch = contacts(45)

    outcomes = await push(make_adapter(fake.transport(), array_batch_size=20), batch)

    assert all(isinstance(o, Synced) for o in outcomes.values())
    assert sorted(len(r.body) for r in fake.received) == [5, 20, 20]
    assert all(
        tuple(item)[:6] == tuple(fake.received[0].body[0]) for r in fake.received for item in r.body
    )
    assert set(fake.contacts) == {str(c.id) for c in batch}


async def test_payload_too_large_splits_the_array(make_adapter: MakeAdapter, now: datetime) -> None:
    batch = contacts(16)
    one = len(json.dumps(contact_payload(batch[0], sent_at=now)))
    fake = FakeN8n(max_payload_bytes=one * 3)

    outcomes = await push(make_adapter(fake.transport(), array_batch_size=16), batch)

    assert all(isinstance(o, Synced) for o in outcomes.values()), outcomes
    assert set(fake.contacts) == {str(c.id) for c in batch}
    assert max(len(r.body) for r in fake.received) < 16
    assert fake.requests > len(fake.received), "the first, oversized array was refused"


async def test_a_single_contact_too_large_fails_for_good(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n(max_payload_bytes=10)

    outcomes = await push(make_adapter(fake.transport()), contacts(1))

    (outcome,) = outcomes.values()
    assert isinstance(outcome, PermanentFailure)
    assert "413" in outcome.reason
    assert "N8N_PAYLOAD_SIZE_MAX" in outcome.reason


# -- remote id ------------------------------------------------------------------------------------


async def test_remote_id_is_the_execution_id_the_workflow_answers_with(
    make_adapter: MakeAdapter,
) -> None:
    fake = FakeN8n(response_mode="lastNode", last_node="execution_id")

    outcomes = await push(make_adapter(fake.transport(), workflow_id="wf-1"), contacts(3))

    ids = sorted(str(o.remote_id) for o in outcomes.values())
    assert ids == ["1", "2", "3"]


async def test_last_node_mode_alone_gives_no_execution_id(make_adapter: MakeAdapter) -> None:
    """n8n adds no execution id by itself: without a node that answers one, the remote id is
    N8N_WORKFLOW_ID, however the workflow responds."""
    fake = FakeN8n(response_mode="lastNode")

    outcomes = await push(make_adapter(fake.transport(), workflow_id="wf-1"), contacts(3))

    assert [o.remote_id for o in outcomes.values()] == ["wf-1"] * 3


async def test_remote_id_is_the_workflow_id_when_n8n_only_says_started(
    make_adapter: MakeAdapter,
) -> None:
    fake = FakeN8n(response_mode="onReceived")

    with_id = await push(make_adapter(fake.transport(), workflow_id="wf-1"), contacts(1))
    without = await push(make_adapter(fake.transport()), contacts(1))

    assert [o.remote_id for o in with_id.values()] == ["wf-1"]
    assert [o.remote_id for o in without.values()] == [None]


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'[{"executionId": 812}]', "812"),
        (b'{"execution_id": "abc"}', "abc"),
        (b"<html>ok</html>", "wf-1"),
        (b"", "wf-1"),
        (b'{"executionId": true}', "wf-1"),
    ],
)
async def test_remote_id_from_any_2xx_answer(
    make_adapter: MakeAdapter, body: bytes, expected: str
) -> None:
    adapter = make_adapter(answer(202, content=body), workflow_id="wf-1")

    outcomes = await push(adapter, contacts(1))

    assert [o.remote_id for o in outcomes.values()] == [expected]


# -- errors ---------------------------------------------------------------------------------------


async def test_wrong_bearer_secret_is_fatal_and_names_the_setting(
    make_adapter: MakeAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeN8n.with_bearer("the-right-secret")

    with caplog.at_level(logging.DEBUG), pytest.raises(AuthenticationError) as raised:
        await push(make_adapter(fake.transport(), webhook_secret=SECRET), contacts(3))

    message = str(raised.value)
    assert "403" in message
    assert "N8N_WEBHOOK_SECRET" in message
    assert SECRET not in message + caplog.text


async def test_missing_secret_when_the_node_wants_one_says_so(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n.with_bearer(SECRET)

    with pytest.raises(AuthenticationError, match="set N8N_WEBHOOK_SECRET"):
        await push(make_adapter(fake.transport()), contacts(1))


async def test_header_auth_with_a_custom_header_name(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n(auth="header", header_name="X-Scrapersky-Token", header_value=SECRET)
    adapter = make_adapter(
        fake.transport(),
        webhook_auth="header",
        webhook_auth_header="X-Scrapersky-Token",
        webhook_secret=SECRET,
    )

    outcomes = await push(adapter, contacts(2))

    assert all(isinstance(o, Synced) for o in outcomes.values())
    assert "authorization" not in fake.received[0].headers


async def test_basic_auth(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n(auth="basic", user="scrapersky", password=SECRET)
    adapter = make_adapter(
        fake.transport(), webhook_auth="basic", webhook_user="scrapersky", webhook_secret=SECRET
    )

    outcomes = await push(adapter, contacts(2))

    assert all(isinstance(o, Synced) for o in outcomes.values())
    token = base64.b64encode(f"scrapersky:{SECRET}".encode()).decode()
    assert fake.received[0].headers["authorization"] == f"Basic {token}"


@pytest.mark.parametrize(
    ("settings", "status"),
    [
        (
            {"webhook_auth": "basic", "webhook_user": "scrapersky", "webhook_secret": "wrong-pass"},
            403,
        ),
        ({}, 401),
    ],
    ids=["wrong-password", "no-credentials"],
)
async def test_basic_auth_refused_is_fatal(
    make_adapter: MakeAdapter, settings: dict[str, Any], status: int
) -> None:
    fake = FakeN8n(auth="basic", user="scrapersky", password=SECRET)

    with pytest.raises(AuthenticationError) as raised:
        await push(make_adapter(fake.transport(), **settings), contacts(1))

    assert f"HTTP {status}" in str(raised.value)
    assert "wrong-pass" not in str(raised.value)


async def test_inactive_workflow_is_fatal_and_says_to_activate_it(
    make_adapter: MakeAdapter,
) -> None:
    fake = FakeN8n(active=False)

    with pytest.raises(FatalError) as raised:
        await push(make_adapter(fake.transport()), contacts(5))

    message = str(raised.value)
    assert "404" in message
    assert "activate the workflow" in message
    assert "N8N_WEBHOOK_URL" in message
    # n8n's own hint, whole: a snippet of the body used to cut it short
    assert message.endswith(
        "You can activate the workflow using the toggle in the top-right of the editor."
    )


async def test_wrong_path_is_fatal(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n(path="another-path")

    with pytest.raises(FatalError, match="is not registered"):
        await push(make_adapter(fake.transport()), contacts(1))


async def test_fatal_error_stops_the_whole_push_in_batch_mode(make_adapter: MakeAdapter) -> None:
    with pytest.raises(FatalError):
        await push(make_adapter(answer(404), array_batch_size=5), contacts(20))


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_transient(make_adapter: MakeAdapter, status: int) -> None:
    outcomes = await push(make_adapter(answer(status, text="busy")), contacts(2))

    assert all(isinstance(o, TransientFailure) for o in outcomes.values())
    assert all(f"HTTP {status}" in o.reason for o in outcomes.values())


async def test_failing_lastnode_workflow_is_transient(make_adapter: MakeAdapter) -> None:
    fake = FakeN8n(response_mode="lastNode", workflow_fails=True)

    outcomes = await push(make_adapter(fake.transport()), contacts(1))

    assert all(isinstance(o, TransientFailure) for o in outcomes.values())


async def test_connection_errors_are_transient_and_keep_query_tokens_out(
    make_adapter: MakeAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    token = "query-token-abcdef"

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot reach {request.url}", request=request)

    adapter = make_adapter(
        httpx.MockTransport(refuse),
        webhook_url=f"https://n8n.example.com/webhook/contacts?token={token}",
    )
    with caplog.at_level(logging.DEBUG):
        outcomes = await push(adapter, contacts(2))

    assert all(isinstance(o, TransientFailure) for o in outcomes.values())
    assert token not in repr(outcomes) + caplog.text + repr(adapter)


async def test_workflow_rejecting_the_data_is_a_permanent_failure(
    make_adapter: MakeAdapter,
) -> None:
    adapter = make_adapter(answer(422, json={"error": "email domain is blocked"}))

    outcomes = await push(adapter, contacts(2))

    assert all(isinstance(o, PermanentFailure) for o in outcomes.values())
    assert all("email domain is blocked" in o.reason for o in outcomes.values())


async def test_redirect_is_fatal_and_asks_for_the_final_url(make_adapter: MakeAdapter) -> None:
    adapter = make_adapter(
        answer(301, headers={"Location": "https://n8n.example.com/webhook/new?sig=abcd1234"})
    )

    with pytest.raises(FatalError) as raised:
        await push(adapter, contacts(1))

    assert "/webhook/new" in str(raised.value)
    assert "abcd1234" not in str(raised.value)


# -- the test URL ---------------------------------------------------------------------------------


async def test_test_url_gets_one_warning(
    make_adapter: MakeAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    fake = FakeN8n()
    fake.listen()
    url = "https://n8n.example.com/webhook-test/scrapersky-contacts?token=hidden-value"

    with caplog.at_level(logging.WARNING, logger="crmsync"):
        adapter = make_adapter(fake.transport(), webhook_url=url)
        await adapter.push(contacts(1))
        with pytest.raises(FatalError, match="test URL"):
            await adapter.push(contacts(1))
        await adapter.aclose()

    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "/webhook-test/scrapersky-contacts" in warnings[0].getMessage()
    assert "production URL" in warnings[0].getMessage()
    assert "hidden-value" not in caplog.text


async def test_production_url_gets_no_warning(
    make_adapter: MakeAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        await make_adapter(FakeN8n().transport()).aclose()

    assert not caplog.records


# -- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"webhook_url": None}, "N8N_WEBHOOK_URL"),
        ({"webhook_url": "  "}, "N8N_WEBHOOK_URL"),
        ({"webhook_url": "n8n.example.com/webhook/x"}, "N8N_WEBHOOK_URL"),
        ({"webhook_auth": "header", "webhook_secret": SECRET}, "N8N_WEBHOOK_AUTH_HEADER"),
        ({"webhook_auth": "header", "webhook_auth_header": "X-Token"}, "N8N_WEBHOOK_SECRET"),
        ({"webhook_auth": "basic", "webhook_secret": SECRET}, "N8N_WEBHOOK_USER"),
        ({"webhook_auth": "basic", "webhook_user": "me"}, "N8N_WEBHOOK_SECRET"),
    ],
)
def test_missing_settings_name_the_variable(settings: dict[str, Any], names: str) -> None:
    fake = FakeN8n()
    settings.setdefault("webhook_url", "https://n8n.example.com/webhook/x")

    with pytest.raises(ConfigurationError, match=names) as raised:
        SPEC.factory(N8nSettings(**settings), AdapterContext.for_testing(fake.transport()))

    assert SECRET not in str(raised.value)
    assert fake.requests == 0


def test_webhook_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N8N_WEBHOOK_URL", "https://n8n.example.com/webhook/x")
    monkeypatch.setenv("N8N_WEBHOOK_SECRET", SECRET)

    settings = N8nSettings()

    assert settings.webhook_url is not None
    assert settings.webhook_url.get_secret_value() == "https://n8n.example.com/webhook/x"
    assert SECRET not in repr(settings)
    assert settings.timeout_seconds == 30.0
    assert settings.webhook_auth == "bearer"


async def test_timestamp_is_the_utc_time_of_sending_by_default() -> None:
    fake = FakeN8n()
    adapter = N8nAdapter(
        N8nSettings(webhook_url="https://n8n.example.com/webhook/scrapersky-contacts"),
        AdapterContext.for_testing(fake.transport()),
    )

    await push(adapter, contacts(1))

    timestamp = fake.received[0].body["timestamp"]
    assert timestamp.endswith("Z")
    assert datetime.fromisoformat(timestamp).utcoffset() == timedelta(0)


async def test_timestamp_is_taken_when_each_request_is_sent(now: datetime) -> None:
    """Requests wait for a concurrency slot and retries: each carries the time it left, not the
    time its batch started."""
    clock = MovableClock(now)
    fake = FakeN8n()
    left_at: list[str] = []

    async def slow_n8n(request: httpx.Request) -> httpx.Response:
        left_at.append(format_timestamp(clock()))
        clock.advance(seconds=7)  # each request takes 7 s
        if len(left_at) == 1:
            return httpx.Response(503, text="busy")  # the retry is a new send, with a new time
        return await fake.handle(request)

    adapter = N8nAdapter(
        N8nSettings(webhook_url=WEBHOOK_URL, sync_concurrency=1),
        AdapterContext.for_testing(
            httpx.MockTransport(slow_n8n),
            request_retry=RequestRetry(attempts=2, initial_wait=0, max_wait=0),
        ),
        clock=clock,
    )

    outcomes = await push(adapter, contacts(3))

    assert all(isinstance(o, Synced) for o in outcomes.values())
    assert [r.body["timestamp"] for r in fake.received] == left_at[1:]
    assert len(set(left_at)) == 4  # 0 s (503), 7 s (its retry), 14 s, 21 s
    assert len({r.idempotency_key for r in fake.received}) == 3
