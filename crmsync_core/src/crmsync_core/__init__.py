"""crmsync: push contacts from a SQL table into CRMs.

The host queues contacts for a CRM (:class:`Store`), the :class:`Engine` drains the queue through the
CRM's adapter, and the status machine and retry policy decide what each outcome means.
"""

from .adapter import Adapter, AdapterContext, AdapterSpec, Sandbox, SandboxOptions
from .contacts import Contact, Outcome, PermanentFailure, Skipped, Synced, TransientFailure
from .engine import Engine, RunReport
from .errors import (
    AdapterError,
    AdapterNotInstalledError,
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    CrmsyncError,
    DatabaseUnavailableError,
    FatalError,
    IllegalTransitionError,
    InvalidRequestError,
    MalformedResponseError,
    PermanentError,
    RateLimitExhaustedError,
    StoreError,
    TransientError,
)
from .filters import ContactFilter, EmailType
from .hookspecs import hookimpl
from .layout import CrmColumns, Layout
from .plugins import Registry, register_plugin
from .ratelimit import RateLimit
from .retry import RequestRetry, RetryPolicy
from .settings import SyncSettings
from .status import ProcessingStatus, SyncStatus
from .store import ContactState, QueueResult, StatusSummary, Store
from .worker import Worker

__all__ = [
    "Adapter",
    "AdapterContext",
    "AdapterError",
    "AdapterNotInstalledError",
    "AdapterSpec",
    "AuthenticationError",
    "CircuitOpenError",
    "ConfigurationError",
    "Contact",
    "ContactFilter",
    "ContactState",
    "CrmColumns",
    "CrmsyncError",
    "DatabaseUnavailableError",
    "EmailType",
    "Engine",
    "FatalError",
    "IllegalTransitionError",
    "InvalidRequestError",
    "Layout",
    "MalformedResponseError",
    "Outcome",
    "PermanentError",
    "PermanentFailure",
    "ProcessingStatus",
    "QueueResult",
    "RateLimit",
    "RateLimitExhaustedError",
    "Registry",
    "RequestRetry",
    "RetryPolicy",
    "RunReport",
    "Sandbox",
    "SandboxOptions",
    "Skipped",
    "StatusSummary",
    "Store",
    "StoreError",
    "SyncSettings",
    "SyncStatus",
    "Synced",
    "TransientError",
    "TransientFailure",
    "Worker",
    "hookimpl",
    "register_plugin",
]
