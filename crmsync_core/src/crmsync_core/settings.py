"""Per-CRM settings shared by every adapter (design.md section 6).

An adapter subclasses :class:`SyncSettings` with its own ``env_prefix`` and adds its credentials::

    class BrevoSettings(SyncSettings):
        model_config = SettingsConfigDict(env_prefix="BREVO_")
        api_key: SecretStr | None = None

so that ``BREVO_SYNC_MAX_RETRIES=5`` sets ``sync_max_retries``. Settings can also be passed in code.
Secrets are :class:`pydantic.SecretStr`, which never shows its value in a repr or a log; a URL that may
carry a credential (a webhook URL with ``?token=``) is a :class:`SecretUrl`. A base URL that has its own
credential settings next to it is checked with :func:`refuse_url_credentials`. Validation errors never
quote the rejected value (``hide_input_in_errors``): a misplaced secret must not reach a log that way.
"""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .ratelimit import RateLimit
from .retry import RetryPolicy

#: the response body size a CRM may send before the request fails (``{CRM}_SYNC_MAX_RESPONSE_BYTES``)
DEFAULT_MAX_RESPONSE_BYTES = 1_000_000


def redact_url(url: str) -> str:
    """``url`` without what may be a credential: the user and password, the query and the fragment
    each become ``***``. What is left (scheme, host, port, path) is safe to show."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "***"
    if not parts.scheme or not host:
        return "***"
    netloc = host if ":" not in host else f"[{host}]"
    if port is not None:
        netloc = f"{netloc}:{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"***@{netloc}"
    return urlunsplit(
        (
            parts.scheme,
            netloc,
            parts.path,
            "***" if parts.query else "",
            "***" if parts.fragment else "",
        )
    )


def url_has_credentials(url: str) -> bool:
    """Whether ``url`` carries a user, a password or a query string (where tokens travel)."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return False
    return bool(parts.username or parts.password or parts.query)


def refuse_url_credentials(url: str, setting: str, instead: str) -> str:
    """``url`` unchanged, or a one-line error naming ``setting`` when it carries a credential.

    For base URLs whose CRM has credential settings of its own (``instead`` names them): a password in
    the URL would be shown wherever the base URL is.
    """
    if url_has_credentials(url):
        raise ValueError(
            f"{setting} must not carry a user, password or query string: put the credential in "
            f"{instead}"
        )
    return url


class SecretUrl(SecretStr):
    """A URL that may carry a credential (``?token=...``, ``user:password@``).

    Like :class:`pydantic.SecretStr` its value comes from :meth:`get_secret_value`; its ``repr`` and
    ``str`` show the URL without user, password and query (``https://n8n.example.com/webhook/x?***``),
    and a JSON dump shows ``**********``.
    """

    def _display(self) -> str:
        value = self.get_secret_value()
        return redact_url(value) if value else ""


class SyncSettings(BaseSettings):
    """Scheduling, batching, retries and notification for one CRM."""

    # hide_input_in_errors: a ValidationError's text never quotes the value it refused (subclasses
    # inherit it: pydantic merges model_config along the class hierarchy).
    model_config = SettingsConfigDict(
        extra="ignore", validate_default=True, hide_input_in_errors=True
    )

    sync_scheduler_interval_minutes: float = Field(5.0, gt=0)
    #: contacts claimed per adapter call; ``None`` uses the adapter's largest batch
    sync_scheduler_batch_size: int | None = Field(None, ge=1)
    sync_scheduler_max_instances: int = Field(1, ge=1)
    sync_max_retries: int = Field(3, ge=0)
    sync_retry_delay_minutes: float = Field(5.0, ge=0)
    sync_retry_exponential: bool = True
    sync_retry_max_delay_minutes: float = Field(24 * 60.0, ge=0)
    sync_retry_jitter: float = Field(0.1, ge=0, lt=1)
    #: requests in flight at once for this CRM (the rate limit still applies to all of them together)
    sync_concurrency: int = Field(4, ge=1)
    #: how long a claim may be held before another worker takes the contacts back
    sync_claim_timeout_minutes: float = Field(10.0, gt=0)
    #: override the adapter's default rate limit, e.g. 20 per 1 s on Brevo's Professional plan
    sync_rate_limit_requests: int | None = Field(None, ge=1)
    sync_rate_limit_period_seconds: float | None = Field(None, gt=0)
    #: share the rate limit with every worker through the database (PostgreSQL; one small table of its own)
    sync_shared_rate_limit: bool = True
    #: stop the run (as fatal) when the account lacks a field the adapter writes, instead of warning once
    sync_require_fields: bool = False
    #: the longest one HTTP exchange may take, every read included (default: 3 times the timeout); past
    #: it the request is a transient failure, and the batch's claim is no longer renewed
    sync_request_deadline_seconds: float | None = Field(None, gt=0)
    #: pause the CRM after this many connection errors, timeouts or 5xx in a row, every try of every
    #: request counted (0: never). Requests that used up their tries before it opens count an attempt.
    sync_circuit_failures: int = Field(10, ge=0)
    #: first cool-down of a paused CRM before a probe; it doubles while the outage lasts
    sync_circuit_cooldown_seconds: float = Field(60.0, gt=0)
    sync_circuit_max_cooldown_seconds: float = Field(3600.0, gt=0)
    #: contacts in the probe batch of a paused CRM
    sync_circuit_probe_size: int = Field(1, ge=1)
    #: how long to keep retrying a database write (results, releases) before leaving it to the claim
    #: timeout; default: half the claim timeout
    sync_database_retry_seconds: float | None = Field(None, ge=0)
    #: who to tell (comma-separated) when contacts fail for good or the CRM stops: the built-in
    #: :class:`~crmsync_core.notify.FailureNotifier` e-mails a digest; hooks can add other channels
    sync_failure_notification_email: str | None = None
    #: at most one failure digest per this many minutes for this CRM
    sync_failure_digest_minutes: float = Field(15.0, gt=0)
    #: the largest response body read from the CRM; a larger answer fails the request with a snippet
    sync_max_response_bytes: int = Field(DEFAULT_MAX_RESPONSE_BYTES, ge=1)
    #: confirmed delivery: an accepted contact stays Processing until the destination calls back
    #: (``POST {prefix}/{crm}/sync/confirm``); see docs/confirmed-delivery.md
    sync_confirm: bool = False
    #: no callback within this time: back to the queue (an attempt) and re-sent with the same key
    sync_confirm_timeout_seconds: float = Field(600.0, gt=0)
    #: the bearer secret the destination's callback must carry
    sync_callback_secret: SecretStr | None = None

    @model_validator(mode="after")
    def _rate_limit_is_complete(self) -> SyncSettings:
        if (self.sync_rate_limit_requests is None) != (self.sync_rate_limit_period_seconds is None):
            raise ValueError(
                "set both sync_rate_limit_requests and sync_rate_limit_period_seconds, or neither"
            )
        return self

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_retries=self.sync_max_retries,
            delay=timedelta(minutes=self.sync_retry_delay_minutes),
            exponential=self.sync_retry_exponential,
            max_delay=timedelta(minutes=self.sync_retry_max_delay_minutes),
            jitter=self.sync_retry_jitter,
        )

    def rate_limit(self, default: RateLimit | None) -> RateLimit | None:
        if self.sync_rate_limit_requests is not None and self.sync_rate_limit_period_seconds:
            return RateLimit(self.sync_rate_limit_requests, self.sync_rate_limit_period_seconds)
        return default
