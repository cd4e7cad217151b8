"""Run history: what each run did and what happened to each contact, as the store returns it.

This module is free of SQL on purpose: the store writes (:mod:`crmsync_core.store.history`) and reads
(:mod:`crmsync_core.store.history_reads`) the tables ``crmsync_runs`` and ``crmsync_attempts``; the CLI,
the status page and hosts read these types.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple, Protocol

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AttemptOutcome",
    "AttemptRecord",
    "Exchange",
    "HistoryReader",
    "HistorySettings",
    "HourlyOutcome",
    "PayloadCapture",
    "PayloadSampler",
    "RunRecord",
]


class AttemptOutcome(enum.StrEnum):
    """What one attempt to push one contact ended in (the stored ``outcome`` text)."""

    #: the CRM accepted the contact (now ``Complete``)
    SYNCED = "synced"
    #: a transient failure, queued again for a later attempt
    RETRYING = "retrying"
    #: a permanent failure, or a transient one out of attempts (now ``Error``)
    FAILED = "failed"
    #: the adapter refused the contact with a reason (now ``Skipped``)
    SKIPPED = "skipped"
    #: the destination accepted the contact; its confirmation is awaited (``{CRM}_SYNC_CONFIRM``)
    AWAITING = "awaiting"


class PayloadCapture(enum.StrEnum):
    """Whether attempts keep the (redacted, size-capped) request and response: ``CRMSYNC_HISTORY_PAYLOADS``."""

    OFF = "off"
    SAMPLE = "sample"
    ALL = "all"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of one CRM by one worker."""

    id: int
    crm: str
    #: the worker's name (host and process id unless the host names it)
    worker: str
    started_at: datetime
    #: ``None`` while the run is going on (or when its worker died before the end)
    finished_at: datetime | None
    claimed: int = 0
    synced: int = 0
    skipped: int = 0
    #: transient failures queued again
    retrying: int = 0
    #: now ``Error``
    failed: int = 0
    #: handed back to the queue untouched (fatal error or stop request)
    released: int = 0
    contacts_per_second: float = 0.0
    #: time requests waited for the rate limit
    rate_limited_seconds: float = 0.0
    #: the fatal error that stopped the run, with what to fix
    stopped_reason: str | None = None
    #: why the circuit breaker paused the CRM during or before the run
    paused_reason: str | None = None

    @property
    def running(self) -> bool:
        return self.finished_at is None

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values (``crmsync history --json``)."""
        return {
            "id": self.id,
            "crm": self.crm,
            "worker": self.worker,
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "claimed": self.claimed,
            "synced": self.synced,
            "skipped": self.skipped,
            "retrying": self.retrying,
            "failed": self.failed,
            "released": self.released,
            "contacts_per_second": round(self.contacts_per_second, 3),
            "rate_limited_seconds": round(self.rate_limited_seconds, 3),
            "stopped_reason": self.stopped_reason,
            "paused_reason": self.paused_reason,
        }


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt to push one contact to one CRM."""

    run_id: int | None
    #: the contact's id, as text (ids may be integers or UUIDs)
    contact_id: str
    crm: str
    at: datetime
    outcome: AttemptOutcome
    #: the CRM's HTTP status code, when the attempt got an answer and the adapter said which
    status_code: int | None = None
    #: the error or skip reason (``None`` for a synced contact)
    reason: str | None = None
    #: the request, redacted and size-capped, when payload capture kept it
    request: str | None = None
    #: the response, redacted and size-capped, when payload capture kept it
    response: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The record as JSON-ready values (``crmsync history --contact ID --json``)."""
        return {
            "run_id": self.run_id,
            "contact_id": self.contact_id,
            "crm": self.crm,
            "at": self.at.isoformat(),
            "outcome": self.outcome.value,
            "status_code": self.status_code,
            "reason": self.reason,
            "request": self.request,
            "response": self.response,
        }


class HourlyOutcome(NamedTuple):
    """Attempts of one CRM in one hour: the status page's 24-hour chart (``hour, synced, failed``)."""

    #: the start of the hour (UTC)
    hour: datetime
    synced: int
    #: attempts that failed for good; retries are not failures yet
    failed: int


