"""A stateful Mautic in memory, for the tests, the demo (``crmsync demo``) and the benchmarks.

:class:`FakeMautic` answers the two endpoints the adapter uses the way Mautic 5 does:

* ``POST /oauth/v2/token`` (client-credentials grant): an access token that expires after
  ``token_lifetime`` seconds of ``clock``; 400 ``invalid_client`` for wrong credentials, and 400
  ``unauthorized_client`` when the client lacks the grant. Like Mautic's OAuth2 ``Client`` entity, a
  client allows only ``authorization_code`` and ``refresh_token`` unless ``grant_types`` says otherwise
  (:data:`CLIENT_CREDENTIALS_GRANTS` is a client an administrator created in Mautic 5, which adds
  ``client_credentials``);
* ``POST /api/contacts/batch/new``: an upsert by e-mail (case-insensitive), 201 for the batch with
  ``contacts``, ``statusCodes`` (201 created, 200 updated) and ``errors`` keyed by request index, which
  serialise as PHP does (a JSON list when the keys are ``0..n-1``, else an object) or, with
  ``map_style="objects"``, always as objects. Blank values never overwrite a field. Over ``batch_limit``
  contacts it answers 500 "A max of N entities are supported at a time.", as Mautic does.

It checks credentials (Basic and Bearer), can have its API or Basic auth switched off (403 like
Mautic's ``ApiSubscriber``), enforces an optional rate limit with 429 and ``X-RateLimit-*`` headers,
answers a share of requests with 503 (``failure_rate``, deterministic from ``seed``), rejects invalid
e-mails and contacts at ``rejected_domain`` the way Mautic's contact form does (HTTP 400 entries shaped
by ``returnError``: ``code``, ``message``, ``details`` per field, ``type: null``), and takes scripted
failures: :meth:`fail_next` for whole requests and :meth:`reject` for one contact's status code.

Every behaviour here is traced to Mautic's source (file and function), and marked confirmed or
assumed, in ``docs/vendors/mautic.md``; ``tests/mautic/test_response_shapes.py`` holds the fake's error
bodies to those shapes.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
from pydantic import SecretStr

from crmsync_core.adapter import Sandbox, SandboxOptions
from crmsync_core.ratelimit import Bucket, RateLimit, RateLimits, WindowKind
from crmsync_core.testing.fakecrm import FakeCrm, respond

from .settings import MauticSettings

SANDBOX_URL = "https://mautic.sandbox.invalid"
#: the grants of a new OAuth2 client (Mautic's ``ApiBundle/Entity/oAuth2/Client::__construct``)
DEFAULT_GRANTS: frozenset[str] = frozenset({"authorization_code", "refresh_token"})
#: the grants of an OAuth2 client an administrator creates in Mautic 5's API Credentials page
#: (``ApiBundle/Controller/ClientController::newAction`` adds ``client_credentials`` for admins)
CLIENT_CREDENTIALS_GRANTS: frozenset[str] = DEFAULT_GRANTS | {"client_credentials"}
_API_DISABLED = (
    "API disabled. You need to enable the API in the API settings page of your Mautic account."
)
_BASIC_DISABLED = (
    "Basic Auth disabled. You need to enable HTTP basic auth in the API settings page of your "
    "Mautic account."
)


#: the contact fields of a new Mautic (a few of its core fields): alias -> type
CORE_FIELDS: dict[str, str] = {
    "title": "lookup",
    "firstname": "text",
    "lastname": "text",
    "company": "text",
    "email": "email",
    "mobile": "tel",
    "phone": "tel",
    "website": "url",
}
_NO_ACCESS = "You do not have access to the requested area/action."


class FakeMautic(FakeCrm):
    """One Mautic installation: its contacts, credentials, settings and misbehaviour."""

    def __init__(
        self,
        *,
        username: str = "api-user",
        password: str = "fake-mautic-password",  # noqa: S107 (made up, for the fake)
        client_id: str = "1_fakemauticclient",
        client_secret: str = "fake-mautic-client-secret",  # noqa: S107
        grant_types: Collection[str] = DEFAULT_GRANTS,
        api_enabled: bool = True,
        basic_auth_enabled: bool = True,
        batch_limit: int = 200,
        token_lifetime: float = 3600.0,
        rate_limit: RateLimit | None = None,
        failure_rate: float = 0.0,
        seed: int = 0,
        rejected_domain: str = "rejected.invalid",
        validation_status: Literal[400, 422] = 400,
        map_style: Literal["php", "objects"] = "php",
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(failure_rate=failure_rate, seed=seed)
        self.username = username
        self.password = password
        self.client_id = client_id
        self.client_secret = client_secret
        #: the grant types the OAuth2 client allows (``allowedGrantTypes``)
        self.grant_types = frozenset(grant_types)
        self.api_enabled = api_enabled
        self.basic_auth_enabled = basic_auth_enabled
        self.batch_limit = batch_limit
        self.token_lifetime = token_lifetime
        self.rate_limit = rate_limit
        self.rejected_domain = rejected_domain
        #: the status of a contact the form refuses: 400, or 422 when a constraint sets that code
        #: (``CommonApiController::processForm``)
        self.validation_status = validation_status
        self.map_style = map_style
        self._clock = clock
        self._wall_clock = wall_clock
        #: Mautic contact id -> field alias -> value (plus ``tags``)
        self.contacts: dict[int, dict[str, Any]] = {}
        self._ids: dict[str, int] = {}
        #: contacts per batch request that reached the upsert
        self.batch_sizes: list[int] = []
        self.token_requests = 0
        self._tokens: dict[str, float] = {}
        self._rejections: dict[str, tuple[int, str]] = {}
        #: the contact fields: alias -> field as ``GET /api/fields/contact`` lists it
        self.fields: dict[str, dict[str, Any]] = {}
        for alias, kind in CORE_FIELDS.items():
            self.add_field(alias, kind)
        #: the API user's permission on contact fields (Mautic role "Contacts - Custom Fields")
        self.fields_permission: Literal["full", "view", "none"] = "full"

    # -- controls -----------------------------------------------------------------------------------

    @property
    def requests(self) -> list[httpx.Request]:
        """Every request received, token requests included."""
        return self.log

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` API requests (not token requests) with ``status`` and ``body``
        (JSON; bytes or text are sent as they are)."""
        if body is None:
            body = _error(f"Injected HTTP {status}", status)
        self.script(status, body=body, headers=headers, times=times)

    def reject(self, email: str, status: int = 422, message: str | None = None) -> None:
        """Answer ``status`` for this e-mail's entry in every batch from now on.

        400 and 422 come as form errors (``returnError``: ``message``, ``details``); other statuses as
        Mautic's ``setBatchError`` entries (``message``, ``code``, ``type: "api"``), as for 403.
        """
        self._rejections[email.strip().lower()] = (
            status,
            message or f"{email} was refused (injected HTTP {status}).",
        )

    def expire_tokens(self) -> None:
        """Make every access token issued so far expired, as if its lifetime had passed."""
        for token in self._tokens:
            self._tokens[token] = float("-inf")

    def contact(self, email: str) -> dict[str, Any] | None:
        """The fields Mautic holds for ``email`` (with ``id`` and ``tags``), or ``None``."""
        contact_id = self._ids.get(email.strip().lower())
        return None if contact_id is None else {"id": contact_id, **self.contacts[contact_id]}

    # -- the server ---------------------------------------------------------------------------------

    async def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/oauth/v2/token"):
            return self._token(request)
        if "/api/" not in path and not path.endswith("/api"):
            return respond(404, _error(f"Requested URL not found: {path}", 404))
        if not self.api_enabled:
            return respond(
                403, {"errors": [{"message": _API_DISABLED, "code": 403, "type": "api_disabled"}]}
            )
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        _, full = self.take_budget(request)
        if full is not None:
            message = (
                f"You exceeded the rate limit of {full.bucket.requests} API calls per "
                f"{full.bucket.period_seconds:g} seconds."
            )
            return respond(429, _error(message, 429), self._rate_headers())
        headers = self._rate_headers()
        scripted = self.take_scripted(request)
        if scripted is not None:
            return scripted.response(headers)
        if self.injected_failure():
            return respond(503, _error("Service Unavailable (injected)", 503), headers)
        if "/api/fields/contact" in path:
            return self._fields_api(request, headers)
        if not path.endswith("/api/contacts/batch/new"):
            return respond(404, _error(f"Requested URL not found: {path}", 404), headers)
        if request.method != "POST":
            return respond(405, _error(f"Method {request.method} not allowed", 405), headers)
        return self._batch_new(request, headers)

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests += 1
        if not self.api_enabled:
            return respond(
                403, {"errors": [{"message": _API_DISABLED, "code": 403, "type": "api_disabled"}]}
            )
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        # The order of FOSOAuthServer's OAuth2::grantAccessToken: the grant type, the client, then
        # whether this client may use that grant.
        grant = form.get("grant_type")
        if not grant:
            return respond(
                400,
                {
                    "error": "invalid_request",
                    "error_description": "Invalid grant_type parameter or parameter missing",
                },
            )
        if (form.get("client_id"), form.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return respond(
                400,
                {
                    "error": "invalid_client",
                    "error_description": "The client credentials are invalid",
                },
            )
        if grant not in self.grant_types:
            return respond(
                400,
                {
                    "error": "unauthorized_client",
                    "error_description": "The grant type is unauthorized for this client_id",
                },
            )
        if grant != "client_credentials":
            # The fake serves only the grant the adapter uses.
            return respond(
                400,
                {
                    "error": "invalid_request",
                    "error_description": f"The fake serves no {grant} flow",
                },
            )
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self._clock() + self.token_lifetime
        return respond(
            200,
            {
                "access_token": token,
                "expires_in": int(self.token_lifetime),
                "token_type": "bearer",
                "scope": None,
            },
        )

    def _authenticate(self, request: httpx.Request) -> httpx.Response | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "basic":
            if not self.basic_auth_enabled:
                return respond(
                    403,
                    {
                        "errors": [
                            {"message": _BASIC_DISABLED, "code": 403, "type": "access_denied"}
                        ]
                    },
                )
            try:
                user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                user, password = "", ""
            if (user, password) == (self.username, self.password):
                return None
            return respond(
                401,
                {
                    "errors": [
                        {"message": "Invalid credentials.", "code": 401, "type": "access_denied"}
                    ]
                },
            )
        if scheme.lower() == "bearer":
            expires_at = self._tokens.get(value)
            if expires_at is None:
                message = "The access token provided is invalid."
            elif self._clock() >= expires_at:
                message = "The access token provided has expired."
            else:
                return None
            return respond(
                401, {"errors": [{"message": message, "code": 401, "type": "invalid_grant"}]}
            )
        return respond(
            401,
            {
                "errors": [
                    {"message": "API authorization denied.", "code": 401, "type": "access_denied"}
                ]
            },
        )

    # ``api_rate_limiter_limit`` calls per period (app/bundles/ApiBundle/Config/config.php), counted
    # here in a fixed window that starts with the first call after the last window ended; the headers
    # (assumed: the rate-limit bundle Mautic uses) give its end as a Unix time, on the wall clock.
    def rate_buckets(self, request: httpx.Request) -> Sequence[Bucket]:
        return RateLimits.single(self.rate_limit, kind=WindowKind.FIXED, name="api").buckets

    def now(self) -> float:
        return self._wall_clock()

    def _rate_headers(self) -> dict[str, str]:
        buckets = self.rate_buckets(self.log[-1])
        if not buckets or not self.windows.started(buckets[0].name):
            return {}
        budget = self.windows.peek(buckets[0], self.now())
        return {
            "X-RateLimit-Limit": str(budget.bucket.requests),
            "X-RateLimit-Remaining": str(budget.remaining),
            "X-RateLimit-Reset": str(int(budget.window_start + budget.bucket.period_seconds)),
        }

    # -- contact fields (``crmsync check`` / ``crmsync mautic setup``) -----------------------------

    def add_field(
        self, alias: str, kind: str = "text", *, published: bool = True, label: str | None = None
    ) -> None:
        """Give the installation a contact field (as if an administrator had created it)."""
        self.fields[alias] = {
            "id": len(self.fields) + 1,
            "label": label or alias.replace("_", " ").title(),
            "alias": alias,
            "type": kind,
            "group": "core",
            "object": "lead",
            "isPublished": published,
            "isRequired": False,
        }

    def _fields_api(self, request: httpx.Request, headers: Mapping[str, str]) -> httpx.Response:
        path, method = request.url.path, request.method
        if self.fields_permission == "none" or (
            method != "GET" and self.fields_permission != "full"
        ):
            # Mautic's answer to a user whose role lacks the permission (type access_denied).
            return respond(
                403,
                {"errors": [{"message": _NO_ACCESS, "code": 403, "type": "access_denied"}]},
                headers,
            )
        if path.endswith("/api/fields/contact") and method == "GET":
            # Developer docs "List available fields": {"total", "fields": [...]}, paged by start/limit.
            start = int(request.url.params.get("start", 0))
            limit = int(request.url.params.get("limit", 30))
            page = list(self.fields.values())[start : start + limit]
            return respond(200, {"total": len(self.fields), "fields": page}, headers)
        if path.endswith("/api/fields/contact/new") and method == "POST":
            return self._create_field(request, headers)
        return respond(404, _error(f"Requested URL not found: {path}", 404), headers)

    def _create_field(self, request: httpx.Request, headers: Mapping[str, str]) -> httpx.Response:
        # Developer docs "Create field": 201 {"field": {...}}; validation errors are 400.
        try:
            body = json.loads(request.content)
            label, kind = body["label"], body.get("type", "text")
        except (ValueError, KeyError, TypeError):
            return respond(400, _error("label: A value is required.", 400), headers)
        alias = str(body.get("alias") or label).strip().lower().replace(" ", "_")
        if alias in self.fields:
            # UNCONFIRMED: Mautic renames a clashing alias instead of refusing it; the fake refuses.
            return respond(400, _error(f"alias: {alias} is already used.", 400), headers)
        if kind == "boolean" and not isinstance(body.get("properties"), dict):
            return respond(400, _error("properties: yes and no labels are required.", 400), headers)
        self.add_field(
            alias, kind, published=body.get("isPublished", True) is not False, label=label
        )
        return respond(201, {"field": self.fields[alias]}, headers)

    def _batch_new(self, request: httpx.Request, headers: Mapping[str, str]) -> httpx.Response:
        try:
            entries = json.loads(request.content)
        except ValueError:
            return respond(400, _error("Request body is not valid JSON.", 400), headers)
        if not isinstance(entries, list):
            return respond(
                400, _error("The request payload must be an array of entities.", 400), headers
            )
        if len(entries) > self.batch_limit:
            message = f"A max of {self.batch_limit} entities are supported at a time."
            return respond(500, _error(message, 500), headers)
        self.batch_sizes.append(len(entries))
        records: dict[int, Any] = {}
        codes: dict[int, int] = {}
        errors: dict[int, Any] = {}
        for index, entry in enumerate(entries):
            email = entry.get("email") if isinstance(entry, dict) else None
            key = email.strip().lower() if isinstance(email, str) else ""
            if "@" not in key:
                # EmailBundle's EmailValidator::validate, message mautic.email.address.invalid_format
                codes[index] = self.validation_status
                errors[index] = form_error(
                    {"email": [f"{email or '?'} is invalid."]}, self.validation_status
                )
            elif key in self._rejections:
                codes[index], message = self._rejections[key]
                if codes[index] in (400, 422):
                    errors[index] = form_error({"email": [message]}, codes[index])
                else:
                    errors[index] = batch_error(message, codes[index])
            elif key.endswith("@" + self.rejected_domain):
                # EmailValidator's DNS check, message mautic.email.address.invalid_domain
                codes[index] = self.validation_status
                reason = f"{email} does not seem to have a valid email domain (MX DNS record)."
                errors[index] = form_error({"email": [reason]}, self.validation_status)
            else:
                assert isinstance(entry, dict)
                codes[index], records[index] = self._upsert(key, entry)
        body: dict[str, Any] = {
            "contacts": self._serialise(records),
            "statusCodes": self._serialise(codes),
        }
        if errors:
            body["errors"] = self._serialise(errors)
        return respond(201, body, headers)

    def _upsert(self, key: str, entry: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        contact_id = self._ids.get(key)
        created = contact_id is None
        if contact_id is None:
            contact_id = len(self.contacts) + 1
            self._ids[key] = contact_id
            self.contacts[contact_id] = {"tags": []}
        fields = self.contacts[contact_id]
        overwrite_with_blank = entry.get("overwriteWithBlank") is True
        for alias, value in entry.items():
            if alias in ("tags", "overwriteWithBlank"):
                continue
            if value in (None, "") and not overwrite_with_blank:
                continue
            fields[alias] = value
        tags = entry.get("tags") or []
        for tag in [tags] if isinstance(tags, str) else tags:
            if tag not in fields["tags"]:
                fields["tags"].append(tag)
        everything = {"id": contact_id, **{k: v for k, v in fields.items() if k != "tags"}}
        record = {
            "id": contact_id,
            "isPublished": True,
            "fields": {
                "core": {
                    alias: {"alias": alias, "value": value}
                    for alias, value in everything.items()
                    if alias != "id"
                },
                "all": everything,
            },
            "tags": [{"tag": tag} for tag in fields["tags"]],
        }
        return (201 if created else 200), record

    def _serialise(self, items: dict[int, Any]) -> Any:
        if self.map_style == "php" and list(items) == list(range(len(items))):
            return [items[i] for i in range(len(items))]
        return {str(i): value for i, value in items.items()}


def _error(message: str, code: int) -> dict[str, Any]:
    """A whole-request error: ``FetchCommonApiController::returnError`` outside batch mode."""
    return {"errors": [{"code": code, "message": message, "details": [], "type": None}]}


def form_error(details: Mapping[str, list[str]], code: int = 400) -> dict[str, Any]:
    """One batch entry's form validation error, as ``FetchCommonApiController::returnError`` builds it
    in batch mode (from ``CommonApiController::processForm``): the message joins ``field: problem``
    the way ``FormErrorMessagesTrait::getFormErrorMessage`` does, ``details`` keeps them per field."""
    message = ", ".join(f"{field}: {', '.join(problems)}" for field, problems in details.items())
    return {"code": code, "message": message, "details": dict(details), "type": None}


def batch_error(message: str, code: int) -> dict[str, Any]:
    """One batch entry's error as ``FetchCommonApiController::setBatchError`` builds it (403, 404)."""
    return {"message": message, "code": code, "type": "api"}


def make_sandbox(options: SandboxOptions) -> Sandbox[MauticSettings]:
    """A :class:`FakeMautic` behind OAuth 2, and settings that point at it."""
    fake = FakeMautic(
        grant_types=CLIENT_CREDENTIALS_GRANTS,
        failure_rate=options.failure_rate,
        rate_limit=options.rate_limit,
        seed=options.seed,
    )
    settings = MauticSettings(
        base_url=SANDBOX_URL,
        client_id=fake.client_id,
        client_secret=SecretStr(fake.client_secret),
        tags=["crmsync"],
    )
    return Sandbox(settings=settings, transport=fake.transport(), fake=fake)
