"""Contacts to Brevo payloads: pure functions, no I/O.

The attributes are what ScraperSky sends today (``FIRSTNAME``/``LASTNAME`` from the name split on its
first space, ``SMS``, ``DOMAIN_ID``, ``PAGE_ID``, ``EMAIL_TYPE``, ``SOURCE_URL``, ``HAS_GMAIL``), under
names the settings can change. A value that is missing is left out rather than sent empty, so it never
erases what Brevo already holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from crmsync_core.contacts import Contact

AttributeValue = str | bool

# E.164: a country code that does not start with 0, then up to 15 digits in all.
_E164 = re.compile(r"^\+[1-9]\d{7,14}$")
_PHONE_PUNCTUATION = re.compile(r"[\s\-./()]")


@dataclass(frozen=True, slots=True)
class AttributeNames:
    """The Brevo attribute each contact field goes to; an empty name leaves the field out."""

    firstname: str = "FIRSTNAME"
    lastname: str = "LASTNAME"
    sms: str = "SMS"
    domain_id: str = "DOMAIN_ID"
    page_id: str = "PAGE_ID"
    email_type: str = "EMAIL_TYPE"
    source_url: str = "SOURCE_URL"
    has_gmail: str = "HAS_GMAIL"


@dataclass(frozen=True, slots=True)
class BrevoContact:
    """One contact as Brevo will receive it, and what was left out on the way."""

    email: str
    attributes: dict[str, AttributeValue]
    #: why a field was left out (e.g. a phone number without a country code), for the logs
    notes: tuple[str, ...] = ()

    def without(self, attribute: str) -> BrevoContact:
        """The same contact without ``attribute`` (used when Brevo refuses the phone number)."""
        kept = {k: v for k, v in self.attributes.items() if k != attribute}
        return BrevoContact(self.email, kept, self.notes)


def normalize_phone(raw: str | None) -> tuple[str | None, str | None]:
    """``(number, None)`` with the number in the ``+<country code><digits>`` form Brevo's ``SMS``
    attribute accepts, or ``(None, reason)`` when Brevo would reject it.

    ``00`` prefixes become ``+`` and a ``(0)`` trunk prefix after the country code is dropped. A number
    without a country code (``0612345678``) is refused rather than guessed: Brevo would read its
    first digits as one.
    """
    if raw is None or not raw.strip():
        return None, None
    text = raw.strip().replace("(0)", "")
    compact = _PHONE_PUNCTUATION.sub("", text)
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    if _E164.match(compact):
        return compact, None
    if compact.isdigit():
        return None, "phone number without a country code left out"
    return None, "phone number that is not a valid international number left out"


def map_contact(contact: Contact, names: AttributeNames) -> BrevoContact:
    """The Brevo form of ``contact``, whose e-mail must already be valid."""
    if contact.email is None:
        raise ValueError("map_contact needs a contact with an e-mail address")
    attributes: dict[str, AttributeValue] = {}
    notes: list[str] = []

    def put(name: str, value: object) -> None:
        if not name or value is None:
            return
        if isinstance(value, bool):
            attributes[name] = value
            return
        text = str(value).strip()
        if text:
            attributes[name] = text

    put(names.firstname, contact.first_name)
    put(names.lastname, contact.last_name)
    if names.sms:
        phone, reason = normalize_phone(contact.phone_number)
        put(names.sms, phone)
        if reason:
            notes.append(reason)
    put(names.domain_id, contact.domain_id)
    put(names.page_id, contact.page_id)
    put(names.email_type, contact.email_type)
    put(names.source_url, contact.source_url)
    put(names.has_gmail, contact.has_gmail)
    return BrevoContact(contact.email.strip(), attributes, tuple(notes))


def create_contact_body(contact: BrevoContact, list_id: int | None) -> dict[str, Any]:
    """The body of ``POST /contacts``: an upsert by e-mail (``updateEnabled``)."""
    body: dict[str, Any] = {
        "email": contact.email,
        "attributes": contact.attributes,
        "updateEnabled": True,
    }
    if list_id is not None:
        body["listIds"] = [list_id]
    return body


def import_item(contact: BrevoContact) -> dict[str, Any]:
    """One element of the ``jsonBody`` of ``POST /contacts/import``."""
    return {"email": contact.email, "attributes": contact.attributes}


def import_body(items: list[dict[str, Any]], list_id: int) -> dict[str, Any]:
    """The body of ``POST /contacts/import``: update existing contacts, keep what is not sent, and do
    not e-mail the account owner about every scheduled import."""
    return {
        "jsonBody": items,
        "listIds": [list_id],
        "updateExistingContacts": True,
        "emptyContactsAttributes": False,
        "disableNotification": True,
    }
