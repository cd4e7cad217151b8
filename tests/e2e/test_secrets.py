"""No secret of any adapter shows in a log record, an exception, a repr or a settings dump.

Library use as a FastAPI host has it: the root logger at DEBUG (``logging.basicConfig(level=DEBUG)``),
so httpx's INFO line of every request and httpcore's DEBUG trace are kept. Each adapter syncs through
the engine over real HTTP (httpx, httpcore, a loopback socket) into its own fake, once successfully and
then against a CRM that fails in three ways: a 500 and a 401 whose bodies echo the request back (URL,
headers and body, as a debugging proxy might), and a dropped connection.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from crmsync_brevo import BrevoSettings, FakeBrevo
from crmsync_brevo.fake import SANDBOX_LIST_ID
from crmsync_core import Engine, Layout, Registry, RequestRetry, RunReport, Store, SyncSettings
from crmsync_core.testing.server import serve_handler
from crmsync_hubspot import FakeHubspot, HubspotSettings
from crmsync_mautic import FakeMautic, MauticSettings
from crmsync_mautic.fake import CLIENT_CREDENTIALS_GRANTS
from crmsync_n8n import FakeN8n, N8nSettings
from crmsync_n8n.fake import SANDBOX_PATH

BREVO_KEY = "xkeysib-brevo-secret-0001-abcdefabcdef"
HUBSPOT_TOKEN = "pat-na1-hubspot-secret-0002-abcdef"
MAUTIC_PASSWORD = "mautic-password-secret-0003"
MAUTIC_CLIENT_SECRET = "mautic-client-secret-0004-abcdef"
N8N_URL_TOKEN = "n8n-url-token-secret-0005"
N8N_BEARER = "n8n-bearer-secret-0006-abcdef"
N8N_HEADER_VALUE = "n8n-header-auth-secret-0007"

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


@dataclass
class Case:
    """One adapter configuration: its settings at ``base`` (the loopback URL), its fake, its secrets."""

    crm: str
    settings: Callable[[str], SyncSettings]
    fake: Handler
    secrets: list[str]


def _hubspot_fake() -> FakeHubspot:
    fake = FakeHubspot(token=HUBSPOT_TOKEN)
    fake.properties |= set(HubspotSettings().custom_properties().values())
    return fake


CASES = {
    "brevo": lambda: Case(
        "brevo",
        lambda base: BrevoSettings(
            api_key=BREVO_KEY, list_id=SANDBOX_LIST_ID, api_base_url=f"{base}/v3"
        ),
        FakeBrevo(api_key=BREVO_KEY).handle,
        [BREVO_KEY],
    ),
    "hubspot": lambda: Case(
        "hubspot",
        lambda base: HubspotSettings(api_key=HUBSPOT_TOKEN, api_base_url=base),
        _hubspot_fake().handle,
        [HUBSPOT_TOKEN],
    ),
    "mautic-oauth": lambda: Case(
        "mautic",
        lambda base: MauticSettings(
            base_url=base, client_id="1_crmsync", client_secret=MAUTIC_CLIENT_SECRET
        ),
        FakeMautic(
            client_id="1_crmsync",
            client_secret=MAUTIC_CLIENT_SECRET,
            grant_types=CLIENT_CREDENTIALS_GRANTS,  # a client an administrator created
        ).handle,
        [MAUTIC_CLIENT_SECRET],
    ),
    "mautic-basic": lambda: Case(
        "mautic",
        lambda base: MauticSettings(base_url=base, username="crmsync", password=MAUTIC_PASSWORD),
        FakeMautic(username="crmsync", password=MAUTIC_PASSWORD).handle,
        [MAUTIC_PASSWORD, base64.b64encode(f"crmsync:{MAUTIC_PASSWORD}".encode()).decode()],
    ),
    "n8n-bearer": lambda: Case(
        "n8n",
        lambda base: N8nSettings(
            webhook_url=f"{base}/webhook/{SANDBOX_PATH}?token={N8N_URL_TOKEN}",
            webhook_secret=N8N_BEARER,
        ),
        FakeN8n.with_bearer(N8N_BEARER).handle,
        [N8N_URL_TOKEN, N8N_BEARER],
    ),
    "n8n-header": lambda: Case(
        "n8n",
        lambda base: N8nSettings(
            webhook_url=f"{base}/webhook/{SANDBOX_PATH}?token={N8N_URL_TOKEN}",
            webhook_auth="header",
            webhook_auth_header="X-N8N-Key",
            webhook_secret=N8N_HEADER_VALUE,
        ),
        FakeN8n(auth="header", header_name="X-N8N-Key", header_value=N8N_HEADER_VALUE).handle,
        [N8N_URL_TOKEN, N8N_HEADER_VALUE],
    ),
}


class Misbehaving:
    """The fake, or a CRM that fails: ``mode`` is ``ok``, ``echo500``, ``echo401`` or ``drop``."""

    def __init__(self, fake: Handler) -> None:
        self.fake = fake
        self.mode = "ok"

    async def __call__(self, request: httpx.Request) -> httpx.Response | None:
        if self.mode == "ok":
            return await self.fake(request)
        if self.mode == "drop":
            return None
        # The parts that carry credentials first: an error quotes only the start of a body.
        plain = {"host", "accept", "accept-encoding", "connection", "user-agent", "content-length"}
        credentials = [v for k, v in request.headers.items() if k.lower() not in plain]
        echo = (
            f"upstream failed on {request.url} with {credentials} and body "
            f"{request.content.decode(errors='replace')}"
        )
        return httpx.Response(500 if self.mode == "echo500" else 401, text=echo)


@contextlib.asynccontextmanager
async def loopback(
    handle: Callable[[httpx.Request], Awaitable[httpx.Response | None]],
) -> AsyncIterator[str]:
    """Serve ``handle`` over HTTP/1.1 on a loopback port; ``None`` drops the connection."""

    async def answer(request: httpx.Request) -> httpx.Response:
        response = await handle(request)
        if response is None:
            raise httpx.RemoteProtocolError("dropped", request=request)  # serve_handler hangs up
        return response

    async with serve_handler(answer) as origin:
        yield origin


def settings_texts(settings: SyncSettings) -> list[str]:
    return [repr(settings), str(settings), repr(settings.model_dump()), settings.model_dump_json()]


@pytest.mark.parametrize("name", list(CASES))
async def test_no_secret_in_any_log_record_exception_repr_or_dump(
    name: str, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    case = CASES[name]()
    caplog.set_level(logging.DEBUG)  # the root logger, as logging.basicConfig(level=DEBUG) sets it
    registry = Registry()
    store = await Store.connect(sqlite_url, Layout.default([registry.get(case.crm)]), create=True)
    crm = Misbehaving(case.fake)
    reports: dict[str, RunReport] = {}
    try:
        people = [
            {"id": uuid.uuid4(), "email": f"person{n}@example.com", "name": f"Person {n}"}
            for n in range(6)
        ]
        await store.add_contacts(people)
        ids = [p["id"] for p in people]
        await store.queue(case.crm, ids)
        async with loopback(crm) as base:
            settings = case.settings(base).model_copy(
                # every contact meets every failure: the circuit breaker (tests/faults) stays out
                update={
                    "sync_retry_delay_minutes": 0.0,
                    "sync_max_retries": 10,
                    "sync_circuit_failures": 0,
                }
            )
            engine = Engine(
                store,
                registry=registry,
                settings={case.crm: settings},
                request_retry=RequestRetry(attempts=2, initial_wait=0, max_wait=0),
            )
            for mode in ("ok", "echo500", "echo401", "drop"):
                crm.mode = mode
                reports[mode] = await engine.run_once(case.crm, limit=len(ids))
                if mode == "ok":
                    # Send them again, unchanged, into the failing CRM: forced, or change
                    # detection completes them without a request.
                    await store.queue(case.crm, ids, force=True)
        states = await store.states(case.crm, ids)
    finally:
        await store.close()

    assert reports["ok"].synced == 6 and reports["ok"].stopped is None, reports["ok"]
    assert reports["echo500"].retrying == 6, reports["echo500"]
    assert reports["echo401"].stopped is not None, reports["echo401"]
    assert reports["drop"].retrying == 6, reports["drop"]
    records = caplog.records
    assert any(r.name == "httpx" and "HTTP Request" in r.getMessage() for r in records)
    assert any(r.name.startswith("httpcore") for r in records), "httpcore's trace was logged"

    texts = [
        caplog.text,  # formatted records, tracebacks included
        *(record.getMessage() for record in records),
        *(repr(report.as_dict()) for report in reports.values()),
        *(str(report.stopped) for report in reports.values()),
        *(repr(state) for state in states.values()),
        *settings_texts(settings),
    ]
    for secret in case.secrets:
        # Half a secret is a leak too (a message cut before it was redacted showed one).
        start = secret[: len(secret) // 2]
        leaks = [text for text in texts if start in text]
        assert not leaks, f"{name}: (part of) a secret shows in {leaks[0][:500]}"
    # The echoed answers did reach the errors (redacted), so the check above had something to see.
    assert "***" in str(reports["echo401"].stopped)


@pytest.mark.parametrize("name", list(CASES))
def test_settings_show_no_secret_and_keep_it_usable(name: str) -> None:
    case = CASES[name]()
    settings = case.settings("https://crm.example")
    for text in settings_texts(settings):
        for secret in case.secrets:
            assert secret not in text, text
    held = [
        value.get_secret_value()
        for value in (getattr(settings, field) for field in type(settings).model_fields)
        if isinstance(value, SecretStr)
    ]
    assert any(case.secrets[0] in value for value in held), "the adapter can still read it"


def test_webhook_url_shows_where_it_points_not_its_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "N8N_WEBHOOK_URL", f"https://n8n.example.com/webhook/contacts?token={N8N_URL_TOKEN}"
    )
    settings = N8nSettings()
    assert settings.webhook_url is not None
    assert repr(settings.webhook_url) == "SecretUrl('https://n8n.example.com/webhook/contacts?***')"
    assert str(settings.webhook_url) == "https://n8n.example.com/webhook/contacts?***"
    assert N8N_URL_TOKEN in settings.webhook_url.get_secret_value()
    assert N8N_URL_TOKEN not in repr(settings) + settings.model_dump_json()


SENTINEL = "Sentinel-value-0008-should-never-show"


@pytest.mark.parametrize(
    ("model", "values"),
    [
        (HubspotSettings, {"account_timezone": SENTINEL}),
        (HubspotSettings, {"upsert_path": SENTINEL}),
        (HubspotSettings, {"api_base_url": f"https://crm:{SENTINEL}@api.hubapi.com"}),
        (BrevoSettings, {"api_base_url": f"https://api.brevo.com/v3?key={SENTINEL}"}),
        (BrevoSettings, {"attribute_firstname": f"{SENTINEL} x"}),
        (BrevoSettings, {"list_id": SENTINEL}),
        (MauticSettings, {"base_url": f"https://me:{SENTINEL}@mautic.example.com"}),
        (MauticSettings, {"field_aliases": f"domain_id={SENTINEL} x"}),
        (MauticSettings, {"field_aliases": f"{SENTINEL}=x"}),
        (MauticSettings, {"field_aliases": SENTINEL}),
        (N8nSettings, {"extra_fields": SENTINEL}),
        (N8nSettings, {"webhook_auth": SENTINEL}),
        (N8nSettings, {"sync_max_retries": SENTINEL}),
    ],
)
def test_validation_errors_never_quote_the_value(
    model: type[SyncSettings], values: dict[str, Any]
) -> None:
    with pytest.raises(ValidationError) as raised:
        model(**values)
    assert SENTINEL not in str(raised.value)
    assert SENTINEL not in repr(raised.value)
