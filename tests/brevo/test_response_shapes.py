"""The fake Brevo's answers validate against the response schemas of Brevo's OpenAPI spec.

``tests/fixtures/brevo-openapi-v3.yaml`` is Brevo's published spec. Its ``GET /processes/{processId}``
schema is older than Brevo's current reference on one point: a completed import's ``info.import``
entries are counts there, while the current reference ("Completed import processes include CSV report
URLs") and Brevo's generated SDK (``brevo-python`` 5.1.0, ``GetProcessResponseInfoImport``: each entry
"URL to CSV file ..., or null if none"; ``GetProcessResponseStatus`` adds ``in_process``) make them URL
strings. The fake's default (URLs) is therefore validated against the spec with exactly that schema
replaced (:func:`current_reference`), and its ``counts`` option against the published spec as it is.
Answers whose status the spec does not declare for the operation (401, 404 for a list, 429) are held to
the spec's ``errorModel``. See ``docs/vendors/brevo.md``.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import yaml
from openapi_core import Config, OpenAPI

from crmsync_brevo import FakeBrevo, ManualClock
from crmsync_brevo.fake import IMPORT_REPORT_KEYS, SANDBOX_BASE_URL, SANDBOX_LIST_ID
from crmsync_core.ratelimit import RateLimit

from .conftest import SPEC_PATH, OpenAPIRequest, brevo_openapi


class OpenAPIResponse:
    """An ``httpx.Response`` in the shape openapi-core validates."""

    def __init__(self, response: httpx.Response) -> None:
        self.data = response.content
        self.status_code = response.status_code
        self.content_type = response.headers.get("content-type", "")
        self.headers = response.headers


@functools.cache
def current_reference() -> OpenAPI:
    """The published spec with ``GET /processes/{processId}``'s import report as the current reference
    and SDK have it: each ``info.import`` entry a URL string or null, ``in_process`` a status."""
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open() as file:
        document = copy.deepcopy(yaml.load(file, Loader=loader))  # noqa: S506 - a safe loader
    schema = document["paths"]["/processes/{processId}"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    schema["properties"]["status"]["enum"].append("in_process")
    entries = schema["properties"]["info"]["properties"]["import"]["properties"]
    for key in IMPORT_REPORT_KEYS:
        entries[key] = {"type": "string", "format": "url", "nullable": True}
    return OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))


def spec_problem(spec: OpenAPI, request: httpx.Request, response: httpx.Response) -> str | None:
    if response.status_code == 204:
        # The spec declares 204 with an empty ``content`` map, which openapi-core reads as "a body is
        # required"; what the spec means is no body at all.
        return None if response.content == b"" else f"204 with a body: {response.content[:80]!r}"
    try:
        spec.validate_response(OpenAPIRequest(request), OpenAPIResponse(response))
    except Exception as exc:
        details = "; ".join(str(e) for e in getattr(exc, "schema_errors", ()) or ())
        return f"{type(exc).__name__}: {exc} {details}"
    return None


def error_model_problem(response: httpx.Response) -> str | None:
    """The spec's ``components.schemas.errorModel``: ``message`` (required) and ``code`` strings."""
    body = response.json()
    if not isinstance(body, dict) or not isinstance(body.get("message"), str):
        return f"no message: {body!r}"
    if not isinstance(body.get("code", ""), str):
        return f"code is not a string: {body!r}"
    return None


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fake(clock: ManualClock) -> FakeBrevo:
    return FakeBrevo(clock=clock, import_delay_seconds=10.0)


@pytest.fixture
async def brevo(fake: FakeBrevo) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=SANDBOX_BASE_URL, transport=fake.transport(), headers={"api-key": fake.api_key}
    ) as client:
        yield client


async def exchange(
    client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
) -> tuple[httpx.Request, httpx.Response]:
    request = client.build_request(method, path, **kwargs)
    return request, await client.send(request)


