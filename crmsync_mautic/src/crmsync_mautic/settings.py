"""Settings of the Mautic adapter: environment variables ``MAUTIC_*``.

Mautic is self-hosted, so there is no default address: ``MAUTIC_BASE_URL`` is required, with or without
``/api`` and a trailing slash. Authenticate with an OAuth 2 client (``MAUTIC_CLIENT_ID`` and
``MAUTIC_CLIENT_SECRET``, client-credentials grant; preferred when both sets are given) or with a Mautic
user (``MAUTIC_USERNAME`` and ``MAUTIC_PASSWORD``, HTTP Basic auth).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from crmsync_core.ratelimit import RateLimit
from crmsync_core.settings import SyncSettings, refuse_url_credentials

#: Contact fields that can be sent to a Mautic custom field, through ``MAUTIC_FIELD_ALIASES``.
MAPPABLE_FIELDS: frozenset[str] = frozenset(
    {"email_type", "has_gmail", "source_url", "domain_id", "page_id", "context"}
)
#: Aliases the adapter fills itself; a custom mapping may not write over them.
RESERVED_ALIASES: frozenset[str] = frozenset({"email", "firstname", "lastname", "phone", "tags"})
_ALIAS = re.compile(r"^[a-z][a-z0-9_]{0,190}$")


class MauticSettings(SyncSettings):
    """Where Mautic is, how to sign in, and what to write into it."""

    model_config = SettingsConfigDict(env_prefix="MAUTIC_", extra="ignore", validate_default=True)

    #: the Mautic installation, e.g. ``https://mautic.example.com`` (``/api`` is optional)
    base_url: str | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    #: tags added to every synced contact, e.g. ``MAUTIC_TAGS=scrapersky,leads``
    tags: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: contact field -> Mautic custom field alias, e.g.
    #: ``MAUTIC_FIELD_ALIASES=domain_id=scrapersky_domain_id,page_id=scrapersky_page_id``
    field_aliases: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    #: Mautic's ``api_batch_max_limit``: no request carries more contacts than this (a push holds at
    #: most 200 contacts, so a larger value has no effect)
    api_batch_max_limit: int = Field(200, ge=1)
    #: Mautic's API rate limit (Configuration > API Settings), when the administrator enabled one
    rate_limit_per_hour: int | None = Field(None, ge=1)
    timeout_seconds: float = Field(30.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return refuse_url_credentials(
            value,
            "MAUTIC_BASE_URL",
            "MAUTIC_CLIENT_ID/MAUTIC_CLIENT_SECRET or MAUTIC_USERNAME/MAUTIC_PASSWORD",
        )

    @field_validator("tags", mode="before")
    @classmethod
    def _split_tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list | tuple):
            return [str(tag).strip() for tag in value if str(tag).strip()]
        return value

    @field_validator("field_aliases", mode="before")
    @classmethod
    def _parse_aliases(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs: dict[str, str] = {}
            for item in filter(None, (part.strip() for part in value.split(","))):
                field, sep, alias = item.partition("=")
                if not sep:
                    raise ValueError(
                        "expected contact_field=mautic_alias pairs separated by commas"
                    )
                pairs[field.strip()] = alias.strip()
            return pairs
        return value

    @field_validator("field_aliases")
    @classmethod
    def _check_aliases(cls, value: dict[str, str]) -> dict[str, str]:
        for field, alias in value.items():
            if field not in MAPPABLE_FIELDS:
                raise ValueError(
                    f"unknown contact field; choose from {', '.join(sorted(MAPPABLE_FIELDS))}"
                )
            if not _ALIAS.match(alias):
                raise ValueError(
                    f"the alias for {field} is not a Mautic field alias "
                    "(lower-case letters, digits, underscores)"
                )
            if alias in RESERVED_ALIASES:
                raise ValueError(
                    f"the alias for {field} is one the adapter fills itself "
                    f"({', '.join(sorted(RESERVED_ALIASES))})"
                )
        return value

    def rate_limit(self, default: RateLimit | None) -> RateLimit | None:
        """``MAUTIC_SYNC_RATE_LIMIT_*`` first, then ``MAUTIC_RATE_LIMIT_PER_HOUR``, then ``default``."""
        if self.sync_rate_limit_requests is None and self.rate_limit_per_hour is not None:
            return RateLimit(self.rate_limit_per_hour, 3600.0)
        return super().rate_limit(default)
