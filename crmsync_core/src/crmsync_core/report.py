"""What one run of one CRM did: the engine fills it in, hooks and hosts read it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

__all__ = ["RunReport"]

#: distinct error reasons kept per kind of error
_SAMPLE_ERRORS = 5


@dataclass
class RunReport:
    """What one run of one CRM did."""

    crm: str
    started_at: datetime
    duration_seconds: float = 0.0
    claimed: int = 0
    synced: int = 0
    skipped: int = 0
    #: transient failures queued again for a later attempt
    retrying: int = 0
    #: now ``Error``: permanent failures and transient ones out of attempts
    failed: int = 0
    #: handed back to the queue untouched (fatal error or stop request)
    released: int = 0
    #: claims of dead workers taken back at the start of the run
    recovered: int = 0
    #: accepted, awaiting the destination's confirmation (``{CRM}_SYNC_CONFIRM``)
    awaiting: int = 0
    #: not confirmed in time: queued again, or ``Error`` once attempts were used up
    unconfirmed: int = 0
    #: results not written because this worker's claim had expired and been taken back
    stale: int = 0
    #: the fatal error that stopped the run, with what to fix
    stopped: str | None = None
    #: seconds until the CRM's budget resets, when the run stopped on an exhausted rate limit
    resume_after: float | None = None
    #: time requests waited for the rate limit
    rate_limited_seconds: float = 0.0
    #: when the circuit breaker paused the CRM (``None``: not paused)
    paused_since: datetime | None = None
    #: database errors met (retried, or left to the claim timeout; never a contact's attempt)
    database_errors: int = 0
    #: errors by kind: transient, permanent, skipped, fatal
    errors_by_kind: Counter[str] = field(default_factory=Counter)
    #: a few distinct error reasons, by kind
    sample_errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def processed(self) -> int:
        return self.synced + self.skipped + self.retrying + self.failed

    def _sample(self, kind: str, reason: str) -> None:
        self.errors_by_kind[kind] += 1
        samples = self.sample_errors.setdefault(kind, [])
        if len(samples) < _SAMPLE_ERRORS and reason not in samples:
            samples.append(reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            "crm": self.crm,
            "started_at": self.started_at.isoformat(),
            "duration_seconds": round(self.duration_seconds, 3),
            "claimed": self.claimed,
            "synced": self.synced,
            "skipped": self.skipped,
            "retrying": self.retrying,
            "failed": self.failed,
            "released": self.released,
            "recovered": self.recovered,
            "awaiting": self.awaiting,
            "unconfirmed": self.unconfirmed,
            "stale": self.stale,
            "stopped": self.stopped,
            "resume_after": self.resume_after,
            "paused_since": self.paused_since.isoformat() if self.paused_since else None,
            "database_errors": self.database_errors,
            "rate_limited_seconds": round(self.rate_limited_seconds, 3),
            "errors_by_kind": dict(self.errors_by_kind),
            "sample_errors": self.sample_errors,
        }
