"""The adapter protocol: what a CRM package gives crmsync.

An adapter package registers one :class:`AdapterSpec` from its ``register_adapters`` hook. The spec is the
capability manifest (name, settings model, largest batch, default rate limit, remote-id column) and holds
a factory that builds the :class:`Adapter` for one run. The adapter maps contacts to the CRM's payloads,
sends them, and returns exactly one outcome per contact it was given; it raises
:class:`~crmsync_core.errors.FatalError` when the whole run must stop. It never touches the database.

An adapter also *reports* each request's outcomes as they arrive (:meth:`AdapterContext.report`), so that
what the CRM said about a contact is recorded whatever happens to the rest of the batch: a fatal answer to a
later request, a cancellation, a database error, a crash of a sibling request.

The one method, :meth:`Adapter.push`, fits every kind of CRM API: a loop of single calls (Brevo create),
one batch call that partly succeeds (HubSpot 207, Mautic ``statusCodes``), a bulk job that is polled until
done (Brevo import) and fire-and-forget webhooks (n8n).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .contacts import Contact, ContactId, Outcome
from .errors import CircuitOpenError, FatalError
from .ratelimit import Limiter, RateLimit, RateLimiter, RateLimits
from .retry import RequestRetry
from .settings import DEFAULT_MAX_RESPONSE_BYTES, SyncSettings

if TYPE_CHECKING:
    import httpx

    from .check import CheckContext, CheckResult
    from .history import PayloadSampler

SettingsT = TypeVar("SettingsT", bound=SyncSettings)
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class Adapter(Protocol):
    """One CRM, configured for one run."""

    async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
        """Send ``contacts`` (never more than the spec's ``max_batch_size``) and return one outcome for
        each, in any order. Call :meth:`AdapterContext.report` with each request's outcomes as soon as
        it is answered. Raise :class:`~crmsync_core.errors.FatalError` to stop the run: the engine
        records the outcomes already reported and hands the other contacts back to the queue
        untouched. Requests already sent should be let finish (not cancelled) before raising."""
        ...

    async def aclose(self) -> None:
        """Release connections. Called once, after the run."""
        ...


class ReportedOutcomes:
    """The outcomes of one batch, kept as the adapter reports them (first answer per contact wins).

    The engine makes one per batch; :func:`collect_outcomes` makes it the current one while the adapter
    pushes, so that :meth:`AdapterContext.report` (called from any task the adapter starts) lands here.
    It also keeps when each request in flight started, so that the engine stops renewing the claim of a
    batch whose request is past its deadline.
    """

    def __init__(self, contacts: Iterable[Contact]) -> None:
        self._wanted = {contact.id for contact in contacts}
        self._outcomes: dict[ContactId, Outcome] = {}
        self._aliases: dict[ContactId, list[ContactId]] = {}
        self._in_flight: dict[int, float] = {}
        self._next = 0
        self.closed = False

    def add(self, outcomes: Iterable[Outcome]) -> None:
        if self.closed:
            # The batch is settled: what arrives now (a request that outlived it) is not ours to write.
            return
        for outcome in outcomes:
            for contact_id in (outcome.contact_id, *self._aliases.get(outcome.contact_id, ())):
                if contact_id in self._wanted and contact_id not in self._outcomes:
                    self._outcomes[contact_id] = (
                        outcome
                        if contact_id == outcome.contact_id
                        else _with_id(outcome, contact_id)
                    )

    def alias(self, contact_id: ContactId, same: Iterable[ContactId]) -> None:
        """Outcomes reported for ``contact_id`` hold for ``same`` too (one request for several rows)."""
        self._aliases.setdefault(contact_id, []).extend(same)

    def outcomes(self) -> list[Outcome]:
        """The outcomes reported so far."""
        return list(self._outcomes.values())

    def answered(self) -> set[ContactId]:
        return set(self._outcomes)

    @contextlib.contextmanager
    def request(self) -> Iterator[None]:
        """Mark one request in flight for as long as the block runs."""
        key = self._next
        self._next += 1
        self._in_flight[key] = time.monotonic()
        try:
            yield
        finally:
            self._in_flight.pop(key, None)

    def oldest_request_seconds(self) -> float:
        """How long the oldest request in flight has been going (0 when none is)."""
        if not self._in_flight:
            return 0.0
        return time.monotonic() - min(self._in_flight.values())


def _with_id(outcome: Outcome, contact_id: ContactId) -> Outcome:
    import dataclasses

    return dataclasses.replace(outcome, contact_id=contact_id)


_CURRENT_BATCH: contextvars.ContextVar[ReportedOutcomes | None] = contextvars.ContextVar(
    "crmsync_current_batch", default=None
)


class CircuitBreaker:
    """Counts a CRM's consecutive connection errors, timeouts and 5xx during one run.

    After ``failures`` of them in a row (with no answer in between) it opens: the request that failed and
    every later one raise :class:`~crmsync_core.errors.CircuitOpenError`, so the run stops and the
    contacts not answered go back to the queue without an attempt. ``failures=0`` disables it. The engine
    keeps the open state in the store, shared by every worker, and probes the CRM after a cool-down.
    """

    def __init__(self, failures: int = 0, *, crm: str = "crm", resume_after: float = 0.0) -> None:
        self.threshold = failures
        self.crm = crm
        self.resume_after = resume_after
        self.consecutive = 0
        self.opened: CircuitOpenError | None = None
        self.last_failure = ""
        #: the fatal error that stopped the run (kept here so that copies of a context share it)
        self.halted: FatalError | None = None

    def success(self) -> None:
        """The CRM answered (anything but a 5xx)."""
        if self.opened is None:
            self.consecutive = 0

    def failure(self, reason: str) -> None:
        """A connection error, timeout or 5xx."""
        self.consecutive += 1
        self.last_failure = reason
        if self.opened is None and self.threshold and self.consecutive >= self.threshold:
            self.opened = CircuitOpenError(
                f"{self.crm} is paused after {self.consecutive} connection errors, timeouts or 5xx "
                f"in a row (last: {reason}); contacts not answered stay queued with no attempt used",
                resume_after=self.resume_after,
            )

    def check(self) -> None:
        if self.opened is not None:
            raise self.opened


@dataclass(slots=True)
class AdapterContext:
    """What the engine hands an adapter factory besides its settings."""

    rate_limiter: RateLimiter
    request_retry: RequestRetry = field(default_factory=RequestRetry)
    #: an ``httpx.AsyncBaseTransport`` to send requests through instead of the network (sandboxes, tests)
    transport: httpx.AsyncBaseTransport | None = None
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("crmsync"))
    #: the largest response body :class:`~crmsync_core.http.CrmClient` reads (``{CRM}_SYNC_MAX_RESPONSE_BYTES``)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: the longest one HTTP exchange may take, all reads included (``None``: 3 times the client's timeout)
    request_deadline: float | None = None
    #: the run's circuit breaker (disabled unless the engine sets one)
    circuit: CircuitBreaker = field(default_factory=CircuitBreaker)
    #: called after each HTTP exchange with the status code (``None``: no answer) and its seconds
    on_response: Callable[[int | None, float], None] | None = None
    #: which requests' exchanges the run history keeps (``None``: payload capture is off)
    payloads: PayloadSampler | None = None

    @property
    def halted(self) -> FatalError | None:
        """The fatal error that stopped the run: no request is sent after it."""
        return self.circuit.halted

    def report(self, outcomes: Outcome | Iterable[Outcome]) -> None:
        """Record what the CRM answered to one request, at once: the engine keeps it whatever happens to
        the rest of the batch. Adapters call this after each request; outside a batch it does nothing."""
        batch = _CURRENT_BATCH.get()
        if batch is None:
            return
        if isinstance(outcomes, Iterable):
            batch.add(outcomes)
        else:
            batch.add([outcomes])

    def same_contact(self, contact_id: ContactId, others: Iterable[ContactId]) -> None:
        """Say that one request stands for several contacts (e.g. rows sharing an e-mail address): what
        is reported for ``contact_id`` holds for ``others``."""
        batch = _CURRENT_BATCH.get()
        if batch is not None:
            batch.alias(contact_id, others)

    def halt(self, error: FatalError) -> FatalError:
        """Stop sending: every later request of this run raises ``error``. Returns ``error``."""
        if self.circuit.halted is None:
            self.circuit.halted = error
        return error

    def check(self) -> None:
        """Raise if no request may be sent now (the run halted, or the circuit is open)."""
        if self.halted is not None:
            raise self.halted
        self.circuit.check()

    def in_flight(self) -> contextlib.AbstractContextManager[None]:
        """Mark one request in flight (the engine renews a claim only while its requests are on time)."""
        batch = _CURRENT_BATCH.get()
        return batch.request() if batch is not None else contextlib.nullcontext()

    @classmethod
    def for_testing(
        cls,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        rate_limit: RateLimit | None = None,
        request_retry: RequestRetry | None = None,
    ) -> AdapterContext:
        """A context for driving an adapter directly: no rate limit and no waits unless asked."""
        from .retry import NO_WAIT

        return cls(
            rate_limiter=Limiter(rate_limit),
            request_retry=request_retry or NO_WAIT,
            transport=transport,
        )


@dataclass(frozen=True, slots=True)
class SandboxOptions:
    """How a sandbox CRM misbehaves, for the demo and the tests."""

    #: share of requests answered with a transient error (5xx or a dropped connection)
    failure_rate: float = 0.0
    #: the rate limit the sandbox enforces with the CRM's own 429 answers and headers
    rate_limit: RateLimit | None = None
    seed: int = 0


@dataclass(slots=True)
class Sandbox(Generic[SettingsT]):
    """An in-process stand-in for a CRM: settings that point at it, and the transport that serves it
    (``None`` for adapters that send no HTTP, like the core's sandbox adapter)."""

    settings: SettingsT
    transport: httpx.AsyncBaseTransport | None
    #: the stateful fake behind the transport, for inspection (contacts it holds, requests it saw)
    fake: Any = None


@dataclass(frozen=True)
class AdapterSpec(Generic[SettingsT]):
    """The capability manifest of one CRM adapter."""

    name: str
    settings_model: type[SettingsT]
    factory: Callable[[SettingsT, AdapterContext], Adapter]
    #: the most contacts one ``push`` may be given
    max_batch_size: int
    #: the CRM's default request budget (``None``: unlimited); settings can override it
    rate_limit: RateLimit | None
    #: whether one request can succeed for some contacts and fail for others
    partial_success: bool
    #: the column that keeps the CRM's id; defaults to ``{name}_contact_id``
    remote_id_column: str | None = None
    #: builds an in-process sandbox of the CRM (for ``crmsync demo`` and the contract tests)
    sandbox: Callable[[SandboxOptions], Sandbox[SettingsT]] | None = None
    #: one line for ``crmsync adapters``
    description: str = ""
    #: reads the CRM account and says whether it is ready (credentials, mapped fields, ...) without
    #: changing anything; see :mod:`crmsync_core.check`. With ``context.scope == "fields"`` only the
    #: mapped fields are checked (the engine's preflight), as cheaply as the CRM allows.
    check: Callable[[SettingsT, CheckContext], Awaitable[Sequence[CheckResult]]] | None = None
    #: the CRM's buckets as the settings make them (e.g. Brevo's contacts and other endpoints); ``None``:
    #: one bucket of ``rate_limit`` for every request. ``{CRM}_SYNC_RATE_LIMIT_*`` overrides the first.
    rate_limits: Callable[[SettingsT], RateLimits] | None = None

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(
                f"adapter name {self.name!r} must be lower-case letters, digits and underscores, "
                "starting with a letter (it becomes part of column and environment names)"
            )
        if not (
            isinstance(self.settings_model, type) and issubclass(self.settings_model, SyncSettings)
        ):
            raise TypeError(f"adapter {self.name!r}: settings_model must subclass SyncSettings")
        if self.max_batch_size < 1:
            raise ValueError(f"adapter {self.name!r}: max_batch_size must be at least 1")
        if not callable(self.factory):
            raise TypeError(f"adapter {self.name!r}: factory must be callable")

    def limits_for(self, settings: SettingsT) -> RateLimits:
        """The request budget a run with ``settings`` keeps to."""
        limits = (
            self.rate_limits(settings) if self.rate_limits else RateLimits.single(self.rate_limit)
        )
        return limits.with_primary(settings.rate_limit(None))

    @property
    def remote_id_column_name(self) -> str:
        return self.remote_id_column or f"{self.name}_contact_id"

    def capabilities(self) -> dict[str, object]:
        """The manifest as plain data (``crmsync adapters`` prints it)."""
        return {
            "name": self.name,
            "max_batch_size": self.max_batch_size,
            "rate_limit": (
                {
                    "requests": self.rate_limit.requests,
                    "period_seconds": self.rate_limit.period_seconds,
                }
                if self.rate_limit
                else None
            ),
            "partial_success": self.partial_success,
            "remote_id_column": self.remote_id_column_name,
            "settings_env_prefix": self.settings_model.model_config.get("env_prefix", ""),
            "sandbox": self.sandbox is not None,
            "check": self.check is not None,
        }


async def collect_outcomes(
    adapter: Adapter,
    contacts: Sequence[Contact],
    *,
    crm: str = "adapter",
    reported: ReportedOutcomes | None = None,
) -> list[Outcome]:
    """Call :meth:`Adapter.push` and hold it to the protocol: exactly one outcome per contact.

    Outcomes the adapter reported while pushing (:meth:`AdapterContext.report`) are kept in ``reported``
    and stand whatever happens afterwards. A :class:`~crmsync_core.errors.TransientError` or
    :class:`~crmsync_core.errors.PermanentError` raised for the whole batch becomes that outcome for
    every contact not reported; any other exception except :class:`~crmsync_core.errors.FatalError` and
    :class:`~crmsync_core.errors.StoreError` (which the caller handles, reading ``reported``) becomes a
    transient failure naming the adapter's bug. A contact the adapter forgot gets a transient failure,
    and outcomes for contacts it was not given are dropped, so a contact never silently leaves the queue.
    """
    from .contacts import PermanentFailure, TransientFailure
    from .errors import PermanentError, StoreError, TransientError

    batch = reported if reported is not None else ReportedOutcomes(contacts)
    token = _CURRENT_BATCH.set(batch)
    try:
        outcomes: Sequence[Outcome] = await adapter.push(contacts)
    except (FatalError, StoreError):
        raise
    except TransientError as exc:
        outcomes = [TransientFailure(c.id, exc.message, exc.retry_after) for c in contacts]
        return _merge(batch.outcomes(), outcomes, contacts, crm, complain=False)
    except PermanentError as exc:
        outcomes = [PermanentFailure(c.id, exc.message) for c in contacts]
        return _merge(batch.outcomes(), outcomes, contacts, crm, complain=False)
    except Exception as exc:
        logging.getLogger("crmsync").exception("%s adapter raised an unexpected error", crm)
        reason = f"{crm} adapter raised {type(exc).__name__}: {exc}"[:500]
        outcomes = [TransientFailure(c.id, reason) for c in contacts]
        return _merge(batch.outcomes(), outcomes, contacts, crm, complain=False)
    finally:
        _CURRENT_BATCH.reset(token)
    # What push returns is the adapter's final word; what it reported fills any gap.
    return _merge(list(outcomes), batch.outcomes(), contacts, crm, complain=True)


def _merge(
    first: Sequence[Outcome],
    then: Sequence[Outcome],
    contacts: Sequence[Contact],
    crm: str,
    *,
    complain: bool,
) -> list[Outcome]:
    from .contacts import TransientFailure

    wanted = {c.id for c in contacts}
    by_id: dict[object, Outcome] = {}
    for outcome in first:
        if outcome.contact_id in wanted and outcome.contact_id not in by_id:
            by_id[outcome.contact_id] = outcome
    if complain and (len(by_id) != len(first) or len(by_id) != len(wanted)):
        missing = wanted - set(by_id)
        if len(by_id) != len(first) or missing - {o.contact_id for o in then}:
            logging.getLogger("crmsync").warning(
                "%s adapter returned %d outcomes for %d contacts; missing ones are retried",
                crm,
                len(first),
                len(wanted),
            )
    for outcome in then:
        if outcome.contact_id in wanted and outcome.contact_id not in by_id:
            by_id[outcome.contact_id] = outcome
    return [
        by_id.get(c.id)
        or TransientFailure(c.id, f"{crm} adapter returned no outcome for this contact")
        for c in contacts
    ]
