"""The queue as the engine sees it: what it claims, what it records, and the results of queue operations.

This module is free of SQL on purpose: the engine is typed against :class:`Queue`, and
:class:`crmsync_core.store.Store` is the implementation on a SQL table. Another implementation (a test
double, another database) needs only these methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from .contacts import Contact, ContactId
from .status import Event, ProcessingStatus, SyncStatus

if TYPE_CHECKING:
    from .history import HistorySettings
    from .layout import Layout
    from .ratelimit import Ledger
    from .report import RunReport
    from .wake import Listener, QueueWaker

__all__ = [
    "Callback",
    "CircuitState",
    "Claim",
    "ConfirmResolution",
    "ContactBrief",
    "ContactState",
    "FailureReason",
    "Pending",
    "Queue",
    "QueueResult",
    "RecordResult",
    "Resolution",
    "StatusSummary",
    "StoredFingerprint",
]


@dataclass(frozen=True, slots=True)
class QueueResult:
    """What a queue operation did."""

    queued: int = 0
    already_queued: int = 0
    #: refused at queue time (no e-mail address): now ``Skipped`` with the reason
    skipped: int = 0
    #: ids that match no contact
    not_found: int = 0

    def __add__(self, other: QueueResult) -> QueueResult:
        return QueueResult(
            self.queued + other.queued,
            self.already_queued + other.already_queued,
            self.skipped + other.skipped,
            self.not_found + other.not_found,
        )


@dataclass(frozen=True, slots=True)
class StatusSummary:
    """How one CRM's contacts stand."""

    crm: str
    counts: Mapping[SyncStatus, int]
    total: int
    #: queued and due now
    due: int
    #: queued again after a transient failure
    retrying: int
    #: seconds since the longest-waiting due contact became due (``None`` when nothing is due)
    oldest_due_seconds: float | None
    #: when the circuit breaker paused the CRM (``None``: not paused)
    paused_since: datetime | None = None
    #: when the paused CRM is probed next
    probe_at: datetime | None = None
    #: the reason a user gave when pausing the CRM (``None``: not paused, or by the circuit breaker)
    paused_by_user: str | None = None
    #: Complete contacts changed (``updated_at``) since their last delivery or check: what
    #: ``Engine.queue_changed`` compares next (``None``: no ``updated_at`` or no fingerprint table)
    out_of_date: int | None = None


@dataclass(frozen=True, slots=True)
class StoredFingerprint:
    """What crmsync remembers of a contact's last delivery to one CRM (change detection)."""

    fingerprint: str
    delivered_at: datetime
    #: the contact's current queueing is a user's re-selection of it while it was ``Complete``
    reselected: bool


@dataclass(frozen=True, slots=True)
class CircuitState:
    """A paused CRM (by the circuit breaker or by a user): since when, and when it is probed next."""

    crm: str
    opened_at: datetime
    probe_at: datetime
    cooldown_seconds: float
    #: set when a user paused the CRM (the status page's "pause"): why, in their words. Such a pause
    #: is never probed nor lifted by the circuit breaker, only by :meth:`resume`.
    paused_by_user: str | None = None


@dataclass(frozen=True, slots=True)
class ContactState:
    """One contact's state for one CRM."""

    sync_status: SyncStatus
    processing_status: ProcessingStatus | None
    error: str | None
    remote_id: str | None
    attempts: int
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class ContactBrief:
    """Who a contact is, for a person looking at it: id, e-mail and name (untrusted text)."""

    id: ContactId
    email: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class FailureReason:
    """The ``Error`` contacts of one CRM that share one reason: how many, and a few of them."""

    reason: str | None
    count: int
    examples: tuple[ContactBrief, ...]


@dataclass(frozen=True, slots=True)
class Claim:
    """Contacts taken from the queue by one worker; ``claimed_at`` identifies the claim."""

    crm: str
    contacts: list[Contact]
    claimed_at: datetime


@dataclass(frozen=True, slots=True)
class Resolution:
    """What happens to one claimed contact: an event of the status machine with its data."""

    contact_id: ContactId
    event: Event
    remote_id: str | None = None
    error: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    #: recorded as the remote id only when the CRM gave none and none is recorded yet
    fallback_id: str | None = None
    #: change detection: the fingerprint of the payload delivered (success only)
    fingerprint: str | None = None
    #: completed without a request: the payload is the one delivered before
    unchanged: bool = False
    #: the CRM's HTTP status code for this contact's request, when the adapter said (run history)
    status_code: int | None = None
    #: the request and response, redacted and capped, when payload capture kept them (run history)
    request: str | None = None
    response: str | None = None


@dataclass(frozen=True, slots=True)
class RecordResult:
    #: the contacts whose result was written
    written_ids: frozenset[ContactId]
    #: results refused because the claim was no longer this worker's (it expired and was taken back)
    stale: int

    @property
    def written(self) -> int:
        return len(self.written_ids)