async def test_contact_upserts_and_their_refusals_match_the_spec(brevo: httpx.AsyncClient) -> None:
    answers = [
        await exchange(brevo, "POST", "/contacts", json={"email": "a@acme.io"}),
        await exchange(
            brevo, "POST", "/contacts", json={"email": "a@acme.io", "updateEnabled": True}
        ),
        await exchange(brevo, "POST", "/contacts", json={"email": "a@acme.io"}),
        await exchange(brevo, "POST", "/contacts", json={"email": "x@rejected.invalid"}),
        await exchange(
            brevo, "POST", "/contacts", json={"email": "b@acme.io", "attributes": {"SMS": "12"}}
        ),
    ]
    assert [response.status_code for _, response in answers] == [201, 204, 400, 400, 400]
    assert [spec_problem(brevo_openapi(), *answer) for answer in answers] == [None] * 5
    assert answers[2][1].json()["code"] == "duplicate_parameter"


async def test_import_and_each_process_state_match_the_spec(
    brevo: httpx.AsyncClient, clock: ManualClock
) -> None:
    items = [{"email": "ok@acme.io"}, {"email": "bad@rejected.invalid"}, {"email": "OK@acme.io"}]
    started = await exchange(
        brevo, "POST", "/contacts/import", json={"jsonBody": items, "listIds": [SANDBOX_LIST_ID]}
    )
    assert started[1].status_code == 202
    assert spec_problem(brevo_openapi(), *started) is None
    path = f"/processes/{started[1].json()['processId']}"
    queued = await exchange(brevo, "GET", path)
    clock.advance(6.0)
    running = await exchange(brevo, "GET", path)
    clock.advance(6.0)
    completed = await exchange(brevo, "GET", path)
    states = [r.json()["status"] for _, r in (queued, running, completed)]
    assert states == ["queued", "processing", "completed"]
    for answer in (queued, running):
        assert spec_problem(brevo_openapi(), *answer) is None
    # the default report (URLs) is the current reference's, not the published spec's counts
    assert spec_problem(current_reference(), *completed) is None
    assert spec_problem(brevo_openapi(), *completed) is not None
    unknown = await exchange(brevo, "GET", "/processes/999999")
    assert unknown[1].status_code == 404 and spec_problem(brevo_openapi(), *unknown) is None


async def test_the_options_match_the_spec_they_come_from(
    fake: FakeBrevo, brevo: httpx.AsyncClient, clock: ManualClock
) -> None:
    fake.import_report, fake.running_status = "counts", "in_process"
    started = await exchange(
        brevo,
        "POST",
        "/contacts/import",
        json={"jsonBody": [{"email": "x@rejected.invalid"}], "listIds": [SANDBOX_LIST_ID]},
    )
    path = f"/processes/{started[1].json()['processId']}"
    clock.advance(6.0)
    running = await exchange(brevo, "GET", path)
    assert running[1].json()["status"] == "in_process"
    assert spec_problem(current_reference(), *running) is None  # the older spelling, in the SDK
    clock.advance(6.0)
    completed = await exchange(brevo, "GET", path)
    assert completed[1].json()["info"]["import"]["invalid_emails"] == 1
    assert spec_problem(brevo_openapi(), *completed) is None
    fake.import_outcome = "failed"
    failed_start = await exchange(
        brevo,
        "POST",
        "/contacts/import",
        json={"jsonBody": [{"email": "y@acme.io"}], "listIds": [SANDBOX_LIST_ID]},
    )
    clock.advance(20.0)
    failed = await exchange(brevo, "GET", f"/processes/{failed_start[1].json()['processId']}")
    assert failed[1].json()["status"] == "failed"
    assert spec_problem(brevo_openapi(), *failed) is None


async def test_answers_the_spec_does_not_declare_use_its_error_model(
    clock: ManualClock,
) -> None:
    fake = FakeBrevo(clock=clock, rate_limit=RateLimit(1, 1.0))
    async with httpx.AsyncClient(
        base_url=SANDBOX_BASE_URL, transport=fake.transport(), headers={"api-key": "xkeysib-wrong"}
    ) as wrong_key:
        unauthorized = await wrong_key.post("/contacts", json={"email": "a@acme.io"})
        limited = await wrong_key.post("/contacts", json={"email": "a@acme.io"})
    clock.advance(2.0)
    async with httpx.AsyncClient(
        base_url=SANDBOX_BASE_URL, transport=fake.transport(), headers={"api-key": fake.api_key}
    ) as brevo:
        no_list = await brevo.post("/contacts", json={"email": "a@acme.io", "listIds": [999]})
    assert [r.status_code for r in (unauthorized, limited, no_list)] == [401, 429, 404]
    assert [error_model_problem(r) for r in (unauthorized, limited, no_list)] == [None] * 3
