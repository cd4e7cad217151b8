"""A stateful, in-process HubSpot: what the tests, the demo and the benchmark talk to.

:class:`FakeHubspot` serves the part of HubSpot's API the adapter uses, with HubSpot's status codes,
error bodies and rate-limit headers:

* ``POST {upsert path}`` upserts contacts by e-mail (stable ids, ``new`` flags) and answers 200, or 207 with
  per-input errors when the inputs carry ``objectWriteTraceId`` (HubSpot's multi-status mode: an invalid
  e-mail or an unknown property fails only its own inputs, each error naming its input in
  ``context.objectWriteTraceId``), or 400 for the whole batch (duplicate ids, more than 100 inputs, and
  invalid inputs without trace ids or with ``rejection="batch"``);
* ``GET {properties path}/{name}`` and ``POST {properties path}`` read and create contact properties;
* the token is checked (401 ``INVALID_AUTHENTICATION``); a rolling request window answers 429
  ``TEN_SECONDLY_ROLLING`` and a daily budget 429 ``DAILY`` (reset at midnight in the fake account's time
  zone), with the ``X-HubSpot-RateLimit-*`` headers on every answer;
* failures can be injected: a share of 5xx answers drawn from a seed, or the next answers given explicitly.

Time comes from ``clock`` (epoch seconds), so tests and benchmarks can drive it.

Every behaviour here is traced to HubSpot's documentation or SDK, and marked confirmed or assumed, in
``docs/vendors/hubspot.md``; the answers parse into ``hubspot-api-client``'s response models
(``tests/hubspot/test_response_shapes.py``).
"""

from __future__ import annotations

import collections
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from crmsync_core.adapter import Sandbox, SandboxOptions
from crmsync_core.ratelimit import RateLimit

from .settings import DEFAULT_PROPERTIES_PATH, DEFAULT_UPSERT_PATH, HubspotSettings

BASE_URL = "https://api.hubapi.test"
DEFAULT_TOKEN = "pat-na1-fake-0000-hubspot-token"  # noqa: S105 (the fake's own token)
#: HubSpot's paths for the same upsert: the v3 path and a dated one
UPSERT_PATHS = (DEFAULT_UPSERT_PATH, "/crm/objects/2026-03/contacts/batch/upsert")
MAX_INPUTS = 100
STANDARD_PROPERTIES = (
    "email",
    "firstname",
    "lastname",
    "phone",
    "company",
    "website",
    "createdate",
    "lastmodifieddate",
    "hs_object_id",
)
SCRAPERSKY_PROPERTIES = ("scrapersky_domain_id", "scrapersky_page_id", "scrapersky_sync_date")
_READ_ONLY = frozenset({"createdate", "lastmodifieddate", "hs_object_id"})


@dataclass
class FakeContact:
    id: str
    properties: dict[str, str]
    created_at: str
    updated_at: str


@dataclass
class _Injected:
    status: int | None
    body: Any
    headers: dict[str, str]
    times: int


