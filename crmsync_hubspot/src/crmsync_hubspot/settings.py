"""HubSpot settings: environment variables prefixed ``HUBSPOT_``, or keyword arguments in code."""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from crmsync_core.settings import SyncSettings, refuse_url_credentials

DEFAULT_BASE_URL = "https://api.hubapi.com"
DEFAULT_UPSERT_PATH = "/crm/v3/objects/contacts/batch/upsert"
DEFAULT_PROPERTIES_PATH = "/crm/v3/properties/contacts"


class HubspotSettings(SyncSettings):
    """How to reach one HubSpot account, and the names of ScraperSky's custom contact properties.

    A custom property name set to an empty string is not sent at all.
    """

    model_config = SettingsConfigDict(env_prefix="HUBSPOT_", extra="ignore", validate_default=True)

    #: a private app access token with the ``crm.objects.contacts.write`` scope (sent as a Bearer token)
    api_key: SecretStr | None = None
    api_base_url: str = DEFAULT_BASE_URL
    #: HubSpot is moving to dated paths, e.g. ``/crm/objects/2026-03/contacts/batch/upsert``
    upsert_path: str = DEFAULT_UPSERT_PATH
    #: used by ``crmsync hubspot create-properties``
    properties_path: str = DEFAULT_PROPERTIES_PATH
    custom_property_domain_id: str = "scrapersky_domain_id"
    custom_property_page_id: str = "scrapersky_page_id"
    custom_property_sync_date: str = "scrapersky_sync_date"
    #: the property group ``create-properties`` puts the custom properties in
    property_group: str = "contactinformation"
    #: the account's time zone (HubSpot settings > Account defaults): its daily API limit resets at
    #: midnight there
    account_timezone: str = "UTC"
    timeout_seconds: float = Field(30.0, gt=0)

    @field_validator("account_timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                "unknown time zone: use an IANA name such as 'America/New_York'"
            ) from None
        return value

    @field_validator("api_base_url")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        return refuse_url_credentials(value, "HUBSPOT_API_BASE_URL", "HUBSPOT_API_KEY")

    @field_validator("upsert_path", "properties_path")
    @classmethod
    def _absolute_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must be a path starting with '/'")
        return value.rstrip("/")

    @property
    def timezone(self) -> ZoneInfo:
        return ZoneInfo(self.account_timezone)

    def custom_properties(self) -> dict[str, str]:
        """The custom property names in use, by what they hold (``domain_id``, ``page_id``, ``sync_date``)."""
        names = {
            "domain_id": self.custom_property_domain_id,
            "page_id": self.custom_property_page_id,
            "sync_date": self.custom_property_sync_date,
        }
        return {key: name for key, name in names.items() if name}
