"""crmsync adapter for Brevo: contact upserts, and bulk imports for volume.

Installing ``crmsync-brevo`` registers the ``brevo`` CRM. Configure it with ``BREVO_*`` environment
variables (see :class:`BrevoSettings`); test against :class:`FakeBrevo`, a stateful fake of Brevo's API.
"""

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