@dataclass
class FakeHubspot:
    """One HubSpot account. Every attribute may be changed between requests."""

    token: str = DEFAULT_TOKEN
    #: requests per rolling window; ``None``: unlimited
    rate_limit: RateLimit | None = None
    #: requests per day (HubSpot: 250,000 on Free/Starter); ``None``: unlimited
    daily_limit: int | None = None
    #: the account's time zone: the daily budget resets at midnight there
    timezone: str = "UTC"
    #: share of requests answered 502/503/504, drawn from ``seed``
    failure_rate: float = 0.0
    seed: int = 0
    #: e-mails at these domains fail HubSpot's validation (``INVALID_EMAIL``)
    rejected_domains: set[str] = field(default_factory=lambda: {"rejected.invalid"})
    #: how an invalid input is answered. ``auto`` (HubSpot's documented behaviour): a 207 with
    #: per-input errors when every input carries an ``objectWriteTraceId`` (multi-status mode), else the
    #: whole batch with 400. ``partial`` always answers 207, ``batch`` always 400.
    rejection: Literal["auto", "partial", "batch"] = "auto"
    #: how a 207 error names its input: ``trace`` (documented) ``context.objectWriteTraceId``;
    #: ``ids`` ``context.ids`` (assumed form); ``none`` not at all, not even in the message (an
    #: anonymous error: the adapter must bisect)
    error_context: Literal["trace", "ids", "none"] = "trace"
    #: property names that exist in the account
    properties: set[str] = field(
        default_factory=lambda: set(STANDARD_PROPERTIES) | set(SCRAPERSKY_PROPERTIES)
    )
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.contacts: dict[str, FakeContact] = {}
        self.property_definitions: dict[str, dict[str, Any]] = {
            name: _property_json(name, name, "string", "text") for name in self.properties
        }
        self.requests: list[httpx.Request] = []
        #: inputs per accepted upsert request, in order
        self.batch_sizes: list[int] = []
        self.rate_limited = 0
        self._rng = random.Random(self.seed)
        self._window: collections.deque[float] = collections.deque()
        self._day: str | None = None
        self._daily_used = 0
        self._next_id = 1001
        self._injected: collections.deque[_Injected] = collections.deque()

    # -- control ------------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fail_next(
        self,
        status: int | None = 503,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and ``body`` (``status=None``: time out)."""
        self._injected.append(_Injected(status, body, dict(headers or {}), times))

    def use_up_daily_limit(self) -> None:
        """Spend today's budget (sets a daily limit of 1,000 if there was none)."""
        if self.daily_limit is None:
            self.daily_limit = 1000
        self._roll_day()
        self._daily_used = self.daily_limit

    def contact(self, email: str) -> FakeContact | None:
        return self.contacts.get(email.strip().lower())

    @property
    def upsert_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path in UPSERT_PATHS]

    # -- the API ------------------------------------------------------------------------------------

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication "
                "and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        limited = self._spend_budget()
        if limited is not None:
            self.rate_limited += 1
            return limited
        headers = self._budget_headers()
        if self._injected:
            injected = self._injected[0]
            injected.times -= 1
            if injected.times <= 0:
                self._injected.popleft()
            if injected.status is None:
                raise httpx.ReadTimeout("injected timeout", request=request)
            return _response(injected.status, injected.body, {**headers, **injected.headers})
        if self.failure_rate and self._rng.random() < self.failure_rate:
            status = self._rng.choice([502, 503, 504])
            return _response(status, {"status": "error", "message": "Bad gateway (injected)"})
        response = self._route(request)
        response.headers.update(headers)
        return response

    def _route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "POST" and path in UPSERT_PATHS:
            return self._upsert(request)
        if path.startswith(DEFAULT_PROPERTIES_PATH + "/") and request.method == "GET":
            return self._get_property(path.removeprefix(DEFAULT_PROPERTIES_PATH + "/"))
        if path == DEFAULT_PROPERTIES_PATH and request.method == "POST":
            return self._create_property(request)
        return _response(404, {"status": "error", "message": f"Not Found: {path}"})

    def _upsert(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content)
            inputs = body["inputs"]
            assert isinstance(inputs, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return _error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1")
        if not inputs:
            return _error(400, "VALIDATION_ERROR", "inputs must not be empty")
        if len(inputs) > MAX_INPUTS:
            return _error(
                400,
                "VALIDATION_ERROR",
                f"Batch input size of {len(inputs)} exceeds the maximum of {MAX_INPUTS}",
            )
        ids = [str(item.get("id", "")).lower() for item in inputs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            return _error(
                400, "VALIDATION_ERROR", f"Duplicate IDs found in batch input: {duplicates}"
            )
        if any(item.get("idProperty") != "email" for item in inputs):
            return _error(
                400, "VALIDATION_ERROR", "Unable to perform upsert by non-unique property"
            )

        partial = self.rejection == "partial" or (
            self.rejection == "auto" and all(item.get("objectWriteTraceId") for item in inputs)
        )
        problems = {str(item["id"]).lower(): self._problems(item) for item in inputs}
        if not partial and any(problems.values()):
            return _property_errors(
                dict.fromkeys(p for listed in problems.values() for p in listed)
            )

        now = _iso(self.clock())
        results, errors = [], []
        for item in inputs:
            found = problems[str(item["id"]).lower()]
            if found:
                errors.append(self._input_error(item, found))
                continue
            results.append(self._store(item, now))
        self.batch_sizes.append(len(inputs))
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if errors:
            answer.update(numErrors=len(errors), errors=errors)
        return _response(207 if errors else 200, answer)

    def _problems(self, item: dict[str, Any]) -> list[tuple[str, str, str]]:
        """What HubSpot's validation finds in one input: ``(property, code, message)`` each."""
        found = [
            (name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist')
            for name in sorted(set(item.get("properties", {})) - self.properties)
        ]
        domain = str(item.get("id", "")).rpartition("@")[2].lower()
        if domain in self.rejected_domains:
            found.append(("email", "INVALID_EMAIL", f"Email address {item['id']} is invalid"))
        return found

    def _input_error(
        self, item: dict[str, Any], problems: list[tuple[str, str, str]]
    ) -> dict[str, Any]:
        """One entry of a 207's ``errors``: the SDK's ``StandardError``, shaped like the example of
        HubSpot's "Multi-status errors" documentation (the message lists the invalid properties)."""
        if self.error_context == "none":
            problems = [(n, c, text.replace(f" {item['id']} ", " ")) for n, c, text in problems]
        message = _property_message(problems)
        context: dict[str, list[str]] = {}
        if self.error_context == "ids":
            context = {"ids": [str(item["id"])]}
        elif self.error_context == "trace" and item.get("objectWriteTraceId"):
            context = {"objectWriteTraceId": [str(item["objectWriteTraceId"])]}
        return {
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": message,
            "context": context,
            "errors": [
                {"message": text, "code": code, "in": name} for name, code, text in problems
            ],
            "links": {},
        }

    def _store(self, item: dict[str, Any], now: str) -> dict[str, Any]:
        email = str(item["id"]).strip().lower()
        properties = {k: str(v) for k, v in item.get("properties", {}).items()}
        properties["email"] = email
        existing = self.contacts.get(email)
        if existing is None:
            existing = FakeContact(str(self._next_id), {}, now, now)
            self._next_id += 1
            self.contacts[email] = existing
            new = True
        else:
            new = False
        existing.properties.update(properties)
        existing.updated_at = now
        result: dict[str, Any] = {
            "id": existing.id,
            "new": new,
            "archived": False,
            "createdAt": existing.created_at,
            "updatedAt": now,
            "properties": {
                **existing.properties,
                "hs_object_id": existing.id,
                "createdate": existing.created_at,
                "lastmodifieddate": now,
            },
        }
        if "objectWriteTraceId" in item:
            result["objectWriteTraceId"] = item["objectWriteTraceId"]
        return result

    def _get_property(self, name: str) -> httpx.Response:
        definition = self.property_definitions.get(name)
        if definition is None or name not in self.properties:
            return _error(404, "OBJECT_NOT_FOUND", f"Unable to find property {name}")
        return _response(200, definition)

    def _create_property(self, request: httpx.Request) -> httpx.Response:
        try:
            body = json.loads(request.content)
            name, label = body["name"], body["label"]
            kind, field_type, group = body["type"], body["fieldType"], body["groupName"]
        except (ValueError, KeyError, TypeError):
            return _error(
                400, "VALIDATION_ERROR", "name, label, type, fieldType and groupName are required"
            )
        if not re.fullmatch(r"[a-z][a-z0-9_]*", str(name)):
            return _error(400, "VALIDATION_ERROR", f"Property name {name!r} is not valid")
        if name in self.properties:
            return _error(409, "CONFLICT", f"A property named '{name}' already exists.")
        self.properties.add(name)
        self.property_definitions[name] = _property_json(name, label, kind, field_type, group)
        return _response(201, self.property_definitions[name])

    # -- budgets ------------------------------------------------------------------------------------

    def _roll_day(self) -> None:
        day = datetime.fromtimestamp(self.clock(), ZoneInfo(self.timezone)).date().isoformat()
        if day != self._day:
            self._day, self._daily_used = day, 0

    def _spend_budget(self) -> httpx.Response | None:
        now = self.clock()
        self._roll_day()
        if self.daily_limit is not None and self._daily_used >= self.daily_limit:
            return _response(
                429,
                {
                    "status": "error",
                    "message": "You have reached your daily limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": str(uuid.uuid4()),
                    "policyName": "DAILY",
                },
                self._budget_headers(),
            )
        if self.rate_limit is not None:
            while self._window and self._window[0] <= now - self.rate_limit.period_seconds:
                self._window.popleft()
            if len(self._window) >= self.rate_limit.requests:
                return _response(
                    429,
                    {
                        "status": "error",
                        "message": "You have reached your ten_secondly_rolling limit.",
                        "errorType": "RATE_LIMIT",
                        "correlationId": str(uuid.uuid4()),
                        "policyName": "TEN_SECONDLY_ROLLING",
                    },
                    self._budget_headers(),
                )
            self._window.append(now)
        self._daily_used += 1
        return None

    def _budget_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.rate_limit is not None:
            headers["X-HubSpot-RateLimit-Max"] = str(self.rate_limit.requests)
            headers["X-HubSpot-RateLimit-Remaining"] = str(
                max(0, self.rate_limit.requests - len(self._window))
            )
            headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(
                round(self.rate_limit.period_seconds * 1000)
            )
        if self.daily_limit is not None:
            headers["X-HubSpot-RateLimit-Daily"] = str(self.daily_limit)
            headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(
                max(0, self.daily_limit - self._daily_used)
            )
        return headers


def make_sandbox(options: SandboxOptions) -> Sandbox[HubspotSettings]:
    """A healthy fake HubSpot account (with ScraperSky's custom properties) and settings pointing at it."""
    settings = HubspotSettings(
        api_key=SecretStr(DEFAULT_TOKEN),
        api_base_url=BASE_URL,
        upsert_path=DEFAULT_UPSERT_PATH,
        properties_path=DEFAULT_PROPERTIES_PATH,
    )
    fake = FakeHubspot(
        rate_limit=options.rate_limit,
        failure_rate=options.failure_rate,
        seed=options.seed,
    )
    fake.properties |= set(settings.custom_properties().values())
    return Sandbox(settings=settings, transport=fake.transport(), fake=fake)


# -- HubSpot's answers ----------------------------------------------------------------------------


def _response(status: int, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    if body is None:
        return httpx.Response(status, headers=headers)
    if isinstance(body, bytes | str):
        return httpx.Response(status, content=body, headers=headers)
    return httpx.Response(status, json=body, headers=headers)


def _error(status: int, category: str, message: str) -> httpx.Response:
    return _response(
        status,
        {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
        },
    )


def _property_errors(problems: Iterable[tuple[str, str, str]]) -> httpx.Response:
    """HubSpot's 400 for invalid property values: a JSON list inside the message string."""
    return _error(400, "VALIDATION_ERROR", _property_message(problems))


def _property_message(problems: Iterable[tuple[str, str, str]]) -> str:
    details = [
        {
            "isValid": False,
            "message": message,
            "error": code,
            "name": name,
            "localizedErrorMessage": message,
        }
        for name, code, message in problems
    ]
    return f"Property values were not valid: {json.dumps(details, separators=(',', ':'))}"


def _property_json(
    name: str, label: str, kind: str, field_type: str, group: str = "contactinformation"
) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "groupName": group,
        "description": "",
        "hidden": False,
        "formField": False,
        "modificationMetadata": {
            "archivable": True,
            "readOnlyDefinition": name in _READ_ONLY,
            "readOnlyValue": name in _READ_ONLY,
        },
    }


def _iso(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
