"""The fake HubSpot's answers parse into HubSpot's own response models (``hubspot-api-client``).

The adapter is only as right as the fake it is tested against, so the fake's answers are held to the
SDK's models with the same strict check as our requests (:func:`sdk_model`: no unknown keys, JSON types
as declared, required fields present with ``client_side_validation``). Sources for each answer are in
``docs/vendors/hubspot.md``.
"""

from __future__ import annotations

from typing import Any

import httpx
import hubspot.crm.contacts as sdk_contacts
import pytest

from crmsync_hubspot import FakeHubspot
from crmsync_hubspot.fake import BASE_URL

from .conftest import SdkMismatch, sdk_model

UPSERT = "/crm/v3/objects/contacts/batch/upsert"
#: keys HubSpot documents on an error body that the SDK's ``Error`` model lacks: ``status`` is in the
#: example of https://developers.hubspot.com/docs/api-reference/error-handling (the SDK drops it)
DOCUMENTED_ERROR_EXTRAS = frozenset({"status"})


def error_model(body: dict[str, Any]) -> Any:
    extras = set(body) - set(sdk_contacts.models.Error.attribute_map.values())
    assert extras <= DOCUMENTED_ERROR_EXTRAS, f"undocumented error keys {extras}"
    return sdk_model({k: v for k, v in body.items() if k not in extras}, "Error", sdk_contacts)


def inputs(*emails: str, trace: bool = True, **properties: str) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "idProperty": "email",
                "id": email,
                "properties": {"email": email, **properties},
                **({"objectWriteTraceId": email} if trace else {}),
            }
            for email in emails
        ]
    }


async def post(fake: FakeHubspot, body: dict[str, Any], token: str | None = None) -> httpx.Response:
    async with httpx.AsyncClient(
        base_url=BASE_URL,
        transport=fake.transport(),
        headers={"Authorization": f"Bearer {token or fake.token}"},
    ) as http:
        return await http.post(UPSERT, json=body)


async def test_a_clean_batch_is_a_batch_response_of_upsert_objects() -> None:
    fake = FakeHubspot()
    await post(fake, inputs("old@example.com"))
    response = await post(fake, inputs("old@example.com", "new@example.com"))
    assert response.status_code == 200
    model = sdk_model(response.json(), "BatchResponseSimplePublicUpsertObject", sdk_contacts)
    assert model.status == "COMPLETE"
    assert [(r.object_write_trace_id, r.new) for r in model.results] == [
        ("old@example.com", False),
        ("new@example.com", True),
    ]


@pytest.mark.parametrize("error_context", ["trace", "ids", "none"])
async def test_a_207_is_a_batch_response_with_standard_errors(error_context: Any) -> None:
    fake = FakeHubspot(error_context=error_context)
    response = await post(fake, inputs("good@example.com", "bad@rejected.invalid"))
    assert response.status_code == 207
    model = sdk_model(
        response.json(), "BatchResponseSimplePublicUpsertObjectWithErrors", sdk_contacts
    )
    assert model.num_errors == 1 and len(model.results) == 1
    error = model.errors[0]
    assert isinstance(error, sdk_contacts.models.StandardError)
    assert error.category == "VALIDATION_ERROR"
    assert error.errors[0].code == "INVALID_EMAIL"
    expected = {
        "trace": {"objectWriteTraceId": ["bad@rejected.invalid"]},
        "ids": {"ids": ["bad@rejected.invalid"]},
        "none": {},
    }[error_context]
    assert error.context == expected


async def test_an_unknown_property_in_multi_status_mode_is_a_standard_error() -> None:
    fake = FakeHubspot()
    response = await post(fake, inputs("a@example.com", nickname="Al"))
    model = sdk_model(
        response.json(), "BatchResponseSimplePublicUpsertObjectWithErrors", sdk_contacts
    )
    assert model.errors[0].errors[0].code == "PROPERTY_DOESNT_EXIST"
    assert model.results == []


@pytest.mark.parametrize(
    ("body", "category"),
    [
        (inputs("good@example.com", "bad@rejected.invalid", trace=False), "VALIDATION_ERROR"),
        (inputs("a@example.com", nickname="Al", trace=False), "VALIDATION_ERROR"),
        (inputs("a@example.com", "A@example.com"), "VALIDATION_ERROR"),
        (inputs(*(f"u{n}@example.com" for n in range(101))), "VALIDATION_ERROR"),
    ],
    ids=["invalid-email", "unknown-property", "duplicate-ids", "too-many-inputs"],
)
async def test_whole_batch_rejections_are_errors(body: dict[str, Any], category: str) -> None:
    response = await post(FakeHubspot(), body)
    assert response.status_code == 400
    model = error_model(response.json())
    assert model.category == category and model.correlation_id


async def test_a_refused_token_is_an_error() -> None:
    response = await post(FakeHubspot(), inputs("a@example.com"), token="pat-wrong")
    assert response.status_code == 401
    assert error_model(response.json()).category == "INVALID_AUTHENTICATION"


def test_the_check_refuses_what_the_sdk_does_not_know() -> None:
    """The strict check is not a formality: an answer shaped like the old fake's errors (no ``links``)
    or with a key the SDK lacks is refused."""
    with pytest.raises(SdkMismatch, match="links"):
        sdk_model(
            {"status": "error", "category": "X", "message": "m", "context": {}, "errors": []},
            "StandardError",
            sdk_contacts,
        )
    with pytest.raises(SdkMismatch, match="executionId"):
        sdk_model({"message": "m", "category": "X", "executionId": "1"}, "Error", sdk_contacts)
