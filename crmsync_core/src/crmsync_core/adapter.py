"""The adapter protocol: what a CRM package gives crmsync.

An adapter package registers one :class:`AdapterSpec` from its ``register_adapters`` hook. The spec is the
capability manifest (name, settings model, largest batch, default rate limit, remote-id column) and holds
a factory that builds the :class:`Adapter` for one run. The adapter maps contacts to the CRM's payloads,
sends them, and returns exactly one outcome per contact it was given; it raises
:class:`~crmsync_core.errors.FatalError` when the whole run must stop. It never touches the database.

The one method, :meth:`Adapter.push`, fits every kind of CRM API: a loop of single calls (Brevo create),
one batch call that partly succeeds (HubSpot 207, Mautic ``statusCodes``), a bulk job that is polled until
done (Brevo import) and fire-and-forget webhooks (n8n).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .contacts import Contact, Outcome
from .ratelimit import Limiter, RateLimit, RateLimiter, RateLimits
from .retry import RequestRetry
from .settings import DEFAULT_MAX_RESPONSE_BYTES, SyncSettings

if TYPE_CHECKING:
    import httpx

    from .check import CheckContext, CheckResult

SettingsT = TypeVar("SettingsT", bound=SyncSettings)
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,30}$")


class Adapter(Protocol):
    """One CRM, configured for one run."""

    async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
        """Send ``contacts`` (never more than the spec's ``max_batch_size``) and return one outcome for
        each, in any order. Raise :class:`~crmsync_core.errors.FatalError` to stop the run: the engine
        then hands every claimed contact back to the queue untouched."""
        ...

    async def aclose(self) -> None:
        """Release connections. Called once, after the run."""
        ...


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
    adapter: Adapter, contacts: Sequence[Contact], *, crm: str = "adapter"
) -> list[Outcome]:
    """Call :meth:`Adapter.push` and hold it to the protocol: exactly one outcome per contact.

    A :class:`~crmsync_core.errors.TransientError` or :class:`~crmsync_core.errors.PermanentError`
    raised for the whole batch becomes that outcome for every contact; any other exception except
    :class:`~crmsync_core.errors.FatalError` becomes a transient failure naming the adapter's bug. A
    contact the adapter forgot gets a transient failure, and outcomes for contacts it was not given are
    dropped, so a contact never silently leaves the queue.
    """
    from .contacts import PermanentFailure, TransientFailure
    from .errors import FatalError, PermanentError, TransientError

    try:
        outcomes = await adapter.push(contacts)
    except FatalError:
        raise
    except TransientError as exc:
        return [TransientFailure(c.id, exc.message, exc.retry_after) for c in contacts]
    except PermanentError as exc:
        return [PermanentFailure(c.id, exc.message) for c in contacts]
    except Exception as exc:
        logging.getLogger("crmsync").exception("%s adapter raised an unexpected error", crm)
        reason = f"{crm} adapter raised {type(exc).__name__}: {exc}"[:500]
        return [TransientFailure(c.id, reason) for c in contacts]

    wanted = {c.id for c in contacts}
    by_id: dict[object, Outcome] = {}
    for outcome in outcomes:
        if outcome.contact_id in wanted and outcome.contact_id not in by_id:
            by_id[outcome.contact_id] = outcome
    if len(by_id) != len(outcomes) or len(by_id) != len(wanted):
        logging.getLogger("crmsync").warning(
            "%s adapter returned %d outcomes for %d contacts; missing ones are retried",
            crm,
            len(outcomes),
            len(wanted),
        )
    return [
        by_id.get(c.id)
        or TransientFailure(c.id, f"{crm} adapter returned no outcome for this contact")
        for c in contacts
    ]
