"""The fake Mautic's answers have the shapes Mautic's own code builds (mautic/mautic, Mautic 5.x).

Each check names the file and function whose output it reproduces:

* a batch entry refused by the contact form: ``app/bundles/ApiBundle/Controller/FetchCommonApiController.php``
  ``returnError()`` in batch mode, called by ``CommonApiController::processForm()`` with the form's errors
  → ``{"code": 400|422, "message": "field: problem", "details": {field: [problem, ...]}, "type": null}``;
  the message is joined by ``app/bundles/CoreBundle/Controller/FormErrorMessagesTrait.php``
  ``getFormErrorMessage()``, the per-field lists come from ``getFormErrorMessages()``; the status is 422
  only when a constraint sets that code, else 400 (``processForm``);
* a batch entry refused before the form (403 access denied, 404): ``FetchCommonApiController::setBatchError()``
  → ``{"message", "code", "type": "api"}``;
* the batch answer: ``CommonApiController::newEntitiesAction()`` → 201 with ``contacts``, ``statusCodes``
  and, when any failed, ``errors``, keyed by request index;
* a whole-request error: ``returnError()`` outside batch mode → ``{"errors": [{"code", "message",
  "details", "type": null}]}`` with the error's status;
* an OAuth 2 token error: RFC 6749 section 5.2 as FOSOAuthServerBundle's ``OAuth2ServerException`` sends it
  → ``{"error", "error_description"}``, 400.
"""

from __future__ import annotations

import base64
from typing import Any

import httpx
import pytest

from crmsync_mautic import FakeMautic

BATCH = "/api/contacts/batch/new"


def form_error_shape(entry: Any, status: int) -> None:
    """``returnError()``'s array in batch mode, for form errors."""
    assert isinstance(entry, dict)
    assert list(entry) == ["code", "message", "details", "type"]  # PHP keeps insertion order
    assert entry["code"] == status and status in (400, 422)
    assert entry["type"] is None
    details = entry["details"]
    assert isinstance(details, dict) and details
    assert all(isinstance(v, list) and all(isinstance(m, str) for m in v) for v in details.values())
    # getFormErrorMessage(): "field: problem, problem" per field, fields joined by ", "
    expected = ", ".join(f"{field}: {', '.join(problems)}" for field, problems in details.items())
    assert entry["message"] == expected


def batch_error_shape(entry: Any, status: int) -> None:
    """``setBatchError()``'s array."""
    assert isinstance(entry, dict)
    assert list(entry) == ["message", "code", "type"]
    assert entry["code"] == status and entry["type"] == "api"
    assert isinstance(entry["message"], str)


def request_error_shape(body: Any, status: int) -> None:
    """``returnError()`` outside batch mode: one error in an ``errors`` list."""
    assert isinstance(body, dict) and list(body) == ["errors"]
    (error,) = body["errors"]
    assert list(error) == ["code", "message", "details", "type"]
    assert error["code"] == status and error["type"] is None and isinstance(error["message"], str)


def basic(fake: FakeMautic) -> dict[str, str]:
    token = base64.b64encode(f"{fake.username}:{fake.password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


async def send(fake: FakeMautic, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(
        base_url="https://mautic.example.com", transport=fake.transport()
    ) as http:
        return await http.request(method, path, **kwargs)


@pytest.mark.parametrize("status", [400, 422])
async def test_form_errors_in_a_batch_are_return_error_entries(status: Any) -> None:
    fake = FakeMautic(validation_status=status)
    payload = [
        {"email": "ok@acme.io"},
        {"email": "not-an-address"},
        {"email": "x@rejected.invalid"},
    ]
    response = await send(fake, "POST", BATCH, json=payload, headers=basic(fake))
    assert response.status_code == 201
    body = response.json()
    assert list(body) == ["contacts", "statusCodes", "errors"]
    assert body["statusCodes"] == [201, status, status]
    assert set(body["errors"]) == {"1", "2"}  # PHP: a map not keyed 0..n-1 is a JSON object
    for entry in body["errors"].values():
        form_error_shape(entry, status)
    assert body["errors"]["1"]["details"] == {"email": ["not-an-address is invalid."]}


async def test_entries_refused_before_the_form_are_set_batch_error_entries() -> None:
    fake = FakeMautic()
    fake.reject("owned@acme.io", 403, "You do not have access to the requested area/action.")
    fake.reject("blocked@acme.io", 422, "blocked@acme.io is on a block list.")
    payload = [{"email": "owned@acme.io"}, {"email": "blocked@acme.io"}]
    body = (await send(fake, "POST", BATCH, json=payload, headers=basic(fake))).json()
    assert body["statusCodes"] == [403, 422]
    batch_error_shape(body["errors"][0], 403)
    form_error_shape(body["errors"][1], 422)


@pytest.mark.parametrize(
    ("status", "make"),
    [
        (500, lambda: FakeMautic(batch_limit=1)),
        (401, FakeMautic),
    ],
    ids=["over-the-batch-limit", "no-credentials"],
)
async def test_whole_request_errors_are_return_error_lists(status: int, make: Any) -> None:
    fake = make()
    headers = basic(fake) if status != 401 else {}
    payload = [{"email": "a@acme.io"}, {"email": "b@acme.io"}]
    response = await send(fake, "POST", BATCH, json=payload, headers=headers)
    assert response.status_code == status
    if status == 500:
        request_error_shape(response.json(), status)
        assert (
            response.json()["errors"][0]["message"]
            == "A max of 1 entities are supported at a time."
        )
    else:
        (error,) = response.json()["errors"]
        assert error["code"] == 401 and isinstance(error["message"], str)


@pytest.mark.parametrize(
    ("form", "error"),
    [
        (
            {
                "grant_type": "client_credentials",
                "client_id": "1_fakemauticclient",
                "client_secret": "fake-mautic-client-secret",
            },
            "unauthorized_client",
        ),
        (
            {"grant_type": "client_credentials", "client_id": "1_x", "client_secret": "y"},
            "invalid_client",
        ),
        ({}, "invalid_request"),
    ],
)
async def test_token_errors_are_oauth2_error_objects(form: dict[str, str], error: str) -> None:
    response = await send(FakeMautic(), "POST", "/oauth/v2/token", data=form)
    assert response.status_code == 400
    body = response.json()
    assert list(body) == ["error", "error_description"] and body["error"] == error
