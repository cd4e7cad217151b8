"""crmsync adapter for n8n: posts contacts to an n8n Webhook node in ScraperSky's format."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import IDEMPOTENCY_HEADER, SPEC, N8nAdapter
    from .fake import FakeN8n, Received, make_sandbox
    from .mapping import EXTRA_FIELDS, SCRAPERSKY_FIELDS, contact_payload, idempotency_key
    from .settings import N8nSettings

__all__ = [
    "EXTRA_FIELDS",
    "IDEMPOTENCY_HEADER",
    "SCRAPERSKY_FIELDS",
    "SPEC",
    "FakeN8n",
    "N8nAdapter",
    "N8nSettings",
    "Received",
    "contact_payload",
    "idempotency_key",
    "make_sandbox",
]

# Imported on first use: the ``crmsync`` entry point loads this package to find its plugin, and the
# command line must not pay for the adapter, its HTTP client and its fake to print its help.
_LAZY: dict[str, str] = {
    "EXTRA_FIELDS": "mapping",
    "FakeN8n": "fake",
    "IDEMPOTENCY_HEADER": "adapter",
    "N8nAdapter": "adapter",
    "N8nSettings": "settings",
    "Received": "fake",
    "SCRAPERSKY_FIELDS": "mapping",
    "SPEC": "adapter",
    "contact_payload": "mapping",
    "idempotency_key": "mapping",
    "make_sandbox": "fake",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
