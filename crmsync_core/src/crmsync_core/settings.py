"""Per-CRM settings shared by every adapter (design.md section 6).

An adapter subclasses :class:`SyncSettings` with its own ``env_prefix`` and adds its credentials::

    class BrevoSettings(SyncSettings):
        model_config = SettingsConfigDict(env_prefix="BREVO_")
        api_key: SecretStr | None = None

so that ``BREVO_SYNC_MAX_RETRIES=5`` sets ``sync_max_retries``. Settings can also be passed in code.
Secrets are :class:`pydantic.SecretStr`, which never shows its value in a repr or a log.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .ratelimit import RateLimit
from .retry import RetryPolicy


class SyncSettings(BaseSettings):
    """Scheduling, batching, retries and notification for one CRM."""

    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

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
    #: who to tell when a contact fails for good; delivery is up to the host's ``contact_failed`` hook
    sync_failure_notification_email: str | None = None

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
