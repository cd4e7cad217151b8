"""crmsync adapter for Brevo: contact upserts, and bulk imports for volume.

Installing ``crmsync-brevo`` registers the ``brevo`` CRM. Configure it with ``BREVO_*`` environment
variables (see :class:`BrevoSettings`); test against :class:`FakeBrevo`, a stateful fake of Brevo's API.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapter import SPEC, BrevoAdapter, parse_email_report, rate_limits
    from .fake import FakeBrevo, ManualClock, make_sandbox
    from .mapping import AttributeNames, BrevoContact, map_contact, normalize_phone
    from .settings import BrevoSettings

__all__ = [
    "SPEC",
    "AttributeNames",
    "BrevoAdapter",
    "BrevoContact",
    "BrevoSettings",
    "FakeBrevo",
    "ManualClock",
    "make_sandbox",
    "map_contact",
    "normalize_phone",
    "parse_email_report",
    "rate_limits",
]

# Imported on first use: the ``crmsync`` entry point loads this package to find its plugin, and the
# command line must not pay for the adapter, its HTTP client and its fake to print its help.
_LAZY: dict[str, str] = {
    "AttributeNames": "mapping",
    "BrevoAdapter": "adapter",
    "BrevoContact": "mapping",
    "BrevoSettings": "settings",
    "FakeBrevo": "fake",
    "ManualClock": "fake",
    "SPEC": "adapter",
    "make_sandbox": "fake",
    "map_contact": "mapping",
    "normalize_phone": "mapping",
    "parse_email_report": "adapter",
    "rate_limits": "adapter",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
