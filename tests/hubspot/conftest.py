"""Fixtures for the HubSpot tests. Every request body the adapter sends here is checked against
HubSpot's own models (the ``hubspot-api-client`` SDK, a test dependency only).

The SDK's models do not check much by themselves: ``client_side_validation`` is off by default, and its
deserialiser coerces values (``str(5)``) and drops unknown keys. :func:`sdk_model` is therefore strict: it
walks the model's ``openapi_types``, refuses unknown keys and values of the wrong JSON type, then builds the
model with ``client_side_validation=True`` (required fields, enums) and checks that the SDK serialises it
back to the very body that was sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import datetime
from types import ModuleType
from typing import Any

import httpx
import hubspot.crm.contacts as sdk_contacts
import hubspot.crm.properties as sdk_properties
import pytest
from pydantic import SecretStr

from crmsync_hubspot import FakeHubspot, HubspotSettings
from crmsync_hubspot.fake import BASE_URL, UPSERT_PATHS

PROPERTIES_PATH = "/crm/v3/properties/contacts"
_PRIMITIVES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
    "object": (object,),
}


class SdkMismatch(AssertionError):
    pass


def sdk_model(data: Any, type_name: str, package: ModuleType, where: str = "body") -> Any:
    """``data`` as an instance of the SDK's ``type_name``, or :class:`SdkMismatch` saying why not."""
    if type_name.startswith("list["):
        if not isinstance(data, list):
            raise SdkMismatch(f"{where}: expected a list, got {type(data).__name__}")
        inner = type_name[5:-1]
        return [sdk_model(item, inner, package, f"{where}[{i}]") for i, item in enumerate(data)]
    if type_name.startswith("dict["):
        if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
            raise SdkMismatch(f"{where}: expected an object with string keys")
        inner = type_name[5:-1].split(", ", 1)[1]
        return {k: sdk_model(v, inner, package, f"{where}.{k}") for k, v in data.items()}
    if type_name == "datetime":
        # HubSpot's timestamps are ISO 8601 strings (e.g. "2023-11-07T05:31:56Z")
        try:
            return datetime.fromisoformat(str(data).replace("Z", "+00:00"))
        except ValueError:
            raise SdkMismatch(f"{where}: expected an ISO 8601 date-time, got {data!r}") from None
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        wrong_bool = isinstance(data, bool) and bool not in allowed
        if not isinstance(data, allowed) or wrong_bool:
            raise SdkMismatch(f"{where}: expected {type_name}, got {json.dumps(data)}")
        return data
    model = getattr(package.models, type_name)
    if not isinstance(data, dict):
        raise SdkMismatch(f"{where}: expected a {type_name} object")
    json_keys = {key: attr for attr, key in model.attribute_map.items()}
    unknown = sorted(set(data) - set(json_keys))
    if unknown:
        raise SdkMismatch(f"{where}: {type_name} has no field(s) {unknown}")
    kwargs = {
        json_keys[key]: sdk_model(
            value, model.openapi_types[json_keys[key]], package, f"{where}.{key}"
        )
        for key, value in data.items()
    }
    configuration = package.Configuration()
    configuration.client_side_validation = True
    try:
        instance = model(**kwargs, local_vars_configuration=configuration)
    except ValueError as exc:
        raise SdkMismatch(f"{where}: {type_name}: {exc}") from None
    return instance


def validate(body: bytes, type_name: str, package: ModuleType) -> Any:
    data = json.loads(body)
    instance = sdk_model(data, type_name, package)
    echoed = package.ApiClient().sanitize_for_serialization(instance)
    if echoed != data:
        raise SdkMismatch(f"the SDK serialises {type_name} differently: {echoed} != {data}")
    return instance


class SdkValidator:
    """Checks request bodies against the SDK; mismatches fail the test at teardown."""

    def __init__(self) -> None:
        self.checked: list[Any] = []
        self.problems: list[str] = []

    def check(self, request: httpx.Request) -> None:
        path = request.url.path
        try:
            if request.method == "POST" and path in UPSERT_PATHS:
                self.checked.append(
                    validate(
                        request.content,
                        "BatchInputSimplePublicObjectBatchInputUpsert",
                        sdk_contacts,
                    )
                )
            elif request.method == "POST" and path == PROPERTIES_PATH:
                self.checked.append(validate(request.content, "PropertyCreate", sdk_properties))
        except (SdkMismatch, ValueError) as exc:
            self.problems.append(f"{request.method} {path}: {exc}")


class ValidatingTransport(httpx.AsyncBaseTransport):
    """Checks each request with the SDK, then hands it to ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, validator: SdkValidator) -> None:
        self.inner = inner
        self.validator = validator

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.validator.check(request)
        return await self.inner.handle_async_request(request)


@pytest.fixture(autouse=True)
def sdk_validator() -> Iterator[SdkValidator]:
    validator = SdkValidator()
    yield validator
    assert not validator.problems, "request bodies HubSpot's SDK rejects:\n" + "\n".join(
        validator.problems
    )


@pytest.fixture
def validated(
    sdk_validator: SdkValidator,
) -> Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]:
    """Wraps a transport so that what goes through it is checked against the SDK."""
    return lambda inner: ValidatingTransport(inner, sdk_validator)


@pytest.fixture
def upsert_model() -> Callable[[bytes], Any]:
    """Parses a batch-upsert body into the SDK's model, raising :class:`SdkMismatch` when it does not fit."""
    return lambda body: validate(body, "BatchInputSimplePublicObjectBatchInputUpsert", sdk_contacts)


@pytest.fixture
def fake() -> FakeHubspot:
    return FakeHubspot()


@pytest.fixture
def transport(fake: FakeHubspot, sdk_validator: SdkValidator) -> ValidatingTransport:
    return ValidatingTransport(fake.transport(), sdk_validator)


@pytest.fixture
def settings(fake: FakeHubspot) -> HubspotSettings:
    return HubspotSettings(api_key=SecretStr(fake.token), api_base_url=BASE_URL)
