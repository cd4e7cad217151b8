"""Every distribution's public names, in one place.

Adding or removing a public name is a decision: update this list in the same change. Nothing else in the
suite pins ``__all__``.
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC_NAMES: dict[str, list[str]] = {
    "crmsync_core": [
        "Adapter",
        "AdapterContext",
        "AdapterError",
        "AdapterNotInstalledError",
        "AdapterSpec",
        "AuthenticationError",
        "CheckResult",
        "CircuitOpenError",
        "ConfigurationError",
        "Contact",
        "ContactFilter",
        "ContactState",
        "CrmColumns",
        "CrmsyncError",
        "DatabaseUnavailableError",
        "EmailType",
        "Engine",
        "FatalError",
        "IllegalTransitionError",
        "InvalidRequestError",
        "Layout",
        "MalformedResponseError",
        "Outcome",
        "PermanentError",
        "PermanentFailure",
        "ProcessingStatus",
        "QueueResult",
        "RateLimit",
        "RateLimitExhaustedError",
        "Registry",
        "RequestRetry",
        "RetryPolicy",
        "RunReport",
        "Sandbox",
        "SandboxOptions",
        "Skipped",
        "StatusSummary",
        "Store",
        "StoreError",
        "SyncSettings",
        "SyncStatus",
        "Synced",
        "TransientError",
        "TransientFailure",
        "Worker",
        "hookimpl",
        "register_plugin",
        "run_checks",
    ],
    "crmsync_core.testing": [
        "MovableClock",
        "SandboxAdapter",
        "SandboxCrm",
        "SandboxSettings",
        "contact_rows",
        "sandbox_adapter_spec",
    ],
    "crmsync_brevo": [
        "SPEC",
        "AttributeNames",
        "BrevoAdapter",
        "BrevoContact",
        "BrevoSettings",
        "FakeBrevo",
        "ManualClock",
        "make_sandbox",
        "map_contact",
        "normalize_phone",
        "parse_email_report",
        "rate_limits",
    ],
    "crmsync_hubspot": [
        "SPEC",
        "FakeHubspot",
        "HubspotAdapter",
        "HubspotSettings",
        "PropertyStatus",
        "create_properties",
        "make_sandbox",
    ],
    "crmsync_mautic": [
        "SPEC",
        "FakeMautic",
        "MauticAdapter",
        "MauticSettings",
        "TokenCache",
        "api_root",
        "contact_payload",
        "make_sandbox",
    ],
    "crmsync_n8n": [
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
    ],
}


@pytest.mark.parametrize("module_name", list(PUBLIC_NAMES), ids=list(PUBLIC_NAMES))
def test_public_names_are_the_deliberate_list(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert set(module.__all__) == set(PUBLIC_NAMES[module_name])
    assert len(module.__all__) == len(set(module.__all__))
    for name in module.__all__:
        assert getattr(module, name) is not None, name