class Queue(Protocol):
    """What the engine asks of the database: claims, their outcomes, leases, the shared request budget and
    the circuit breaker."""

    @property
    def layout(self) -> Layout:
        """The table's layout (which CRMs have columns)."""
        ...

    @property
    def shares_rate_limits(self) -> bool:
        """Whether workers on other machines can share a CRM's budget through this queue."""
        ...

    @property
    def history_settings(self) -> HistorySettings:
        """Run history's settings (whether payloads are captured)."""
        ...

    def rate_ledger(self) -> Ledger:
        """The fleet's ledger of request slots (only asked for when :attr:`shares_rate_limits`)."""
        ...

    async def claim(
        self, crm: str, limit: int, *, now: datetime, ids: Sequence[ContactId] | None = None
    ) -> Claim:
        """Take up to ``limit`` due contacts and mark them ``Processing`` (only ``ids``, queued ones
        due or not, when given)."""
        ...

    async def fingerprints(
        self, crm: str, ids: Iterable[ContactId | str]
    ) -> Mapping[ContactId, StoredFingerprint]:
        """What was last delivered to ``crm`` for each of ``ids`` (change detection; may be empty)."""
        ...

    async def record(
        self,
        claim: Claim,
        resolutions: Sequence[Resolution],
        *,
        now: datetime,
        run_id: int | None = None,
    ) -> RecordResult:
        """Write the outcomes of a claim's contacts (only those still in the claim), and their attempts
        in run ``run_id``'s history in the same transaction."""
        ...

    async def release(self, claim: Claim, ids: Iterable[ContactId] | None = None) -> int:
        """Hand claimed contacts back to the queue untouched."""
        ...

    async def extend_claim(self, claim: Claim, *, now: datetime) -> Claim:
        """Renew a claim whose contacts are still being pushed."""
        ...

    async def release_expired(self, crm: str, *, now: datetime, older_than: timedelta) -> int:
        """Return the contacts of dead workers' claims to the queue."""
        ...

    async def circuit(self, crm: str) -> CircuitState | None:
        """Whether ``crm`` is paused by the circuit breaker."""
        ...

    async def open_circuit(
        self, crm: str, *, now: datetime, cooldown: float, max_cooldown: float
    ) -> CircuitState:
        """Pause ``crm`` for every worker."""
        ...

    async def close_circuit(self, crm: str) -> None:
        """Resume ``crm`` for every worker."""
        ...

    async def start_run(self, crm: str, *, worker: str, now: datetime) -> int | None:
        """Keep a run in the history; its id (``None``: history is off)."""
        ...

    async def finish_run(self, run_id: int, report: RunReport, *, now: datetime) -> None:
        """Write what a kept run did."""
        ...

    async def prune_history(self, *, now: datetime) -> int:
        """Delete history older than its retention; the attempts deleted."""
        ...

    async def summary(self, crm: str, *, now: datetime | None = None) -> StatusSummary:
        """How ``crm``'s contacts stand (queue depth and due count, for metrics)."""
        ...

    # -- wake on queue (crmsync_core.wake) -----------------------------------------------------------

    def queue_listener(
        self, waker: QueueWaker, crms: Sequence[str], *, mode: str | None = None
    ) -> Listener | None:
        """A started listener waking ``waker`` when contacts are queued for ``crms``; ``None`` where
        workers cannot be woken (they poll at their interval)."""
        ...

    # -- confirmed delivery (crmsync_core.confirm) ---------------------------------------------------

    def parse_id(self, value: ContactId | str) -> ContactId:
        """``value`` as a contact id of this queue (``InvalidRequestError`` when it is not one)."""
        ...

    async def expect_confirmations(
        self,
        crm: str,
        items: Sequence[tuple[ContactId, str | None]],
        *,
        now: datetime,
        confirm_by: datetime,
    ) -> None:
        """Note accepted deliveries (contact id, idempotency key) that await a callback."""
        ...

    async def keep_early_callback(self, crm: str, callback: Callback) -> None:
        """Keep a callback that came before the acceptance was recorded."""
        ...

    async def pending_confirmations(
        self,
        crm: str,
        ids: Iterable[ContactId | str] | None = None,
        *,
        expired_at: datetime | None = None,
        with_outcome: bool = False,
    ) -> list[Pending]:
        """Awaited deliveries with their contacts' state."""
        ...

    async def contact_state_for_callback(self, crm: str, contact_id: ContactId | str) -> str:
        """``awaiting``, ``claimed``, ``other`` or ``missing``."""
        ...

    async def resolve_confirmations(
        self, crm: str, resolutions: Sequence[ConfirmResolution], *, now: datetime
    ) -> set[ContactId]:
        """Move awaiting contacts on; returns those that were."""
        ...

    async def contacts(self, ids: Iterable[ContactId | str]) -> dict[ContactId, Contact]:
        """The contacts of ``ids`` (those that exist)."""
        ...


# -- confirmed delivery (crmsync_core.confirm) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Callback:
    """What the destination says about one delivery."""

    contact_id: str
    idempotency_key: str | None
    ok: bool
    error: str | None = None
    #: anything the destination sends back (enrichment results), handed to ``contact_confirmed``
    data: Any = None
    #: on a failure: whether a later attempt may succeed (else ``Error`` at once)
    retry: bool = True


@dataclass(frozen=True, slots=True)
class Pending:
    """An accepted delivery the store knows of, with its contact's state."""

    contact_id: ContactId
    idempotency_key: str | None
    #: a callback that came before the acceptance was recorded
    early: Callback | None
    #: the contact awaits its callback
    awaiting: bool
    #: the contact is claimed (sent; its acceptance not recorded yet)
    claimed: bool
    attempts: int
    remote_id: str | None


@dataclass(frozen=True, slots=True)
class ConfirmResolution:
    """What happens to one awaiting contact."""

    contact_id: ContactId
    event: Event
    error: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
