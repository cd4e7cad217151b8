"""Every request sent to Brevo in these tests is checked against Brevo's published OpenAPI spec.

An autouse fixture wraps ``httpx.AsyncClient.send``: each request to a ``/v3/...`` path is validated
(path, method, ``api-key`` security header, body schema) with openapi-core against
``tests/fixtures/brevo-openapi-v3.yaml`` (Brevo's published spec, copied into the repository), whatever host the test points the adapter at (the fake's
sandbox host or a loopback port stand in for ``https://api.brevo.com``). A violation fails the test at
teardown, even when the adapter turned the failed request into an outcome. Downloads of import reports
(not part of the API) are the only requests left out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
import yaml
from openapi_core import Config, OpenAPI
from openapi_core.datatypes import RequestParameters
from werkzeug.datastructures import Headers, ImmutableMultiDict

from crmsync_brevo.fake import REPORT_HOST

SPEC_PATH = Path(__file__).resolve().parents[1] / "fixtures" / "brevo-openapi-v3.yaml"
API_HOST_URL = "https://api.brevo.com"


@functools.cache
def brevo_openapi() -> OpenAPI:
    """Brevo's spec, parsed once per test session (the file is about 1 MB)."""
    loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with SPEC_PATH.open() as file:
        document = yaml.load(file, Loader=loader)  # noqa: S506 - a safe loader
    return OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))


class OpenAPIRequest:
    """An ``httpx.Request`` in the shape openapi-core validates, moved onto Brevo's real host."""

    def __init__(self, request: httpx.Request) -> None:
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(parse_qsl(request.url.query.decode())),
            header=Headers(list(request.headers.multi_items())),
            cookie=ImmutableMultiDict(),
        )
        self.method = request.method.lower()
        self.body: bytes | None = request.content or None
        self.content_type = request.headers.get("content-type", "")
        self.host_url = API_HOST_URL
        self.path = request.url.path


def spec_violation(request: httpx.Request) -> str | None:
    """Why ``request`` breaks Brevo's spec, or ``None``."""
    if request.url.host == REPORT_HOST:
        return None
    if not request.url.path.startswith("/v3/"):
        return f"{request.method} {request.url}: not a Brevo v3 API path"
    try:
        brevo_openapi().validate_request(OpenAPIRequest(request))
    except Exception as exc:
        details = "; ".join(str(e) for e in getattr(exc, "schema_errors", ()) or ())
        return f"{request.method} {request.url.path}: {type(exc).__name__}: {exc} {details}".strip()
    return None


@pytest.fixture(autouse=True)
def brevo_spec_check(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[httpx.Request]]:
    """Validate every request any ``httpx.AsyncClient`` sends during the test; yields them."""
    sent: list[httpx.Request] = []
    violations: list[str] = []
    original = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        await request.aread()
        sent.append(request)
        if (problem := spec_violation(request)) is not None:
            violations.append(problem)
        return await original(self, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", send)
    yield sent
    if violations:
        pytest.fail("requests that break Brevo's OpenAPI spec:\n" + "\n".join(violations[:5]))
