"""crmsync adapter for Mautic: batch upsert by e-mail, HTTP Basic or OAuth 2 client credentials."""

from .adapter import SPEC, MauticAdapter, TokenCache, api_root
from .fake import FakeMautic, make_sandbox
from .mapping import contact_payload
from .settings import MauticSettings

__all__ = [
    "SPEC",
    "FakeMautic",
    "MauticAdapter",
    "MauticSettings",
    "TokenCache",
    "api_root",
    "contact_payload",
    "make_sandbox",
]
