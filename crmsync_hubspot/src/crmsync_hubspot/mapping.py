"""Contacts to HubSpot batch-upsert inputs. Pure functions: no I/O, no clock.

The properties are the ones ScraperSky sends today: ``email``, ``firstname`` / ``lastname`` (the name split
on its first space), ``phone``, and three custom properties whose names are settings. Every value is a
string, as HubSpot's API requires. A field the contact does not have is left out rather than sent empty,
because HubSpot clears a property given an empty string.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from crmsync_core.contacts import Contact, Skipped, split_sendable

from .settings import HubspotSettings

ID_PROPERTY = "email"
#: inputs per batch upsert request. ASSUMED (a third-party figure, not in the upsert reference): the
#: adapter never sends more, and the fake refuses more, so a lower real limit shows as a 400 to bisect.
MAX_INPUTS = 100


@dataclass(frozen=True, slots=True)
class UpsertInput:
    """One input of a batch upsert: every contact that shares a (lower-cased) e-mail."""

    email: str
    properties: dict[str, str]
    contacts: tuple[Contact, ...]

    def to_json(self) -> dict[str, Any]:
        # objectWriteTraceId is HubSpot's handle for pointing errors at inputs (see adapter.py). The
        # e-mail is unique within a batch, so it serves, and it is what the input's id already says.
        return {
            "idProperty": ID_PROPERTY,
            "id": self.email,
            "objectWriteTraceId": self.email,
            "properties": self.properties,
        }


def normalise_email(email: str) -> str:
    return email.strip().lower()


def contact_properties(
    contact: Contact, settings: HubspotSettings, sync_date: date
) -> dict[str, str]:
    """The HubSpot properties of one contact (its e-mail must already be valid)."""
    assert contact.email is not None
    properties = {"email": normalise_email(contact.email)}
    optional = {
        "firstname": contact.first_name,
        "lastname": contact.last_name,
        "phone": contact.phone_number.strip() if contact.phone_number else None,
        settings.custom_property_domain_id: _text(contact.domain_id),
        settings.custom_property_page_id: _text(contact.page_id),
    }
    properties.update({name: value for name, value in optional.items() if name and value})
    if settings.custom_property_sync_date:
        properties[settings.custom_property_sync_date] = sync_date.isoformat()
    return properties


def build_inputs(
    contacts: Iterable[Contact], settings: HubspotSettings, sync_date: date
) -> tuple[list[UpsertInput], list[Skipped]]:
    """Batch inputs for ``contacts``, one per distinct e-mail, and the contacts skipped as unsendable.

    HubSpot rejects a batch that names one e-mail twice, so contacts sharing an address become one
    input; the last of them provides its properties, and all of them share its outcome.
    """
    sendable, skipped = split_sendable(contacts)
    grouped: dict[str, list[Contact]] = {}
    for contact in sendable:
        assert contact.email is not None
        grouped.setdefault(normalise_email(contact.email), []).append(contact)
    inputs = [
        UpsertInput(email, contact_properties(group[-1], settings, sync_date), tuple(group))
        for email, group in grouped.items()
    ]
    return inputs, skipped


def request_body(inputs: Sequence[UpsertInput]) -> dict[str, Any]:
    """The JSON body of ``POST .../contacts/batch/upsert``."""
    return {"inputs": [item.to_json() for item in inputs]}


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None
