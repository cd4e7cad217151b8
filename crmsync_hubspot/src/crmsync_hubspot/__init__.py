"""crmsync adapter for HubSpot: contacts upserted by e-mail, 100 per request."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import SPEC, HubspotAdapter
    from .fake import FakeHubspot, make_sandbox
    from .properties import PropertyStatus, create_properties
    from .settings import HubspotSettings

__all__ = [
    "SPEC",
    "FakeHubspot",
    "HubspotAdapter",
    "HubspotSettings",
    "PropertyStatus",
    "create_properties",
    "make_sandbox",
]

# Imported on first use: the ``crmsync`` entry point loads this package to find its plugin, and the
# command line must not pay for the adapter, its HTTP client and its fake to print its help.
_LAZY: dict[str, str] = {
    "FakeHubspot": "fake",
    "HubspotAdapter": "adapter",
    "HubspotSettings": "settings",
    "PropertyStatus": "properties",
    "SPEC": "adapter",
    "create_properties": "properties",
    "make_sandbox": "fake",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