class HistoryReader(Protocol):
    """The read side of run history, as :class:`crmsync_core.store.Store` implements it.

    Every method returns ``[]`` when history is empty or its tables do not exist yet (reading never
    creates them).
    """

    async def recent_runs(self, crm: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first; of one CRM, or of all."""
        ...

    async def contact_attempts(self, contact_id: object) -> list[AttemptRecord]:
        """One contact's attempts across CRMs, newest first."""
        ...

    async def run_attempts(self, run_id: int) -> list[AttemptRecord]:
        """The attempts of one run, newest first."""
        ...

    async def hourly_outcomes(self, crm: str | None, since: datetime) -> list[HourlyOutcome]:
        """Synced and failed attempts per hour since ``since`` (hours without attempts are left out)."""
        ...


@dataclass(frozen=True, slots=True)
class Exchange:
    """A request and its response as the run history keeps them: redacted and size-capped."""

    request: str | None
    response: str | None


class PayloadSampler:
    """Decides which requests' exchanges the history keeps (``CRMSYNC_HISTORY_PAYLOADS``), and makes
    them safe to keep. The engine hands one to adapters as ``AdapterContext.payloads`` when capture is
    on; adapters on the SDK use it for every request."""

    def __init__(self, settings: HistorySettings, rng: random.Random | None = None) -> None:
        self.mode = settings.history_payloads
        self.rate = settings.history_payload_sample_rate
        self.max_chars = settings.history_payload_max_bytes
        self._rng = rng or random.Random()

    def wanted(self) -> bool:
        """Whether to keep the exchange of the request about to be sent."""
        if self.mode is PayloadCapture.ALL:
            return True
        return self.mode is PayloadCapture.SAMPLE and self._rng.random() < self.rate

    def capture(
        self, request: str | None, response: str | None, redact: Callable[[str], str]
    ) -> Exchange:
        """The exchange with every secret ``redact`` knows replaced, each side cut to ``max_chars``."""
        return Exchange(self._safe(request, redact), self._safe(response, redact))

    def _safe(self, text: str | None, redact: Callable[[str], str]) -> str | None:
        if text is None:
            return None
        text = redact(text)
        if len(text) > self.max_chars:
            # Redacted before cutting: a cut secret would no longer match.
            return text[: self.max_chars - 1] + "…"
        return text


class HistorySettings(BaseSettings):
    """Run history: ``CRMSYNC_HISTORY=on|off`` (on), ``CRMSYNC_HISTORY_RETENTION_DAYS`` (30),
    ``CRMSYNC_HISTORY_PAYLOADS=off|sample|all`` (off), ``CRMSYNC_HISTORY_PAYLOAD_SAMPLE_RATE`` (0.01),
    ``CRMSYNC_HISTORY_PAYLOAD_MAX_BYTES`` (4096)."""

    model_config = SettingsConfigDict(
        env_prefix="CRMSYNC_", extra="ignore", validate_default=True, hide_input_in_errors=True
    )

    #: keep runs and attempts (``off``: nothing is written, reading returns what is left)
    history: bool = True
    #: attempts and runs older than this are deleted by the worker (about once an hour)
    history_retention_days: float = Field(30.0, gt=0)
    #: whether attempts keep the CRM request and response (redacted, capped)
    history_payloads: PayloadCapture = PayloadCapture.OFF
    #: with ``sample``: the share of requests whose exchange is kept
    history_payload_sample_rate: float = Field(0.01, ge=0, le=1)
    #: the most characters kept of a request or a response
    history_payload_max_bytes: int = Field(4096, ge=64)

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.history_retention_days)
