"""crmsync adapter for n8n: posts contacts to an n8n Webhook node in ScraperSky's format."""

from .adapter import IDEMPOTENCY_HEADER, SPEC, N8nAdapter
from .fake import FakeN8n, Received, make_sandbox
from .mapping import EXTRA_FIELDS, SCRAPERSKY_FIELDS, contact_payload, idempotency_key
from .settings import N8nSettings

__all__ = [
    "EXTRA_FIELDS",
    "IDEMPOTENCY_HEADER",
    "SCRAPERSKY_FIELDS",
    "SPEC",
    "FakeN8n",
    "N8nAdapter",
    "N8nSettings",
    "Received",
    "contact_payload",
    "idempotency_key",
    "make_sandbox",
]
