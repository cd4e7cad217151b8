"""Which contacts a queue-by-filter operation selects (design.md section 7)."""

from __future__ import annotations

import enum
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from .status import SyncStatus


class EmailType(enum.StrEnum):
    """ScraperSky's ``contact_email_type_enum``."""

    SERVICE = "SERVICE"
    CORPORATE = "CORPORATE"
    FREE = "FREE"
    UNKNOWN = "UNKNOWN"


class ContactFilter(BaseModel):
    """Conditions that all hold for a contact to be selected. An empty filter selects every contact.

    ``processing_status`` and ``sync_status`` refer to the CRM being queued; ``processing_status="none"``
    selects contacts with no processing status. ``curation_status`` needs a table that has one
    (ScraperSky's ``contact_curation_status``). Text conditions match case-insensitively anywhere.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    curation_status: (
        Literal["New", "Queued", "Processing", "Complete", "Error", "Skipped"] | None
    ) = None
    processing_status: Literal["Queued", "Processing", "Complete", "Error", "none"] | None = None
    sync_status: SyncStatus | None = None
    email_type: EmailType | None = None
    domain_id: UUID | int | None = None
    page_id: UUID | int | None = None
    email_contains: str | None = Field(None, min_length=1, max_length=320)
    name_contains: str | None = Field(None, min_length=1, max_length=320)
    has_gmail: bool | None = None
