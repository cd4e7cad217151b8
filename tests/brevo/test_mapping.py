"""Contacts to Brevo payloads: what ScraperSky sends today, under configurable attribute names."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from crmsync_brevo import AttributeNames, BrevoSettings, map_contact, normalize_phone
from crmsync_brevo.mapping import create_contact_body, import_body, import_item
from crmsync_core.contacts import Contact

DOMAIN = uuid.UUID("6c1e1cfa-1b5e-4c44-9d43-0d4b3f0f4a11")
PAGE = uuid.UUID("0b7d8a2e-2f7e-4d1c-8a55-7b9a3c3d2e10")


def scrapersky_contact(**changes: object) -> Contact:
    fields: dict[str, object] = {
        "id": uuid.uuid4(),
        "email": "  anna.muller@acme.io ",
        "name": "Anna Maria Müller",
        "phone_number": "+33 6 12 34 56 78",
        "email_type": "CORPORATE",
        "has_gmail": False,
        "source_url": "https://acme.io/contact",
        "domain_id": DOMAIN,
        "page_id": PAGE,
    }
    fields.update(changes)
    return Contact(**fields)  # type: ignore[arg-type]


def test_maps_every_field_scrapersky_sends() -> None:
    mapped = map_contact(scrapersky_contact(), AttributeNames())
    assert mapped.email == "anna.muller@acme.io"
    assert mapped.attributes == {
        "FIRSTNAME": "Anna",
        "LASTNAME": "Maria Müller",  # split on the first space only
        "SMS": "+33612345678",
        "DOMAIN_ID": str(DOMAIN),
        "PAGE_ID": str(PAGE),
        "EMAIL_TYPE": "CORPORATE",
        "SOURCE_URL": "https://acme.io/contact",
        "HAS_GMAIL": False,
    }
    assert mapped.notes == ()


def test_create_body_is_an_upsert_with_the_list_when_set() -> None:
    mapped = map_contact(scrapersky_contact(), AttributeNames())
    body = create_contact_body(mapped, 7)
    assert body["updateEnabled"] is True
    assert body["listIds"] == [7]
    assert "listIds" not in create_contact_body(mapped, None)


def test_import_body_updates_existing_contacts_and_keeps_missing_values() -> None:
    mapped = map_contact(scrapersky_contact(), AttributeNames())
    body = import_body([import_item(mapped)], 7)
    assert body["jsonBody"] == [{"email": mapped.email, "attributes": mapped.attributes}]
    assert body["listIds"] == [7]
    assert body["updateExistingContacts"] is True
    assert body["emptyContactsAttributes"] is False
    assert body["disableNotification"] is True


def test_missing_values_are_left_out_not_sent_empty() -> None:
    contact = Contact(id=1, email="solo@acme.io", name="Cher", phone_number="  ")
    assert map_contact(contact, AttributeNames()).attributes == {"FIRSTNAME": "Cher"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+33 6 12 34 56 78", "+33612345678"),
        ("+1-555-123-4567", "+15551234567"),
        ("0033 6 12 34 56 78", "+33612345678"),
        ("+44 (0)20 7946 0958", "+442079460958"),
        ("+49 (30) 123456", "+4930123456"),
    ],
)
def test_international_numbers_are_normalized(raw: str, expected: str) -> None:
    assert normalize_phone(raw) == (expected, None)


@pytest.mark.parametrize("raw", ["0612345678", "call me", "+0612345678", "+123", "12-34"])
def test_numbers_brevo_would_reject_are_left_out_and_noted(raw: str) -> None:
    mapped = map_contact(scrapersky_contact(phone_number=raw), AttributeNames())
    assert "SMS" not in mapped.attributes
    assert len(mapped.notes) == 1
    assert "phone number" in mapped.notes[0]
    assert mapped.email == "anna.muller@acme.io"  # the contact itself still goes


def test_national_number_note_says_the_country_code_is_missing() -> None:
    assert normalize_phone("06 12 34 56 78") == (
        None,
        "phone number without a country code left out",
    )


@given(st.text(max_size=30))
def test_normalized_numbers_are_always_e164(raw: str) -> None:
    number, reason = normalize_phone(raw)
    if number is not None:
        assert reason is None
        assert number.startswith("+")
        assert number[1:].isdigit()
        assert 8 <= len(number) - 1 <= 15


def test_attribute_names_come_from_settings() -> None:
    settings = BrevoSettings(
        api_key="k" * 10,
        attribute_firstname="fname",
        attribute_lastname="LNAME",
        attribute_has_gmail="",
    )
    mapped = map_contact(scrapersky_contact(), settings.attribute_names)
    assert mapped.attributes["FNAME"] == "Anna"
    assert mapped.attributes["LNAME"] == "Maria Müller"
    assert "FIRSTNAME" not in mapped.attributes
    assert "HAS_GMAIL" not in mapped.attributes


def test_settings_read_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREVO_API_KEY", "xkeysib-from-env")
    monkeypatch.setenv("BREVO_LIST_ID", "12")
    monkeypatch.setenv("BREVO_API_BASE_URL", "https://proxy.example/v3/")
    monkeypatch.setenv("BREVO_SYNC_MAX_RETRIES", "5")
    monkeypatch.setenv("BREVO_IMPORT_THRESHOLD", "250")
    monkeypatch.setenv("BREVO_ATTRIBUTE_FIRSTNAME", "FNAME")
    settings = BrevoSettings()
    assert settings.api_key is not None
    assert settings.api_key.get_secret_value() == "xkeysib-from-env"
    assert "xkeysib-from-env" not in repr(settings)
    assert settings.list_id == 12
    assert settings.api_base_url == "https://proxy.example/v3"
    assert settings.sync_max_retries == 5
    assert settings.import_threshold == 250
    assert settings.attribute_firstname == "FNAME"


def test_empty_list_id_means_no_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BREVO_LIST_ID", "")
    monkeypatch.delenv("BREVO_API_BASE_URL", raising=False)
    settings = BrevoSettings()
    assert settings.list_id is None
    assert settings.api_base_url == "https://api.brevo.com/v3"


@pytest.mark.parametrize(
    ("field", "value"),
    [("attribute_sms", "MOBILE PHONE"), ("api_base_url", "api.brevo.com"), ("list_id", "0")],
)
def test_wrong_settings_are_refused(field: str, value: str) -> None:
    with pytest.raises(ValidationError, match=field):
        BrevoSettings(**{field: value})  # type: ignore[arg-type]
