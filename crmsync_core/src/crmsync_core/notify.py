"""The failure e-mail: a built-in plugin that turns failures into a few readable e-mails.

When a CRM's ``{CRM}_SYNC_FAILURE_NOTIFICATION_EMAIL`` is set (one address or several, comma-separated),
:class:`FailureNotifier` sends

- a **digest** of the contacts that failed for good: at most one e-mail per CRM per
  ``{CRM}_SYNC_FAILURE_DIGEST_MINUTES`` (15 by default), with the count since the last digest, the count
  per reason, a few example contacts per reason and what to do;
- an **outage** e-mail when a run of the CRM is stopped by a fatal error (refused API key, unknown list)
  or paused by the circuit breaker, and one more when the CRM works again; never one per run.

It is a pluggy plugin (``contact_failed`` collects, ``run_finished`` decides what to send), registered in
every :class:`~crmsync_core.plugins.Registry` that loads the installed plugins; the ``contact_failed`` hook
stays open to hosts that want their own channel. Delivery goes through SMTP (``CRMSYNC_SMTP_*``,
:class:`MailSettings`) with the standard library's :mod:`smtplib`, or through Brevo's transactional API
(``CRMSYNC_MAIL_VIA=brevo``), always on one background thread: a slow or failing mail server never holds up
a sync. A delivery that fails is logged once (until mail works again) and retried after
``CRMSYNC_MAIL_RETRY_SECONDS``; the failures it was about stay in the next digest.

The digest state lives in this object, so in one process: a long-running worker (``crmsync sync
--forever``, a host's scheduler) keeps it across runs. Separate worker processes keep separate digests,
which bounds the e-mails to one per CRM per period *per process*; sharing the state would need a table and a
lock in the database for what is a courtesy e-mail, and a process that cannot reach the database is
precisely when an e-mail should still go out.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import AliasChoices, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from .errors import ConfigurationError
from .hookspecs import hookimpl

if TYPE_CHECKING:
    import httpx

    from .contacts import Contact
    from .report import RunReport
    from .settings import SyncSettings

logger = logging.getLogger("crmsync.notify")

#: example contacts shown per reason
EXAMPLES_PER_REASON = 3
#: reasons listed one by one; the rest are summed up in one line
REASONS_SHOWN = 10
#: distinct reasons kept between two digests (the memory bound when every reason is different)
REASONS_KEPT = 200
_REASON_LENGTH = 300
_OTHER_REASONS = "(other reasons)"


class MailSettings(BaseSettings):
    """How failure e-mails leave: ``CRMSYNC_SMTP_HOST``, ``CRMSYNC_SMTP_PORT``, ``CRMSYNC_SMTP_SECURITY``
    (``starttls``, ``tls`` or ``none``), ``CRMSYNC_SMTP_USER``, ``CRMSYNC_SMTP_PASSWORD``,
    ``CRMSYNC_SMTP_SENDER``, ``CRMSYNC_SMTP_TIMEOUT_SECONDS``; or, with ``CRMSYNC_MAIL_VIA=brevo``, Brevo's
    transactional API with ``CRMSYNC_MAIL_BREVO_API_KEY`` (else ``BREVO_API_KEY``)."""

    model_config = SettingsConfigDict(
        env_prefix="CRMSYNC_SMTP_", extra="ignore", populate_by_name=True
    )

    via: Literal["smtp", "brevo"] = Field(
        "smtp", validation_alias=AliasChoices("via", "CRMSYNC_MAIL_VIA")
    )
    host: str | None = None
    #: default: 465 for ``tls``, 587 for ``starttls``, 25 for ``none``
    port: int | None = Field(None, ge=1, le=65535)
    security: Literal["starttls", "tls", "none"] = "starttls"
    user: str | None = None
    password: SecretStr | None = None
    sender: str = "crmsync@localhost"
    timeout_seconds: float = Field(30.0, gt=0)
    brevo_api_key: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices(
            "brevo_api_key", "CRMSYNC_MAIL_BREVO_API_KEY", "BREVO_API_KEY"
        ),
    )
    brevo_base_url: str = Field(
        "https://api.brevo.com/v3",
        validation_alias=AliasChoices("brevo_base_url", "CRMSYNC_MAIL_BREVO_BASE_URL"),
    )
    #: wait before a failed delivery is tried again
    retry_seconds: float = Field(
        60.0, gt=0, validation_alias=AliasChoices("retry_seconds", "CRMSYNC_MAIL_RETRY_SECONDS")
    )

    def mailer(self) -> Mailer | None:
        """The mailer these settings describe, or ``None`` when no way out is configured."""
        if self.via == "brevo":
            if self.brevo_api_key is None:
                return None
            return BrevoMailer(
                self.brevo_api_key,
                base_url=self.brevo_base_url,
                sender=self.sender,
                timeout_seconds=self.timeout_seconds,
            )
        if not self.host:
            return None
        return SmtpMailer(self)


class Mailer(Protocol):
    """Sends one message (blocking; called on the notifier's thread). Raises when it was not sent."""

    #: the From address
    sender: str

    def send(self, message: EmailMessage) -> None: ...


class SmtpMailer:
    """SMTP through :mod:`smtplib`: implicit TLS, STARTTLS or plain (loopback relays), with login."""

    def __init__(self, settings: MailSettings) -> None:
        self.settings = settings
        self.sender = settings.sender

    def __repr__(self) -> str:
        s = self.settings
        return f"SmtpMailer(host={s.host!r}, port={self._port()}, security={s.security!r})"

    def _port(self) -> int:
        s = self.settings
        return s.port or {"tls": 465, "starttls": 587, "none": 25}[s.security]

    def send(self, message: EmailMessage) -> None:
        import smtplib
        import ssl

        s = self.settings
        assert s.host is not None
        smtp: smtplib.SMTP
        if s.security == "tls":
            smtp = smtplib.SMTP_SSL(
                s.host,
                self._port(),
                timeout=s.timeout_seconds,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(s.host, self._port(), timeout=s.timeout_seconds)
        with smtp:
            if s.security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if s.user:
                password = s.password.get_secret_value() if s.password else ""
                smtp.login(s.user, password)
            smtp.send_message(message)


class BrevoMailer:
    """Brevo's transactional e-mail API (``POST /v3/smtp/email``); the sender must be one Brevo knows."""

    def __init__(
        self,
        api_key: SecretStr,
        *,
        sender: str,
        base_url: str = "https://api.brevo.com/v3",
        transport: httpx.BaseTransport | None = None,
        timeout_seconds: float = 30.0,
    ) -> None:
        self._api_key = api_key
        self.sender = sender
        self.base_url = base_url.rstrip("/")
        self._transport = transport
        self._timeout = timeout_seconds

    def __repr__(self) -> str:
        return f"BrevoMailer(base_url={self.base_url!r}, sender={self.sender!r})"

    def send(self, message: EmailMessage) -> None:
        import httpx

        body = {
            "sender": {"email": self.sender, "name": "crmsync"},
            "to": [{"email": address} for address in _addresses(str(message["To"]))],
            "subject": str(message["Subject"]),
            "textContent": message.get_content(),
        }
        with httpx.Client(transport=self._transport, timeout=self._timeout) as client:
            response = client.post(
                f"{self.base_url}/smtp/email",
                json=body,
                headers={
                    "api-key": self._api_key.get_secret_value(),
                    "accept": "application/json",
                },
            )
        if response.status_code >= 300:
            # Brevo's error body says what is wrong (e.g. an unverified sender) and holds no secret.
            raise RuntimeError(
                f"Brevo refused the e-mail: HTTP {response.status_code} {response.text[:300]}"
            )


@dataclass
class _Failures:
    """Contacts failed for good since the last digest of one CRM."""

    since: datetime
    count: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, example: str) -> None:
        self.count += 1
        if reason not in self.reasons and len(self.reasons) >= REASONS_KEPT:
            reason = _OTHER_REASONS
        self.reasons[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(example)

    def merge(self, older: _Failures) -> None:
        """Put the failures of a digest that could not be sent back in front of the new ones."""
        self.since = min(self.since, older.since)
        for reason, count in older.reasons.items():
            key = (
                reason
                if reason in self.reasons or len(self.reasons) < REASONS_KEPT
                else _OTHER_REASONS
            )
            self.reasons[key] += count
            kept = self.examples.setdefault(key, [])
            self.examples[key] = (older.examples.get(reason, []) + kept)[:EXAMPLES_PER_REASON]
        self.count += older.count


@dataclass
class _CrmState:
    recipients: str | None = None
    failures: _Failures | None = None
    last_digest_at: datetime | None = None
    #: the reason the CRM is stopped or paused, once its outage e-mail is queued
    outage: str | None = None
    outbox: list[EmailMessage] = field(default_factory=list)
    sending: bool = False
    retry_at: datetime | None = None


class FailureNotifier:
    """Sends the failure digest and the outage e-mails of every CRM (see the module's docs).

    ``mailer`` delivers (default: from :class:`MailSettings`, read from the environment when first needed);
    ``clock`` gives the aware UTC time (tests move it). :meth:`wait` blocks until what is queued was tried.
    """

    def __init__(
        self,
        mailer: Mailer | None = None,
        *,
        mail_settings: MailSettings | None = None,
        clock: Callable[[], datetime] | None = None,
        retry_seconds: float | None = None,
    ) -> None:
        self._mailer = mailer
        self._retry_seconds = retry_seconds
        self._mail_settings = mail_settings
        self._mailer_resolved = mailer is not None
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._crms: dict[str, _CrmState] = {}
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Future[None]] = []
        self._mail_failing = False
        self._warned_no_mailer = False

    def __repr__(self) -> str:
        return f"FailureNotifier(mailer={self._mailer!r})"

    # -- hooks ----------------------------------------------------------------------------------------

    @hookimpl
    def contact_failed(
        self, crm: str, contact: Contact, reason: str, notification_email: str | None
    ) -> None:
        """Count the failure into the CRM's next digest."""
        if not notification_email:
            return
        reason = _one_line(reason)
        example = f"{contact.email or '(no e-mail)'} (contact {contact.id})"
        with self._lock:
            state = self._crms.setdefault(crm, _CrmState())
            state.recipients = notification_email
            if state.failures is None:
                state.failures = _Failures(since=self._clock())
            state.failures.add(reason, example)

    @hookimpl
    def run_finished(self, crm: str, report: RunReport, settings: SyncSettings | None) -> None:
        """Queue the outage e-mails and the digest that are due, and start sending them."""
        recipients = settings.sync_failure_notification_email if settings is not None else None
        with self._lock:
            if not recipients:
                self._crms.pop(crm, None)
                return
            state = self._crms.setdefault(crm, _CrmState())
            state.recipients = recipients
            now = self._clock()
            outage = _outage_reason(report)
            if outage is not None and state.outage is None:
                state.outage = outage
                state.outbox.append(self._outage_message(crm, recipients, outage, report, now))
            elif outage is None and state.outage is not None and _crm_answered(report):
                state.outbox.append(self._recovery_message(crm, recipients, state.outage, now))
                state.outage = None
            assert settings is not None
            period = timedelta(minutes=settings.sync_failure_digest_minutes)
            self._pump(crm, state, now, period)

    # -- sending --------------------------------------------------------------------------------------

    def wait(self, timeout: float | None = 60.0) -> None:
        """Block until every e-mail queued so far was sent or failed (tests, one-shot commands)."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.result(timeout=timeout)

    def close(self) -> None:
        """Finish what is queued and stop the sending thread."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _pump(self, crm: str, state: _CrmState, now: datetime, period: timedelta) -> None:
        """Start one delivery job for the CRM when something is due and none is running (lock held)."""
        if state.sending or (state.retry_at is not None and now < state.retry_at):
            return
        digest: _Failures | None = None
        if (
            state.failures is not None
            and state.failures.count
            and (state.last_digest_at is None or now - state.last_digest_at >= period)
        ):
            digest, state.failures = state.failures, None
        if not state.outbox and digest is None:
            return
        mailer = self._resolve_mailer()
        if mailer is None:
            if digest is not None:
                state.failures = digest
            return
        assert state.recipients is not None
        messages = list(state.outbox)
        state.outbox.clear()
        if digest is not None:
            messages.append(self._digest_message(crm, state.recipients, digest, now))
        state.sending = True
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmsync-mail")
        future = self._executor.submit(self._deliver, crm, state, mailer, messages, digest, now)
        self._pending = [f for f in self._pending if not f.done()] + [future]

    def _deliver(
        self,
        crm: str,
        state: _CrmState,
        mailer: Mailer,
        messages: Sequence[EmailMessage],
        digest: _Failures | None,
        queued_at: datetime,
    ) -> None:
        """On the mail thread: send in order; whatever was not sent goes back for a later try."""
        sent = 0
        error: Exception | None = None
        for message in messages:
            try:
                if "From" not in message:
                    message["From"] = mailer.sender
                mailer.send(message)
            except Exception as exc:  # any failure of the mail path must stay away from the sync
                error = exc
                break
            sent += 1
        with self._lock:
            state.sending = False
            if error is None:
                state.retry_at = None
                if digest is not None:
                    state.last_digest_at = queued_at
                if self._mail_failing:
                    self._mail_failing = False
                    logger.warning("failure e-mails are delivered again (%s)", mailer)
                return
            unsent = list(messages[sent:])
            if digest is not None and unsent:
                unsent.pop()  # the digest is rebuilt from its counts, with what failed meanwhile
                if state.failures is None:
                    state.failures = digest
                else:
                    state.failures.merge(digest)
            state.outbox[:0] = unsent
            retry = self._retry_after()
            state.retry_at = self._clock() + timedelta(seconds=retry)
            if not self._mail_failing:
                self._mail_failing = True
                logger.error(
                    "could not send a failure e-mail for %s through %s: %s: %s (retrying every %ss; "
                    "the sync goes on; not logged again until mail works)",
                    crm,
                    mailer,
                    type(error).__name__,
                    _one_line(str(error)),
                    retry,
                )
            else:
                logger.debug("failure e-mail for %s still not delivered: %s", crm, error)

    def _settings(self) -> MailSettings:
        if self._mail_settings is None:
            self._mail_settings = MailSettings()
        return self._mail_settings

    def _retry_after(self) -> float:
        if self._retry_seconds is None:
            try:
                self._retry_seconds = self._settings().retry_seconds
            except ValidationError:
                self._retry_seconds = 60.0
        return self._retry_seconds

    def _resolve_mailer(self) -> Mailer | None:
        if not self._mailer_resolved:
            self._mailer_resolved = True
            try:
                self._mailer = self._settings().mailer()
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors(include_input=False, include_url=False)
                )
                logger.error(
                    "%s",
                    ConfigurationError(f"mail settings (CRMSYNC_SMTP_*) are invalid: {problems}"),
                )
                self._mailer = None
        if self._mailer is None and not self._warned_no_mailer:
            self._warned_no_mailer = True
            logger.error(
                "a failure notification e-mail is due but no mail server is configured: set "
                "CRMSYNC_SMTP_HOST (and CRMSYNC_SMTP_SENDER), or CRMSYNC_MAIL_VIA=brevo"
            )
        return self._mailer

    # -- messages -------------------------------------------------------------------------------------

    def _message(self, recipients: str, subject: str, body: str, now: datetime) -> EmailMessage:
        message = EmailMessage()
        # From is set when the message leaves: the mailer knows its sender.
        message["To"] = ", ".join(_addresses(recipients))
        message["Subject"] = subject
        message["Date"] = formatdate(now.timestamp(), usegmt=True)
        message["Message-ID"] = make_msgid(domain="crmsync")
        message["Auto-Submitted"] = "auto-generated"
        message.set_content(body)
        return message

    def _digest_message(
        self, crm: str, recipients: str, failures: _Failures, now: datetime
    ) -> EmailMessage:
        n = failures.count
        subject = f"[crmsync] {crm}: {n} contact{'s' if n != 1 else ''} failed for good"
        lines = [
            f"{n} contact{'s' if n != 1 else ''} could not be synced to {crm} and will not be retried "
            f"on their own (their {crm} sync status is now Error).",
            f"Failures from {_when(failures.since)} to {_when(now)}.",
            "",
            "By reason:",
        ]
        ranked = failures.reasons.most_common()
        for reason, count in ranked[:REASONS_SHOWN]:
            lines.append(f"  {count:>6}  {reason}")
            lines.extend(
                f"          e.g. {example}" for example in failures.examples.get(reason, [])
            )
        if len(ranked) > REASONS_SHOWN:
            rest = sum(count for _, count in ranked[REASONS_SHOWN:])
            lines.append(f"  {rest:>6}  in {len(ranked) - REASONS_SHOWN} other reasons")
        lines += [
            "",
            "What to do:",
            f"- A reason from {crm}'s validation (a rejected field or value) names what to fix: correct "
            "the contact's data in your table, then select the contacts again.",
            '- "gave up after N attempts": the CRM kept failing or timing out; check its status, then '
            "select the contacts again.",
            f"- To queue them again: crmsync queue --crm {crm} --where processing_status=Error",
            "",
            f"At most one such e-mail is sent per {crm} per digest period "
            f"({crm.upper()}_SYNC_FAILURE_DIGEST_MINUTES).",
        ]
        return self._message(recipients, subject, "\n".join(lines) + "\n", now)

    def _outage_message(
        self, crm: str, recipients: str, reason: str, report: RunReport, now: datetime
    ) -> EmailMessage:
        subject = f"[crmsync] {crm}: sync stopped"
        body = (
            f"crmsync stopped syncing to {crm} at {_when(now)}:\n\n  {reason}\n\n"
            f"Queued contacts stay queued and nothing is counted against them. Every run tries again "
            f"on its schedule; you get one e-mail when {crm} works again, none per run meanwhile.\n"
            f"What to do: fix what the message names (often {crm.upper()}_API_KEY or the list id), "
            "then wait for the next run.\n"
        )
        if report.released:
            body += (
                f"\n{report.released} claimed contacts were handed back to the queue untouched.\n"
            )
        return self._message(recipients, subject, body, now)

    def _recovery_message(
        self, crm: str, recipients: str, reason: str, now: datetime
    ) -> EmailMessage:
        subject = f"[crmsync] {crm}: sync running again"
        body = (
            f"crmsync syncs to {crm} again since {_when(now)}. It had stopped because:\n\n"
            f"  {reason}\n\nThe contacts queued meanwhile are being synced.\n"
        )
        return self._message(recipients, subject, body, now)


def _outage_reason(report: RunReport) -> str | None:
    """Why the CRM is out (stopped by a fatal error or paused), or ``None``.

    A run stopped because the CRM's request budget ran out is not an outage: it resumes by itself when
    the budget resets, and a daily quota would otherwise mean two e-mails a day.
    """
    paused: Any = getattr(report, "paused", None)
    if paused:
        return _one_line(paused if isinstance(paused, str) else "paused by the circuit breaker")
    if report.stopped and report.resume_after is None:
        return _one_line(report.stopped)
    return None


def _crm_answered(report: RunReport) -> bool:
    """Whether the run reached the CRM and got answers (an empty run proves nothing)."""
    return report.synced > 0 or report.failed > 0


def _one_line(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REASON_LENGTH else text[: _REASON_LENGTH - 1] + "…"


def _addresses(recipients: str) -> list[str]:
    return [a.strip() for a in recipients.replace(";", ",").split(",") if a.strip()]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
