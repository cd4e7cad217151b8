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

import json
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
from pydantic import SecretStr

from crmsync_core.adapter import Sandbox, SandboxOptions
from crmsync_core.ratelimit import Bucket, RateLimit, WindowKind
from crmsync_core.testing.fakecrm import Budget, FakeCrm, respond

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
#: the scopes a private app made for crmsync has (objects for the sync, schemas for setup and check)
ALL_SCOPES = frozenset(
    {
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
        "crm.schemas.contacts.read",
        "crm.schemas.contacts.write",
    }
)
TOKEN_INFO_PATH = "/oauth/v2/private-apps/get/access-token-info"  # noqa: S105 (a path)
_READ_ONLY = frozenset({"createdate", "lastmodifieddate", "hs_object_id"})


@dataclass
class FakeContact:
    id: str
    properties: dict[str, str]
    created_at: str
    updated_at: str


@dataclass
class FakeHubspot(FakeCrm):
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
    #: the private app's scopes: a request that needs another is answered 403 ``MISSING_SCOPES``
    scopes: set[str] = field(default_factory=lambda: set(ALL_SCOPES))

    def __post_init__(self) -> None:
        FakeCrm.__init__(self, failure_rate=self.failure_rate, seed=self.seed)
        # The daily budget is a fixed window from midnight to midnight in the account's time zone.
        self.windows.calendar["daily"] = self._midnight
        self.contacts: dict[str, FakeContact] = {}
        self.property_definitions: dict[str, dict[str, Any]] = {
            name: _property_json(name, name, "string", "text") for name in self.properties
        }
        #: inputs per accepted upsert request, in order
        self.batch_sizes: list[int] = []
        self._next_id = 1001

    # -- control ------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[httpx.Request]:
        """Every request received, in order."""
        return self.log

    def fail_next(
        self,
        status: int | None = 503,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests with ``status`` and ``body`` (``status=None``: time out)."""
        self.script(
            status,
            body=body,
            headers=headers,
            times=times,
            fault="timeout" if status is None else None,
        )

    def use_up_daily_limit(self) -> None:
        """Spend today's budget (sets a daily limit of 1,000 if there was none)."""
        if self.daily_limit is None:
            self.daily_limit = 1000
        self.windows.exhaust(self._daily_bucket(), self.now())

    def contact(self, email: str) -> FakeContact | None:
        return self.contacts.get(email.strip().lower())

    @property
    def upsert_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path in UPSERT_PATHS]

    # -- the API ------------------------------------------------------------------------------------

    async def answer(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _error(
                401,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication "
                "and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
            )
        budgets, full = self.take_budget(request)
        headers = self._budget_headers(budgets)
        if full is not None:
            return _rate_limited(full, headers)
        scripted = self.take_scripted(request)
        if scripted is not None:
            return scripted.response(headers)
        if self.injected_failure():
            status = self.rng.choice([502, 503, 504])
            return respond(status, {"status": "error", "message": "Bad gateway (injected)"})
        response = self._route(request)
        response.headers.update(headers)
        return response

    def _route(self, request: httpx.Request) -> httpx.Response:
        answered = self._account_route(request)
        if answered is not None:
            return answered
        path = request.url.path
        if request.method == "POST" and path in UPSERT_PATHS:
            return self._upsert(request)
        if path.startswith(DEFAULT_PROPERTIES_PATH + "/") and request.method == "GET":
            return self._get_property(path.removeprefix(DEFAULT_PROPERTIES_PATH + "/"))
        if path == DEFAULT_PROPERTIES_PATH and request.method == "POST":
            return self._create_property(request)
        return respond(404, {"status": "error", "message": f"Not Found: {path}"})

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
        return respond(207 if errors else 200, answer)

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
        return respond(200, definition)

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
        return respond(201, self.property_definitions[name])

    # -- scopes, property listing and batch creation (``crmsync check`` / ``crmsync hubspot setup``) --

    def _account_route(self, request: httpx.Request) -> httpx.Response | None:
        path, method = request.url.path, request.method
        if path == TOKEN_INFO_PATH and method == "POST":
            return self._token_info(request)
        needed = _needed_scope(method, path)
        if needed is not None and needed not in self.scopes:
            return _missing_scopes(needed)
        if path == DEFAULT_PROPERTIES_PATH and method == "GET":
            # "Read all properties": {"results": [property, ...]}
            results = [
                self.property_definitions[name]
                for name in sorted(self.properties)
                if name in self.property_definitions
            ]
            return respond(200, {"results": results})
        if path == DEFAULT_PROPERTIES_PATH + "/batch/create" and method == "POST":
            return self._batch_create_properties(request)
        return None

    def _token_info(self, request: httpx.Request) -> httpx.Response:
        # HubSpot's private apps guide: POST {"tokenKey": token} -> the app's ids and its scopes.
        try:
            key = json.loads(request.content).get("tokenKey")
        except (ValueError, AttributeError):
            key = None
        if key != self.token:
            # UNCONFIRMED: HubSpot's exact answer for an unknown token.
            return _error(400, "VALIDATION_ERROR", "tokenKey is not a valid private app token")
        return respond(
            200, {"userId": 1, "hubId": 12345, "appId": 678, "scopes": sorted(self.scopes)}
        )

    def _batch_create_properties(self, request: httpx.Request) -> httpx.Response:
        # "Batch create properties": {"inputs": [PropertyCreate]} -> 201 {"status", "results": [...]}
        try:
            inputs = json.loads(request.content)["inputs"]
            assert isinstance(inputs, list)
        except (ValueError, KeyError, TypeError, AssertionError):
            return _error(400, "VALIDATION_ERROR", "inputs is required")
        results, errors = [], []
        now = _iso(self.clock())
        for item in inputs:
            name = item.get("name") if isinstance(item, dict) else None
            if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                errors.append(
                    {"status": "error", "message": f"Property name {name!r} is not valid"}
                )
            elif name in self.properties:
                errors.append(
                    {"status": "error", "message": f"A property named '{name}' already exists."}
                )
            else:
                self.properties.add(name)
                self.property_definitions[name] = _property_json(
                    name, item["label"], item["type"], item["fieldType"], item["groupName"]
                )
                results.append(self.property_definitions[name])
        answer: dict[str, Any] = {
            "status": "COMPLETE",
            "results": results,
            "startedAt": now,
            "completedAt": now,
        }
        if errors:
            answer.update(numErrors=len(errors), errors=errors)
        return respond(207 if errors else 201, answer)

    # -- budgets ------------------------------------------------------------------------------------

    def now(self) -> float:
        return self.clock()

    def _midnight(self, now: float) -> float:
        moment = datetime.fromtimestamp(now, ZoneInfo(self.timezone))
        return moment.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()

    def _daily_bucket(self) -> Bucket:
        return Bucket("daily", self.daily_limit or 1, 86_400.0, WindowKind.FIXED)

    def rate_buckets(self, request: httpx.Request) -> Sequence[Bucket]:
        """Every request counts against the daily budget and the rolling window (checked in that
        order: a spent daily budget answers ``DAILY`` whatever the window holds)."""
        buckets = []
        if self.daily_limit is not None:
            buckets.append(self._daily_bucket())
        if self.rate_limit is not None:
            limit = self.rate_limit
            buckets.append(Bucket("rolling", limit.requests, limit.period_seconds))
        return buckets

    def _budget_headers(self, budgets: Iterable[Budget]) -> dict[str, str]:
        headers: dict[str, str] = {}
        for budget in budgets:
            if budget.bucket.name == "rolling":
                headers["X-HubSpot-RateLimit-Max"] = str(budget.bucket.requests)
                headers["X-HubSpot-RateLimit-Remaining"] = str(budget.remaining)
                headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(
                    round(budget.bucket.period_seconds * 1000)
                )
            else:
                headers["X-HubSpot-RateLimit-Daily"] = str(budget.bucket.requests)
                headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(budget.remaining)
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


def _rate_limited(full: Budget, headers: dict[str, str]) -> httpx.Response:
    """HubSpot's 429: ``policyName`` ``DAILY`` or ``TEN_SECONDLY_ROLLING``."""
    policy = "DAILY" if full.bucket.name == "daily" else "TEN_SECONDLY_ROLLING"
    message = (
        "You have reached your daily limit."
        if policy == "DAILY"
        else "You have reached your ten_secondly_rolling limit."
    )
    body = {
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
    }
    return respond(429, body, headers)


def _error(status: int, category: str, message: str) -> httpx.Response:
    return respond(
        status,
        {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
        },
    )


def _needed_scope(method: str, path: str) -> str | None:
    """The scope HubSpot's reference lists for the request (``None``: not one the fake checks)."""
    if path in UPSERT_PATHS:
        return "crm.objects.contacts.write"
    if path == DEFAULT_PROPERTIES_PATH or path.startswith(DEFAULT_PROPERTIES_PATH + "/"):
        return "crm.schemas.contacts.read" if method == "GET" else "crm.schemas.contacts.write"
    return None


def _missing_scopes(scope: str) -> httpx.Response:
    """HubSpot's 403 for a token without a scope the endpoint requires (category MISSING_SCOPES)."""
    return respond(
        403,
        {
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call. Read "
            "more about required scopes here: https://developers.hubspot.com/scopes.",
            "correlationId": str(uuid.uuid4()),
            "errors": [
                {
                    "message": "One or more of the following scopes are required.",
                    "context": {"requiredGranularScopes": [scope]},
                }
            ],
            "category": "MISSING_SCOPES",
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
