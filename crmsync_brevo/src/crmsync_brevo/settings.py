"""Brevo settings, read from ``BREVO_*`` environment variables or passed in code."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from crmsync_core.settings import SyncSettings, refuse_url_credentials

from .mapping import AttributeNames

_SCRAPERSKY_NAMES = AttributeNames()

DEFAULT_BASE_URL = "https://api.brevo.com/v3"
_ATTRIBUTE = re.compile(r"^[A-Z][A-Z0-9_]*$")


class BrevoSettings(SyncSettings):
    """How to reach Brevo and how contacts map onto its attributes.

    ``BREVO_API_KEY`` is required; everything else has a default. An attribute name set to an empty
    string (e.g. ``BREVO_ATTRIBUTE_HAS_GMAIL=``) is not sent at all.
    """

    model_config = SettingsConfigDict(env_prefix="BREVO_", extra="ignore", validate_default=True)

    api_key: SecretStr | None = None
    #: the list contacts are added to; ``None`` (or an empty ``BREVO_LIST_ID``) adds them to no list
    list_id: int | None = Field(None, ge=1)
    #: ScraperSky's name for it; point it at a sandbox or a proxy
    api_base_url: str = DEFAULT_BASE_URL

    #: above this many distinct contacts in one batch, the batch goes through ``POST /contacts/import``
    import_threshold: int = Field(100, ge=1)
    #: an import still running after this long is handed back as a transient failure
    import_timeout_seconds: float = Field(300.0, gt=0)
    #: first wait between two polls of an import; each later wait doubles, up to the ``other`` bucket's
    #: spacing (36 s at 100 per hour)
    import_poll_interval_seconds: float = Field(1.0, ge=0)
    #: Brevo's limit on every endpoint its limits page does not list, ``GET /processes/{id}`` (import
    #: polling) included: 100 per hour on the general tier, 200 on the advanced tier. Shared by the fleet.
    other_rate_limit_per_hour: int = Field(100, ge=1)

    # The attribute names ScraperSky uses: AttributeNames is the one place they are written.
    attribute_firstname: str = _SCRAPERSKY_NAMES.firstname
    attribute_lastname: str = _SCRAPERSKY_NAMES.lastname
    attribute_sms: str = _SCRAPERSKY_NAMES.sms
    attribute_domain_id: str = _SCRAPERSKY_NAMES.domain_id
    attribute_page_id: str = _SCRAPERSKY_NAMES.page_id
    attribute_email_type: str = _SCRAPERSKY_NAMES.email_type
    attribute_source_url: str = _SCRAPERSKY_NAMES.source_url
    attribute_has_gmail: str = _SCRAPERSKY_NAMES.has_gmail

    @field_validator("list_id", mode="before")
    @classmethod
    def _empty_list_id_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("api_base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError(
                "BREVO_API_BASE_URL must be an http(s) URL such as " + DEFAULT_BASE_URL
            )
        return refuse_url_credentials(value, "BREVO_API_BASE_URL", "BREVO_API_KEY")

    @field_validator(
        "attribute_firstname",
        "attribute_lastname",
        "attribute_sms",
        "attribute_domain_id",
        "attribute_page_id",
        "attribute_email_type",
        "attribute_source_url",
        "attribute_has_gmail",
    )
    @classmethod
    def _attribute_name(cls, value: str) -> str:
        # Brevo attribute names are upper case; accept "fname" and send "FNAME".
        value = value.strip().upper()
        if value and not _ATTRIBUTE.match(value):
            raise ValueError("not a Brevo attribute name (letters, digits and underscores)")
        return value

    @property
    def attribute_names(self) -> AttributeNames:
        """The Brevo attribute each contact field goes to, as these settings name them."""
        return AttributeNames(
            firstname=self.attribute_firstname,
            lastname=self.attribute_lastname,
            sms=self.attribute_sms,
            domain_id=self.attribute_domain_id,
            page_id=self.attribute_page_id,
            email_type=self.attribute_email_type,
            source_url=self.attribute_source_url,
            has_gmail=self.attribute_has_gmail,
        )
