"""Contact -> Mautic contact payload (field aliases), and nothing else: no I/O, no settings lookups."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from crmsync_core.contacts import Contact


def contact_payload(
    contact: Contact,
    *,
    field_aliases: Mapping[str, str] | None = None,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """The JSON object for one contact in ``POST /api/contacts/batch/new``.

    ``email``, ``firstname``, ``lastname`` (the name split on its first space) and ``phone`` are Mautic's
    own aliases; ``field_aliases`` maps the other contact fields (``domain_id``, ``page_id``, ...) to
    custom field aliases. Blank values are left out, so they never overwrite what Mautic holds
    (``overwriteWithBlank`` is never sent). ``tags`` are added to the contact.
    """
    payload: dict[str, Any] = {}
    _put(payload, "email", contact.email)
    _put(payload, "firstname", contact.first_name)
    _put(payload, "lastname", contact.last_name)
    _put(payload, "phone", contact.phone_number)
    for field, alias in (field_aliases or {}).items():
        _put(payload, alias, getattr(contact, field))
    if tags:
        payload["tags"] = list(tags)
    return payload


def _put(payload: dict[str, Any], alias: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        # Mautic stores a boolean field as 1/0 and accepts those in the API (UNCONFIRMED for
        # true/false, so the numbers are sent).
        payload[alias] = int(value)
        return
    if isinstance(value, int | float):
        payload[alias] = value
        return
    text = str(value).strip()
    if text:
        payload[alias] = text
