"""The failure digest through Brevo's transactional API, each request checked against Brevo's spec."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from crmsync_core import Contact, RunReport
from crmsync_core.notify import BrevoMailer, FailureNotifier, MailSettings
from crmsync_core.testing import MovableClock, SandboxSettings

from .conftest import spec_violation


def test_the_digest_goes_out_through_post_smtp_email() -> None:
    sent: list[httpx.Request] = []

    def brevo(request: httpx.Request) -> httpx.Response:
        assert spec_violation(request) is None, spec_violation(request)
        sent.append(request)
        return httpx.Response(201, json={"messageId": "<202611221200.1@smtp-relay.mailin.fr>"})

    mailer = BrevoMailer(
        SecretStr("xkeysib-secret"),
        sender="crmsync@example.com",
        transport=httpx.MockTransport(brevo),
    )
    clock = MovableClock(datetime(2026, 11, 22, 12, 0, tzinfo=UTC))
    notifier = FailureNotifier(mailer, clock=clock)
    settings = SandboxSettings(sync_failure_notification_email="ops@example.com; sales@example.com")
    for n in range(5):
        contact = Contact(id=n, email=f"dup{n}@example.com")
        notifier.contact_failed("brevo", contact, "brevo: HTTP 400 duplicate_parameter SMS", "x")
    notifier.run_finished("brevo", RunReport(crm="brevo", started_at=clock(), failed=5), settings)
    notifier.wait()

    (request,) = sent
    assert request.url == "https://api.brevo.com/v3/smtp/email"
    assert request.headers["api-key"] == "xkeysib-secret"
    body = json.loads(request.content)
    assert body["sender"] == {"email": "crmsync@example.com", "name": "crmsync"}
    assert body["to"] == [{"email": "ops@example.com"}, {"email": "sales@example.com"}]
    assert body["subject"] == "[crmsync] brevo: 5 contacts failed for good"
    assert "     5  brevo: HTTP 400 duplicate_parameter SMS" in body["textContent"]
    assert "xkeysib-secret" not in repr(mailer)


def test_brevo_delivery_is_chosen_by_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BREVO_API_KEY", raising=False)
    monkeypatch.delenv("CRMSYNC_MAIL_BREVO_API_KEY", raising=False)
    settings = MailSettings(
        via="brevo", brevo_api_key=SecretStr("xkeysib-k"), sender="a@example.com"
    )
    mailer = settings.mailer()
    assert isinstance(mailer, BrevoMailer)
    assert mailer.base_url == "https://api.brevo.com/v3"
    assert MailSettings(via="brevo").mailer() is None, "no key, no mailer"
    monkeypatch.setenv("BREVO_API_KEY", "xkeysib-from-env")
    assert isinstance(MailSettings(via="brevo").mailer(), BrevoMailer), "the adapter's key will do"
