"""The failure e-mail, delivered to a real SMTP server on loopback (aiosmtpd) by real engine runs."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from email.policy import default as default_policy
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from pydantic import SecretStr

from crmsync_core import (
    AuthenticationError,
    Contact,
    Outcome,
    PermanentFailure,
    ProcessingStatus,
    Registry,
    Store,
    Synced,
    SyncStatus,
)
from crmsync_core.adapter import AdapterContext
from crmsync_core.notify import FailureNotifier, MailSettings, SmtpMailer
from crmsync_core.plugins import FAILURE_EMAIL_PLUGIN
from crmsync_core.testing import SandboxSettings

from .conftest import Clock, engine_with_adapter, rows

RECIPIENTS = "ops@example.com, sales@example.com"


@dataclass
class Mailbox:
    """What the loopback SMTP server received; ``down`` makes it refuse every message (451)."""

    port: int = 0
    messages: list[tuple[Envelope, Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    down: bool = False

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.down:
            return "451 4.3.0 mail server busy, try again later"
        content = envelope.original_content or b""
        self.messages.append((envelope, message_from_bytes(content, policy=default_policy)))
        return "250 OK"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == b"s3cret-pass"
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)

    @property
    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for _, message in self.messages]


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """An aiosmtpd server on 127.0.0.1, an ephemeral port, in a thread of its own."""
    box = Mailbox()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    servers: list[asyncio.Server] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)

        def factory() -> SMTP:
            return SMTP(box, authenticator=box.authenticate, auth_require_tls=False)

        server = loop.run_until_complete(loop.create_server(factory, "127.0.0.1", 0))
        servers.append(server)
        box.port = server.sockets[0].getsockname()[1]
        ready.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield box
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def smtp_settings(box: Mailbox, **overrides: Any) -> MailSettings:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": box.port,
        "security": "none",
        "user": "crmsync",
        "password": SecretStr("s3cret-pass"),
        "sender": "crmsync@example.com",
        "timeout_seconds": 10,
        **overrides,
    }
    return MailSettings(**values)


class Switchboard:
    """An adapter whose answers the test sets: permanent failures by e-mail prefix, or a refused key."""

    key_refused = False

    def __init__(self, settings: SandboxSettings, context: AdapterContext) -> None:
        if Switchboard.key_refused:
            raise AuthenticationError(
                "sandbox refused the API key: set SANDBOX_API_KEY to a valid key"
            )

    async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
        outcomes: list[Outcome] = []
        for contact in contacts:
            email = contact.email or ""
            if email.startswith("bad-phone"):
                outcomes.append(
                    PermanentFailure(contact.id, "sandbox: HTTP 400 invalid phone number")
                )
            elif email.startswith("dup"):
                outcomes.append(PermanentFailure(contact.id, "sandbox: HTTP 400 duplicate SMS"))
            else:
                outcomes.append(Synced(contact.id, remote_id=f"r-{contact.id}"))
        return outcomes

    async def aclose(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _reset_switchboard() -> None:
    Switchboard.key_refused = False


def people(count: int, prefix: str) -> list[dict[str, Any]]:
    return [dict(r, email=f"{prefix}{n}@example.com") for n, r in enumerate(rows(count))]


async def queue(store: Store, contacts: list[dict[str, Any]], clock: Clock) -> list[Any]:
    await store.add_contacts(contacts)
    ids = [c["id"] for c in contacts]
    await store.queue("sandbox", ids, now=clock())
    return ids


def notifier_for(box: Mailbox, clock: Clock, **settings: Any) -> FailureNotifier:
    return FailureNotifier(mail_settings=smtp_settings(box, **settings), clock=clock)


async def delivered(notifier: FailureNotifier) -> None:
    # The mail thread talks to the server's own thread; wait without blocking the test's loop.
    await asyncio.to_thread(notifier.wait)


async def test_many_failures_make_one_digest_grouped_by_reason(
    store: Store, clock: Clock, mailbox: Mailbox
) -> None:
    notifier = notifier_for(mailbox, clock)
    engine = engine_with_adapter(
        store,
        clock,
        Switchboard,
        notifier,
        sync_failure_notification_email=RECIPIENTS,
        sync_scheduler_batch_size=10,
    )
    await queue(store, people(30, "bad-phone") + people(12, "dup") + people(8, "ok"), clock)
    report = await engine.run_once("sandbox")
    assert (report.failed, report.synced) == (42, 8)
    await delivered(notifier)

    assert len(mailbox.messages) == 1, "one digest, not one e-mail per contact"
    envelope, message = mailbox.messages[0]
    assert sorted(envelope.rcpt_tos) == ["ops@example.com", "sales@example.com"]
    assert envelope.mail_from == "crmsync@example.com"
    assert mailbox.logins == ["crmsync"]
    assert message["Subject"] == "[crmsync] sandbox: 42 contacts failed for good"
    assert message["To"] == "ops@example.com, sales@example.com"
    body = message.get_content()
    lines = body.splitlines()
    first = lines.index("By reason:") + 1
    assert lines[first].split() == ["30", "sandbox:", "HTTP", "400", "invalid", "phone", "number"]
    examples = [line.strip() for line in lines[first + 1 : first + 4]]
    assert all(line.startswith("e.g. bad-phone") for line in examples), examples
    assert "    12  sandbox: HTTP 400 duplicate SMS" in body
    assert body.count("e.g. dup") == 3
    assert "ok0@example.com" not in body
    assert "crmsync queue --crm sandbox --where processing_status=Error" in body


async def test_at_most_one_digest_per_period_and_each_counts_only_the_new_failures(
    store: Store, clock: Clock, mailbox: Mailbox
) -> None:
    notifier = notifier_for(mailbox, clock)
    engine = engine_with_adapter(
        store,
        clock,
        Switchboard,
        notifier,
        sync_failure_notification_email="ops@example.com",
        sync_failure_digest_minutes=15,
    )
    await queue(store, people(3, "dup"), clock)
    await engine.run_once("sandbox")
    await delivered(notifier)
    assert mailbox.subjects == ["[crmsync] sandbox: 3 contacts failed for good"]

    for minutes in (5, 5, 4):  # 14 minutes after the first digest: still inside the period
        clock.advance(minutes=minutes)
        await queue(store, people(2, "bad-phone"), clock)
        await engine.run_once("sandbox")
        await delivered(notifier)
    assert len(mailbox.messages) == 1

    clock.advance(minutes=1)
    await engine.run_once("sandbox")  # nothing due: the digest goes out all the same
    await delivered(notifier)
    assert mailbox.subjects[1] == "[crmsync] sandbox: 6 contacts failed for good"
    assert "     6  sandbox: HTTP 400 invalid phone number" in mailbox.messages[1][1].get_content()

    clock.advance(hours=1)
    await engine.run_once("sandbox")
    await delivered(notifier)
    assert len(mailbox.messages) == 2, "no failures, no e-mail"


async def test_a_stopped_crm_sends_one_email_when_it_stops_and_one_when_it_works_again(
    store: Store, clock: Clock, mailbox: Mailbox
) -> None:
    notifier = notifier_for(mailbox, clock)
    engine = engine_with_adapter(
        store, clock, Switchboard, notifier, sync_failure_notification_email="ops@example.com"
    )
    ids = await queue(store, people(20, "ok"), clock)
    Switchboard.key_refused = True
    for _ in range(5):
        report = await engine.run_once("sandbox")
        assert report.stopped is not None
        clock.advance(minutes=5)
    await delivered(notifier)
    assert mailbox.subjects == ["[crmsync] sandbox: sync stopped"], "one e-mail, not one per run"
    body = mailbox.messages[0][1].get_content()
    assert "sandbox refused the API key: set SANDBOX_API_KEY to a valid key" in body
    states = await store.states("sandbox", ids)
    assert {s.processing_status for s in states.values()} == {ProcessingStatus.QUEUED}

    Switchboard.key_refused = False
    report = await engine.run_once("sandbox")
    assert report.synced == 20
    for _ in range(3):
        clock.advance(minutes=5)
        await engine.run_once("sandbox")
    await delivered(notifier)
    assert mailbox.subjects == [
        "[crmsync] sandbox: sync stopped",
        "[crmsync] sandbox: sync running again",
    ]
    assert "sandbox refused the API key" in mailbox.messages[1][1].get_content()


async def test_an_empty_run_while_stopped_is_not_a_recovery(
    store: Store, clock: Clock, mailbox: Mailbox
) -> None:
    notifier = notifier_for(mailbox, clock)
    engine = engine_with_adapter(
        store, clock, Switchboard, notifier, sync_failure_notification_email="ops@example.com"
    )
    ids = await queue(store, people(2, "ok"), clock)
    Switchboard.key_refused = True
    await engine.run_once("sandbox")
    assert await store.unselect("sandbox", ids) == 2
    Switchboard.key_refused = False
    assert (await engine.run_once("sandbox")).claimed == 0, "the key is never tried"
    await delivered(notifier)
    assert mailbox.subjects == ["[crmsync] sandbox: sync stopped"]
    await queue(store, people(1, "ok"), clock)
    await engine.run_once("sandbox")
    await delivered(notifier)
    assert mailbox.subjects[1:] == ["[crmsync] sandbox: sync running again"]


async def test_a_mail_server_outage_delays_the_digest_and_never_the_sync(
    store: Store, clock: Clock, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = FailureNotifier(mail_settings=smtp_settings(mailbox), clock=clock, retry_seconds=120)
    engine = engine_with_adapter(
        store,
        clock,
        Switchboard,
        notifier,
        sync_failure_notification_email="ops@example.com",
        sync_failure_digest_minutes=15,
    )
    mailbox.down = True
    caplog.set_level(logging.DEBUG, logger="crmsync.notify")
    failed_ids = await queue(store, people(4, "dup"), clock)
    synced_ids = await queue(store, people(3, "ok"), clock)
    report = await engine.run_once("sandbox")
    assert (report.failed, report.synced, report.stopped) == (4, 3, None)
    await delivered(notifier)
    states = await store.states("sandbox", failed_ids + synced_ids)
    assert [states[i].sync_status for i in failed_ids] == [SyncStatus.ERROR] * 4
    assert [states[i].sync_status for i in synced_ids] == [SyncStatus.COMPLETE] * 3

    for _ in range(3):  # each retry fails again: logged once, not once per try
        clock.advance(minutes=3)
        await queue(store, people(1, "bad-phone"), clock)
        assert (await engine.run_once("sandbox")).failed == 1
        await delivered(notifier)
    assert mailbox.messages == []
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "could not send a failure e-mail for sandbox" in errors[0].getMessage()
    assert "s3cret-pass" not in caplog.text

    mailbox.down = False
    clock.advance(minutes=3)
    await engine.run_once("sandbox")
    await delivered(notifier)
    assert mailbox.subjects == ["[crmsync] sandbox: 7 contacts failed for good"]
    body = mailbox.messages[0][1].get_content()
    assert "     4  sandbox: HTTP 400 duplicate SMS" in body
    assert "     3  sandbox: HTTP 400 invalid phone number" in body
    assert "failure e-mails are delivered again" in caplog.text


async def test_no_notification_address_means_no_email(
    store: Store, clock: Clock, mailbox: Mailbox
) -> None:
    notifier = notifier_for(mailbox, clock)
    engine = engine_with_adapter(store, clock, Switchboard, notifier)
    await queue(store, people(5, "dup"), clock)
    Switchboard.key_refused = True
    await engine.run_once("sandbox")
    Switchboard.key_refused = False
    assert (await engine.run_once("sandbox")).failed == 5
    await delivered(notifier)
    assert mailbox.messages == []


async def test_a_refused_login_is_a_failed_delivery_not_a_failed_sync(
    store: Store, clock: Clock, mailbox: Mailbox, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = notifier_for(mailbox, clock, password=SecretStr("wrong-password"))
    engine = engine_with_adapter(
        store, clock, Switchboard, notifier, sync_failure_notification_email="ops@example.com"
    )
    await queue(store, people(2, "dup"), clock)
    assert (await engine.run_once("sandbox")).failed == 2
    await delivered(notifier)
    assert mailbox.messages == []
    assert "SMTPAuthenticationError" in caplog.text
    assert "wrong-password" not in caplog.text


def test_mail_settings_come_from_the_environment_and_hide_the_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CRMSYNC_SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("CRMSYNC_SMTP_SECURITY", "tls")
    monkeypatch.setenv("CRMSYNC_SMTP_USER", "mailer")
    monkeypatch.setenv("CRMSYNC_SMTP_PASSWORD", "hunter2-secret")
    monkeypatch.setenv("CRMSYNC_SMTP_SENDER", "crmsync@example.com")
    settings = MailSettings()
    mailer = settings.mailer()
    assert isinstance(mailer, SmtpMailer)
    assert repr(mailer) == "SmtpMailer(host='smtp.example.com', port=465, security='tls')"
    assert "hunter2-secret" not in repr(settings) + str(settings.model_dump())
    monkeypatch.delenv("CRMSYNC_SMTP_HOST")
    assert MailSettings().mailer() is None, "no host, no mailer"


def test_the_digest_period_is_a_crm_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SANDBOX_SYNC_FAILURE_DIGEST_MINUTES", "60")
    monkeypatch.setenv("SANDBOX_SYNC_FAILURE_NOTIFICATION_EMAIL", "ops@example.com")
    settings = SandboxSettings()
    assert settings.sync_failure_digest_minutes == 60
    assert settings.sync_failure_notification_email == "ops@example.com"


def test_the_installed_registry_has_the_failure_email_plugin_built_in() -> None:
    registry = Registry()
    assert isinstance(registry.failure_notifier, FailureNotifier)
    assert FAILURE_EMAIL_PLUGIN not in {p.name for p in registry.plugins()}
    assert Registry(load_entry_points=False).failure_notifier is None
