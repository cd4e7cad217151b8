"""The payload n8n receives: ScraperSky's object, field for field, and its idempotency key."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from crmsync_core.contacts import Contact
from crmsync_n8n import (
    EXTRA_FIELDS,
    SCRAPERSKY_FIELDS,
    N8nSettings,
    contact_payload,
    idempotency_key,
)

CONTACT_ID = uuid.UUID("5f0c3d2e-8a41-4b7e-9c11-2f6a1e0b9d33")
DOMAIN_ID = uuid.UUID("9b2e7f10-1c2d-4e3f-8a9b-0c1d2e3f4a5b")
PAGE_ID = uuid.UUID("41d7a2c4-5e6f-4a1b-9c2d-3e4f5a6b7c8d")
SENT_AT = datetime(2026, 11, 22, 15, 4, 5, 123456, tzinfo=UTC)


def anna(**changes: object) -> Contact:
    fields: dict[str, object] = {
        "id": CONTACT_ID,
        "email": "anna.muller@acme.io",
        "name": "Anna Müller",
        "phone_number": "+33 6 12 34 56 12",
        "email_type": "CORPORATE",
        "has_gmail": False,
        "source_url": "https://acme.io/contact",
        "domain_id": DOMAIN_ID,
        "page_id": PAGE_ID,
        "context": "met at the fair",
    }
    fields.update(changes)
    return Contact(**fields)  # type: ignore[arg-type]


def test_default_payload_is_scraperskys_object_field_for_field() -> None:
    payload = contact_payload(anna(), sent_at=SENT_AT)

    # What ScraperSky posts today (crm-apis.md section 0), written out by hand.
    assert payload == {
        "contact_id": "5f0c3d2e-8a41-4b7e-9c11-2f6a1e0b9d33",
        "email": "anna.muller@acme.io",
        "name": "Anna Müller",
        "scrapersky_domain_id": "9b2e7f10-1c2d-4e3f-8a9b-0c1d2e3f4a5b",
        "scrapersky_page_id": "41d7a2c4-5e6f-4a1b-9c2d-3e4f5a6b7c8d",
        "timestamp": "2026-11-22T15:04:05.123456Z",
    }
    assert tuple(payload) == SCRAPERSKY_FIELDS
    assert json.loads(json.dumps(payload)) == payload, "the payload must be plain JSON"


def test_missing_values_are_null() -> None:
    payload = contact_payload(anna(name=None, domain_id=None, page_id=None), sent_at=SENT_AT)

    assert payload["name"] is None
    assert payload["scrapersky_domain_id"] is None
    assert payload["scrapersky_page_id"] is None


def test_integer_ids_are_sent_as_strings() -> None:
    payload = contact_payload(anna(id=42, domain_id=7, page_id=8), sent_at=SENT_AT)

    assert (payload["contact_id"], payload["scrapersky_domain_id"]) == ("42", "7")
    assert payload["scrapersky_page_id"] == "8"


def test_email_is_sent_without_surrounding_spaces() -> None:
    assert contact_payload(anna(email=" anna@acme.io "), sent_at=SENT_AT)["email"] == "anna@acme.io"


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000000Z"),
        (
            datetime(2026, 1, 2, 5, 4, 5, 7, tzinfo=timezone(timedelta(hours=2))),
            "2026-01-02T03:04:05.000007Z",
        ),
        (datetime(2026, 1, 2, 3, 4, 5, 500000), "2026-01-02T03:04:05.500000Z"),
    ],
    ids=["whole-second", "other-offset", "naive-is-utc"],
)
def test_timestamp_is_utc_iso8601_with_z(moment: datetime, expected: str) -> None:
    assert contact_payload(anna(), sent_at=moment)["timestamp"] == expected


def test_extra_fields_follow_scraperskys_six_in_the_configured_order() -> None:
    payload = contact_payload(
        anna(), sent_at=SENT_AT, extra_fields=("source_url", "phone_number", "first_name")
    )

    assert tuple(payload)[:6] == SCRAPERSKY_FIELDS
    assert list(payload.items())[6:] == [
        ("source_url", "https://acme.io/contact"),
        ("phone_number", "+33 6 12 34 56 12"),
        ("first_name", "Anna"),
    ]


def test_every_extra_field_is_plain_json() -> None:
    payload = contact_payload(anna(), sent_at=SENT_AT, extra_fields=EXTRA_FIELDS)

    assert json.loads(json.dumps(payload)) == payload
    assert payload["last_name"] == "Müller"
    assert payload["has_gmail"] is False


@given(first=st.datetimes(timezones=st.just(UTC)), second=st.datetimes(timezones=st.just(UTC)))
def test_idempotency_key_ignores_the_timestamp(first: datetime, second: datetime) -> None:
    assert idempotency_key(contact_payload(anna(), sent_at=first)) == idempotency_key(
        contact_payload(anna(), sent_at=second)
    )


@pytest.mark.parametrize(
    "change",
    [
        {"name": "Anna Maria Müller"},
        {"email": "anna@globex.net"},
        {"page_id": uuid.UUID(int=1)},
        {"id": uuid.UUID(int=2)},
    ],
)
def test_idempotency_key_changes_with_the_data(change: dict[str, object]) -> None:
    before = idempotency_key(contact_payload(anna(), sent_at=SENT_AT))
    after = idempotency_key(contact_payload(anna(**change), sent_at=SENT_AT))
    assert before != after


def test_idempotency_key_covers_extra_fields_and_arrays() -> None:
    plain = contact_payload(anna(), sent_at=SENT_AT)
    extra = contact_payload(anna(), sent_at=SENT_AT, extra_fields=("phone_number",))
    other = contact_payload(anna(id=uuid.UUID(int=3)), sent_at=SENT_AT)

    assert idempotency_key(plain) != idempotency_key(extra)
    assert idempotency_key([plain, other]) != idempotency_key([other, plain])
    assert idempotency_key([plain]) != idempotency_key(plain)
    assert len(idempotency_key(plain)) == 64


def test_extra_fields_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("N8N_EXTRA_FIELDS", "phone_number, source_url")
    assert N8nSettings().extra_fields == ("phone_number", "source_url")

    monkeypatch.setenv("N8N_EXTRA_FIELDS", '["email_type"]')
    assert N8nSettings().extra_fields == ("email_type",)


def test_unknown_extra_field_is_refused_with_the_choices() -> None:
    with pytest.raises(ValidationError) as raised:
        N8nSettings(extra_fields=("phone",))
    assert "phone_number" in str(raised.value)


def test_array_batch_size_cannot_exceed_a_push() -> None:
    with pytest.raises(ValidationError):
        N8nSettings(array_batch_size=51)
