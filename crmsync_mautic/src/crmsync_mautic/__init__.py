"""crmsync adapter for Mautic: batch upsert by e-mail, HTTP Basic or OAuth 2 client credentials."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import SPEC, MauticAdapter, TokenCache, api_root
    from .fake import FakeMautic, make_sandbox
    from .mapping import contact_payload
    from .settings import MauticSettings

__all__ = [
    "SPEC",
    "FakeMautic",
    "MauticAdapter",
    "MauticSettings",
    "TokenCache",
    "api_root",
    "contact_payload",
    "make_sandbox",
]

# Imported on first use: the ``crmsync`` entry point loads this package to find its plugin, and the
# command line must not pay for the adapter, its HTTP client and its fake to print its help.
_LAZY: dict[str, str] = {
    "FakeMautic": "fake",
    "MauticAdapter": "adapter",
    "MauticSettings": "settings",
    "SPEC": "adapter",
    "TokenCache": "adapter",
    "api_root": "adapter",
    "contact_payload": "mapping",
    "make_sandbox": "fake",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
