"""What n8n receives: ScraperSky's contact object, and the idempotency key of a request.

The default object is exactly what ScraperSky posts today, key for key and in this order::

    {"contact_id": "5f0c…", "email": "anna@acme.io", "name": "Anna Müller",
     "scrapersky_domain_id": "9b2e…", "scrapersky_page_id": "41d7…",
     "timestamp": "2026-11-22T15:04:05.123456Z"}

Ids are strings (ScraperSky's UUIDs), missing values are ``null``. ``timestamp`` is the time of sending
in UTC, ISO-8601 ending in ``Z``, which is all that is known of ScraperSky's format. We always write
six fractional digits, so the string has one fixed length; a workflow that parses it (n8n's Luxon
``DateTime.fromISO``, JavaScript's ``new Date``) reads it whatever the precision.

The idempotency key is the SHA-256 of the object without its ``timestamp``, as canonical JSON (sorted
keys, no spaces, UTF-8). Sending the same contact data again gives the same key; a changed field gives
a new one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from crmsync_core.contacts import Contact

#: the keys of ScraperSky's object, in its order
SCRAPERSKY_FIELDS = (
    "contact_id",
    "email",
    "name",
    "scrapersky_domain_id",
    "scrapersky_page_id",
    "timestamp",
)

_EXTRA: dict[str, Callable[[Contact], Any]] = {
    "first_name": lambda c: c.first_name,
    "last_name": lambda c: c.last_name,
    "phone_number": lambda c: c.phone_number,
    "email_type": lambda c: c.email_type,
    "has_gmail": lambda c: c.has_gmail,
    "source_url": lambda c: c.source_url,
    "context": lambda c: c.context,
}
#: contact fields that can be sent besides ScraperSky's (``N8N_EXTRA_FIELDS``), under these names
EXTRA_FIELDS = tuple(_EXTRA)


def format_timestamp(moment: datetime) -> str:
    """``2026-11-22T15:04:05.123456Z``: ``moment`` in UTC (naive values are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _id(value: object) -> str | None:
    return None if value is None else str(value)


def contact_payload(
    contact: Contact, *, sent_at: datetime, extra_fields: Iterable[str] = ()
) -> dict[str, Any]:
    """The JSON object for ``contact``: ScraperSky's six keys, then the chosen ``extra_fields``."""
    payload: dict[str, Any] = {
        "contact_id": _id(contact.id),
        "email": contact.email.strip() if contact.email else contact.email,
        "name": contact.name,
        "scrapersky_domain_id": _id(contact.domain_id),
        "scrapersky_page_id": _id(contact.page_id),
        "timestamp": format_timestamp(sent_at),
    }
    for name in extra_fields:
        payload[name] = _EXTRA[name](contact)
    return payload


def idempotency_key(body: dict[str, Any] | Sequence[dict[str, Any]]) -> str:
    """The key of a request body (one object or an array of them), blind to ``timestamp``."""
    if isinstance(body, dict):
        stable: Any = _without_timestamp(body)
    else:
        stable = [_without_timestamp(item) for item in body]
    canonical = json.dumps(stable, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _without_timestamp(item: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in item.items() if key != "timestamp"}
