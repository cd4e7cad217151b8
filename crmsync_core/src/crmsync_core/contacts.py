"""What an adapter is given (:class:`Contact`) and what it gives back (an :data:`Outcome` per contact)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeAlias
from uuid import UUID

if TYPE_CHECKING:
    from .history import Exchange

#: The primary key of the host's contacts table: a UUID in ScraperSky, any scalar elsewhere.
ContactId: TypeAlias = UUID | int | str


@dataclass(frozen=True, slots=True)
class Contact:
    """One contact as the adapters see it: the fields they map from, never a database row."""

    id: ContactId
    email: str | None
    name: str | None = None
    phone_number: str | None = None
    email_type: str | None = None
    has_gmail: bool | None = None
    source_url: str | None = None
    domain_id: ContactId | None = None
    page_id: ContactId | None = None
    context: str | None = None
    #: failed attempts so far for this CRM (0 on the first try)
    attempts: int = 0

    @property
    def first_name(self) -> str | None:
        """The name up to its first space (ScraperSky's split)."""
        return _split_name(self.name)[0]

    @property
    def last_name(self) -> str | None:
        """The name after its first space, or ``None``."""
        return _split_name(self.name)[1]


def _split_name(name: str | None) -> tuple[str | None, str | None]:
    if not name or not name.strip():
        return None, None
    first, _, last = name.strip().partition(" ")
    return first, (last.strip() or None)


@dataclass(frozen=True, slots=True)
class Synced:
    """The CRM has the contact. ``remote_id`` is the CRM's id for it, when the CRM says.

    ``fallback_id`` is what to record when the CRM gave no id and none is known yet (e.g. the e-mail,
    by which Brevo also addresses a contact): it never replaces a remote id already recorded, so a
    re-delivered contact keeps the id the CRM gave it first.
    """

    contact_id: ContactId
    remote_id: str | None = None
    fallback_id: str | None = None
    #: the CRM's HTTP status code for the request, when the adapter says (kept in the run history;
    #: not part of equality: the outcome is the same whatever the code)
    status_code: int | None = field(default=None, compare=False)
    #: the request and response behind this outcome, when the run history's payload capture kept them
    exchange: Exchange | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class Skipped:
    """Not sent, and not worth sending as it is (e.g. an invalid e-mail). Uses no attempt."""

    contact_id: ContactId
    reason: str


@dataclass(frozen=True, slots=True)
class TransientFailure:
    """Failed for a reason that may go away; retried after the policy's delay (or ``retry_after``
    seconds, whichever is longer) while attempts are left."""

    contact_id: ContactId
    reason: str
    retry_after: float | None = None
    #: the CRM's HTTP status code, when the request got an answer and the adapter says
    status_code: int | None = field(default=None, compare=False)
    #: the request and response behind this outcome, when the run history's payload capture kept them
    exchange: Exchange | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class PermanentFailure:
    """The CRM rejected the contact's data: it goes to ``Error`` at once, without using up retries."""

    contact_id: ContactId
    reason: str
    #: the CRM's HTTP status code, when the adapter says
    status_code: int | None = field(default=None, compare=False)
    #: the request and response behind this outcome, when the run history's payload capture kept them
    exchange: Exchange | None = field(default=None, compare=False, repr=False)


Outcome: TypeAlias = Synced | Skipped | TransientFailure | PermanentFailure


# Deliberately strict on shape and lenient on characters: one @, a dotted domain, no spaces. CRMs reject
# less than this lets through only in exotic cases, which then come back as permanent failures.
_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,63}$"
)


def invalid_email_reason(email: str | None) -> str | None:
    """Why ``email`` cannot be sent to a CRM, or ``None`` when it looks deliverable."""
    if email is None or not email.strip():
        return "no e-mail address"
    email = email.strip()
    if len(email) > 254:
        return "e-mail address longer than 254 characters"
    if not _EMAIL.match(email) or ".." in email or email.split("@", 1)[0].endswith("."):
        return f"invalid e-mail address {email[:80]!r}"
    return None


def split_sendable(contacts: Iterable[Contact]) -> tuple[list[Contact], list[Skipped]]:
    """The contacts worth a request, and a :class:`Skipped` (with the reason) for each of the others.

    Adapters call this first: a contact with no or an invalid e-mail address is skipped before any
    request is made.
    """
    sendable: list[Contact] = []
    skipped: list[Skipped] = []
    for contact in contacts:
        reason = invalid_email_reason(contact.email)
        if reason is None:
            sendable.append(contact)
        else:
            skipped.append(Skipped(contact.id, reason))
    return sendable, skipped
