"""crmsync adapter for HubSpot: contacts upserted by e-mail, 100 per request."""

from .adapter import SPEC, HubspotAdapter
from .fake import FakeHubspot, make_sandbox
from .properties import PropertyStatus, create_properties
from .settings import HubspotSettings

__all__ = [
    "SPEC",
    "FakeHubspot",
    "HubspotAdapter",
    "HubspotSettings",
    "PropertyStatus",
    "create_properties",
    "make_sandbox",
]
