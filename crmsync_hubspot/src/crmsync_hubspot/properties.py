"""Creating ScraperSky's custom contact properties in a HubSpot account (``crmsync hubspot create-properties``).

HubSpot refuses a batch that sets a property the account does not have, so the three custom properties
(``scrapersky_domain_id``, ``scrapersky_page_id``, ``scrapersky_sync_date``, or the names the settings give)
must exist before the first sync. :func:`create_properties` checks each with
``GET /crm/v3/properties/contacts/{name}`` and creates the missing ones with
``POST /crm/v3/properties/contacts``. It needs the ``crm.schemas.contacts.write`` scope.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import httpx

from crmsync_core.adapter import AdapterContext
from crmsync_core.errors import ConfigurationError, FatalError
from crmsync_core.http import CrmClient
from crmsync_core.ratelimit import Limiter
from crmsync_core.retry import RequestRetry

from .settings import HubspotSettings

#: what each custom property holds: (label, HubSpot type, field type)
_DEFINITIONS = {
    "domain_id": ("ScraperSky domain ID", "string", "text"),
    "page_id": ("ScraperSky page ID", "string", "text"),
    "sync_date": ("ScraperSky sync date", "date", "date"),
}


@dataclass(frozen=True, slots=True)
class PropertyStatus:
    """What :func:`create_properties` found or did for one property."""

    name: str
    status: Literal["exists", "created"]


def property_definition(role: str, name: str, group: str) -> dict[str, Any]:
    """The JSON body that creates the custom property ``name`` holding ``role``."""
    label, kind, field_type = _DEFINITIONS[role]
    return {
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "groupName": group,
        "description": "Written by crmsync for ScraperSky contacts.",
    }


async def create_properties(
    settings: HubspotSettings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    request_retry: RequestRetry | None = None,
) -> list[PropertyStatus]:
    """Create the custom contact properties the adapter writes, where the account lacks them."""
    token = settings.api_key.get_secret_value().strip() if settings.api_key else ""
    if not token:
        raise ConfigurationError("HUBSPOT_API_KEY is not set: use a private app's access token")
    context = AdapterContext(
        rate_limiter=Limiter(settings.rate_limit(None)),
        request_retry=request_retry or RequestRetry(),
        transport=transport,
    )
    path = settings.properties_path
    statuses: list[PropertyStatus] = []
    async with CrmClient(
        context,
        crm="hubspot",
        base_url=settings.api_base_url,
        headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        secrets=[token],
        auth_hint=(
            "set HUBSPOT_API_KEY to the access token of a private app with the "
            "crm.schemas.contacts.read and crm.schemas.contacts.write scopes"
        ),
        timeout=settings.timeout_seconds,
    ) as client:
        for role, name in settings.custom_properties().items():
            found = await client.request("GET", f"{path}/{name}")
            if found.status_code == 200:
                statuses.append(PropertyStatus(name, "exists"))
                continue
            if found.status_code != 404:
                raise FatalError(
                    f"HubSpot answered HTTP {found.status_code} on GET {path}/{name}: "
                    f"{client.body_snippet(found)}"
                )
            body = property_definition(role, name, settings.property_group)
            created = await client.request("POST", path, json=body)
            if created.status_code == 409:  # created meanwhile by someone else
                statuses.append(PropertyStatus(name, "exists"))
            elif created.status_code in (200, 201):
                statuses.append(PropertyStatus(name, "created"))
            else:
                raise FatalError(
                    f"HubSpot did not create the contact property {name!r} (HTTP "
                    f"{created.status_code}): {client.body_snippet(created)}"
                )
    return statuses
