"""Contacts to HubSpot properties: ScraperSky's mapping, strings only, one input per e-mail."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import date
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr

from crmsync_core.contacts import Contact, Skipped
from crmsync_hubspot import HubspotSettings
from crmsync_hubspot.mapping import build_inputs, contact_properties, request_body

TODAY = date(2026, 11, 5)
SETTINGS = HubspotSettings(api_key=SecretStr("pat-test"))


def contact(**fields: Any) -> Contact:
    return Contact(id=fields.pop("id", uuid.uuid4()), **fields)


def test_scrapersky_properties() -> None:
    domain_id, page_id = uuid.uuid4(), uuid.uuid4()
    properties = contact_properties(
        contact(
            email="Ada@Example.COM",
            name="Ada King Lovelace",
            phone_number=" +44 20 7946 0958 ",
            domain_id=domain_id,
            page_id=page_id,
        ),
        SETTINGS,
        TODAY,
    )
    assert properties == {
        "email": "ada@example.com",
        "firstname": "Ada",
        "lastname": "King Lovelace",
        "phone": "+44 20 7946 0958",
        "scrapersky_domain_id": str(domain_id),
        "scrapersky_page_id": str(page_id),
        "scrapersky_sync_date": "2026-11-05",
    }


def test_missing_fields_are_left_out_rather_than_cleared() -> None:
    # HubSpot clears a property given "": a contact without a phone must not erase the one in HubSpot.
    properties = contact_properties(contact(email="solo@example.com", name="Cher"), SETTINGS, TODAY)
    assert properties == {
        "email": "solo@example.com",
        "firstname": "Cher",
        "scrapersky_sync_date": "2026-11-05",
    }


def test_custom_property_names_come_from_settings_and_empty_ones_are_not_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HUBSPOT_CUSTOM_PROPERTY_DOMAIN_ID", "acme_domain")
    monkeypatch.setenv("HUBSPOT_CUSTOM_PROPERTY_PAGE_ID", "")
    monkeypatch.setenv("HUBSPOT_CUSTOM_PROPERTY_SYNC_DATE", "acme_synced_on")
    settings = HubspotSettings()
    properties = contact_properties(
        contact(email="a@example.com", domain_id=7, page_id=8), settings, TODAY
    )
    assert properties == {
        "email": "a@example.com",
        "acme_domain": "7",
        "acme_synced_on": "2026-11-05",
    }


def test_contacts_sharing_an_email_become_one_input() -> None:
    first = contact(email="Dup@Example.com", name="First")
    second = contact(email="dup@example.com ", name="Second")
    other = contact(email="other@example.com")
    inputs, skipped = build_inputs([first, other, second], SETTINGS, TODAY)
    assert skipped == []
    assert [item.email for item in inputs] == ["dup@example.com", "other@example.com"]
    assert inputs[0].contacts == (first, second)
    assert inputs[0].properties["firstname"] == "Second"  # the last one's data wins


def test_invalid_emails_are_skipped_with_a_reason() -> None:
    bad = [
        contact(email=None),
        contact(email="  "),
        contact(email="no-at-sign"),
        contact(email="a@b"),
    ]
    inputs, skipped = build_inputs(bad, SETTINGS, TODAY)
    assert inputs == []
    assert {s.contact_id for s in skipped} == {c.id for c in bad}
    assert all(isinstance(s, Skipped) and s.reason for s in skipped)


def test_request_body_is_an_upsert_by_email(upsert_model: Callable[[bytes], Any]) -> None:
    inputs, _ = build_inputs([contact(email="A@example.com", name="A B")], SETTINGS, TODAY)
    body = request_body(inputs)
    assert body == {
        "inputs": [
            {
                "idProperty": "email",
                "id": "a@example.com",
                "objectWriteTraceId": "a@example.com",
                "properties": {
                    "email": "a@example.com",
                    "firstname": "A",
                    "lastname": "B",
                    "scrapersky_sync_date": "2026-11-05",
                },
            }
        ]
    }
    model = upsert_model(json.dumps(body).encode())
    assert model.inputs[0].id_property == "email"


@pytest.mark.parametrize(
    ("item", "complaint"),
    [
        ({"idProperty": "email", "id": "a@b.co", "properties": {"age": 5}}, "expected str"),
        ({"idProperty": "email", "id": "a@b.co", "props": {}}, "no field"),
        ({"idProperty": "email", "properties": {}}, "`id`, must not be `None`"),
        ({"idProperty": "email", "id": 12, "properties": {}}, "expected str"),
    ],
)
def test_the_sdk_check_catches_what_hubspot_would_refuse(
    upsert_model: Callable[[bytes], Any], item: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(AssertionError, match=re.escape(complaint)):
        upsert_model(json.dumps({"inputs": [item]}).encode())


_names = st.one_of(st.none(), st.text(min_size=0, max_size=30))
_ids = st.one_of(st.none(), st.uuids(), st.integers(min_value=0), st.text(max_size=20))


@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a@example.com", "A@EXAMPLE.COM", "b@example.org", "bad", None]),
            _names,
            st.one_of(st.none(), st.text(max_size=20)),
            _ids,
            _ids,
        ),
        max_size=30,
    )
)
def test_every_contact_is_accounted_for_and_every_value_is_a_string(
    rows: list[tuple[str | None, str | None, str | None, Any, Any]],
) -> None:
    contacts = [
        Contact(id=n, email=e, name=name, phone_number=phone, domain_id=d, page_id=p)
        for n, (e, name, phone, d, p) in enumerate(rows)
    ]
    inputs, skipped = build_inputs(contacts, SETTINGS, TODAY)
    placed = [c.id for item in inputs for c in item.contacts] + [s.contact_id for s in skipped]
    assert sorted(placed) == sorted(c.id for c in contacts)
    assert len({item.email for item in inputs}) == len(inputs)
    for item in inputs:
        assert all(isinstance(v, str) and v for v in item.properties.values())
        assert item.properties["email"] == item.email == item.email.lower()
