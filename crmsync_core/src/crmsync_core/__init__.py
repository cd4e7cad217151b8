"""crmsync: push contacts from a SQL table into CRMs.

The host queues contacts for a CRM (:class:`Store`), the :class:`Engine` drains the queue through the
CRM's adapter, and the status machine and retry policy decide what each outcome means.

Names are imported on first use (module ``__getattr__``), so that ``import crmsync_core`` and the
``crmsync`` command line start fast and load SQLAlchemy, httpx and the drivers only when something needs
them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import Adapter, AdapterContext, AdapterSpec, Sandbox, SandboxOptions
    from .check import CheckResult, run_checks
    from .contacts import Contact, Outcome, PermanentFailure, Skipped, Synced, TransientFailure
    from .engine import Engine
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
    from .queue import ContactState, QueueResult, StatusSummary
    from .ratelimit import RateLimit
    from .report import RunReport
    from .retry import RequestRetry, RetryPolicy
    from .settings import SyncSettings
    from .status import ProcessingStatus, SyncStatus
    from .store import Store
    from .worker import Worker

__all__ = [
    "Adapter",
    "AdapterContext",
    "AdapterError",
    "AdapterNotInstalledError",
    "AdapterSpec",
    "AuthenticationError",
    "CheckResult",
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
    "run_checks",
]

#: public name -> the submodule that defines it
_LAZY: dict[str, str] = {
    "Adapter": "adapter",
    "AdapterContext": "adapter",
    "AdapterError": "errors",
    "AdapterNotInstalledError": "errors",
    "AdapterSpec": "adapter",
    "AuthenticationError": "errors",
    "CircuitOpenError": "errors",
    "CheckResult": "check",
    "ConfigurationError": "errors",
    "Contact": "contacts",
    "ContactFilter": "filters",
    "ContactState": "queue",
    "CrmColumns": "layout",
    "CrmsyncError": "errors",
    "DatabaseUnavailableError": "errors",
    "EmailType": "filters",
    "Engine": "engine",
    "FatalError": "errors",
    "IllegalTransitionError": "errors",
    "InvalidRequestError": "errors",
    "Layout": "layout",
    "MalformedResponseError": "errors",
    "Outcome": "contacts",
    "PermanentError": "errors",
    "PermanentFailure": "contacts",
    "ProcessingStatus": "status",
    "QueueResult": "queue",
    "RateLimit": "ratelimit",
    "RateLimitExhaustedError": "errors",
    "Registry": "plugins",
    "RequestRetry": "retry",
    "RetryPolicy": "retry",
    "RunReport": "report",
    "Sandbox": "adapter",
    "SandboxOptions": "adapter",
    "Skipped": "contacts",
    "StatusSummary": "queue",
    "Store": "store",
    "StoreError": "errors",
    "SyncSettings": "settings",
    "SyncStatus": "status",
    "Synced": "contacts",
    "TransientError": "errors",
    "TransientFailure": "contacts",
    "Worker": "worker",
    "hookimpl": "hookspecs",
    "register_plugin": "plugins",
    "run_checks": "check",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
