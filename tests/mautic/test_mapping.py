"""Contact -> Mautic payload, and the settings that shape it."""

from __future__ import annotations

import uuid

import pytest
from pydantic import ValidationError

from crmsync_core.contacts import Contact
from crmsync_core.ratelimit import RateLimit
from crmsync_mautic import MauticSettings, contact_payload

DOMAIN_ID = uuid.UUID("8f14e45f-ceea-467f-a0e6-1f2b3c4d5e6f")


def test_core_fields_use_mautics_aliases_and_the_first_space_split() -> None:
    contact = Contact(
        id=1, email="  ana.garcia@acme.io ", name="Ana María García", phone_number="+34 600 000 000"
    )
    assert contact_payload(contact) == {
        "email": "ana.garcia@acme.io",
        "firstname": "Ana",
        "lastname": "María García",
        "phone": "+34 600 000 000",
    }


def test_blank_values_are_left_out_so_they_never_overwrite_mautic() -> None:
    contact = Contact(id=1, email="wei@example.com", name="Wei", phone_number="   ", source_url="")
    payload = contact_payload(contact, field_aliases={"source_url": "source", "page_id": "page"})
    assert payload == {"email": "wei@example.com", "firstname": "Wei"}
    assert "overwriteWithBlank" not in payload


def test_other_fields_go_to_the_configured_custom_aliases() -> None:
    contact = Contact(
        id=1,
        email="x@gmail.com",
        has_gmail=True,
        domain_id=DOMAIN_ID,
        email_type="FREE",
        context="",
    )
    payload = contact_payload(
        contact,
        field_aliases={
            "domain_id": "scrapersky_domain_id",
            "has_gmail": "has_gmail",
            "email_type": "email_type",
            "context": "notes",
        },
    )
    assert payload["scrapersky_domain_id"] == str(DOMAIN_ID)
    assert payload["has_gmail"] == 1
    assert payload["email_type"] == "FREE"
    assert "notes" not in payload


def test_false_is_a_value_not_a_blank() -> None:
    payload = contact_payload(
        Contact(id=1, email="x@acme.io", has_gmail=False), field_aliases={"has_gmail": "gmail"}
    )
    assert payload["gmail"] == 0


def test_tags_are_added_to_every_contact() -> None:
    payload = contact_payload(Contact(id=1, email="x@acme.io"), tags=["scrapersky", "leads"])
    assert payload["tags"] == ["scrapersky", "leads"]


def test_settings_read_tags_and_aliases_from_comma_separated_environment_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAUTIC_TAGS", "scrapersky, leads ,")
    monkeypatch.setenv(
        "MAUTIC_FIELD_ALIASES", "domain_id=scrapersky_domain_id, page_id=scrapersky_page_id"
    )
    settings = MauticSettings()
    assert settings.tags == ["scrapersky", "leads"]
    assert settings.field_aliases == {
        "domain_id": "scrapersky_domain_id",
        "page_id": "scrapersky_page_id",
    }


@pytest.mark.parametrize(
    ("aliases", "complaint"),
    [
        ({"domian_id": "x"}, "unknown contact field"),
        ({"domain_id": "Domain ID"}, "not a Mautic field alias"),
        ({"page_id": "email"}, "page_id is one the adapter fills itself"),
        ("domain_id", "contact_field=mautic_alias"),
    ],
)
def test_mistyped_field_aliases_are_refused_with_the_reason(
    aliases: object, complaint: str
) -> None:
    with pytest.raises(ValidationError, match=complaint):
        MauticSettings(field_aliases=aliases)


def test_rate_limit_per_hour_becomes_the_request_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAUTIC_RATE_LIMIT_PER_HOUR", "500")
    assert MauticSettings().rate_limit(None) == RateLimit(500, 3600.0)
    explicit = MauticSettings(sync_rate_limit_requests=5, sync_rate_limit_period_seconds=1.0)
    assert explicit.rate_limit(None) == RateLimit(5, 1.0)
    monkeypatch.delenv("MAUTIC_RATE_LIMIT_PER_HOUR")
    assert MauticSettings().rate_limit(None) is None


def test_settings_repr_hides_secrets() -> None:
    settings = MauticSettings(password="hunter2-password", client_secret="s3cret-client")
    assert "hunter2-password" not in repr(settings)
    assert "s3cret-client" not in str(settings)
