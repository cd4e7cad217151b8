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
import random
import secrets
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qs

import httpx
from pydantic import SecretStr

from crmsync_core.adapter import Sandbox, SandboxOptions
from crmsync_core.ratelimit import RateLimit

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


@dataclass(frozen=True, slots=True)
class _Scripted:
    status: int
    body: Any
    headers: Mapping[str, str]


class FakeMautic:
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
        self.failure_rate = failure_rate
        self.rejected_domain = rejected_domain
        #: the status of a contact the form refuses: 400, or 422 when a constraint sets that code
        #: (``CommonApiController::processForm``)
        self.validation_status = validation_status
        self.map_style = map_style
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = random.Random(seed)
        #: Mautic contact id -> field alias -> value (plus ``tags``)
        self.contacts: dict[int, dict[str, Any]] = {}
        self._ids: dict[str, int] = {}
        #: every request received, token requests included
        self.requests: list[httpx.Request] = []
        #: contacts per batch request that reached the upsert
        self.batch_sizes: list[int] = []
        self.token_requests = 0
        self._tokens: dict[str, float] = {}
        self._scripted: deque[_Scripted] = deque()
        self._rejections: dict[str, tuple[int, str]] = {}
        self._window_start: float | None = None
        self._window_count = 0

    # -- controls -----------------------------------------------------------------------------------

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def fail_next(
        self,
        status: int,
        body: Any = None,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` API requests (not token requests) with ``status`` and ``body``."""
        if body is None:
            body = _error(f"Injected HTTP {status}", status)
        for _ in range(times):
            self._scripted.append(_Scripted(status, body, dict(headers or {})))

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

    async def handle(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        path = request.url.path
        if path.endswith("/oauth/v2/token"):
            return self._token(request)
        if "/api/" not in path and not path.endswith("/api"):
            return _json(404, _error(f"Requested URL not found: {path}", 404))
        if not self.api_enabled:
            return _json(
                403, {"errors": [{"message": _API_DISABLED, "code": 403, "type": "api_disabled"}]}
            )
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        limited = self._count_request()
        if limited is not None:
            return limited
        headers = self._rate_headers()
        if self._scripted:
            scripted = self._scripted.popleft()
            return _json(scripted.status, scripted.body, {**headers, **scripted.headers})
        if self.failure_rate and self._rng.random() < self.failure_rate:
            return _json(503, _error("Service Unavailable (injected)", 503), headers)
        if not path.endswith("/api/contacts/batch/new"):
            return _json(404, _error(f"Requested URL not found: {path}", 404), headers)
        if request.method != "POST":
            return _json(405, _error(f"Method {request.method} not allowed", 405), headers)
        return self._batch_new(request, headers)

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_requests += 1
        if not self.api_enabled:
            return _json(
                403, {"errors": [{"message": _API_DISABLED, "code": 403, "type": "api_disabled"}]}
            )
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        # The order of FOSOAuthServer's OAuth2::grantAccessToken: the grant type, the client, then
        # whether this client may use that grant.
        grant = form.get("grant_type")
        if not grant:
            return _json(
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
            return _json(
                400,
                {
                    "error": "invalid_client",
                    "error_description": "The client credentials are invalid",
                },
            )
        if grant not in self.grant_types:
            return _json(
                400,
                {
                    "error": "unauthorized_client",
                    "error_description": "The grant type is unauthorized for this client_id",
                },
            )
        if grant != "client_credentials":
            # The fake serves only the grant the adapter uses.
            return _json(
                400,
                {
                    "error": "invalid_request",
                    "error_description": f"The fake serves no {grant} flow",
                },
            )
        token = secrets.token_urlsafe(32)
        self._tokens[token] = self._clock() + self.token_lifetime
        return _json(
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
                return _json(
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
            return _json(
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
            return _json(
                401, {"errors": [{"message": message, "code": 401, "type": "invalid_grant"}]}
            )
        return _json(
            401,
            {
                "errors": [
                    {"message": "API authorization denied.", "code": 401, "type": "access_denied"}
                ]
            },
        )

    def _count_request(self) -> httpx.Response | None:
        if self.rate_limit is None:
            return None
        now = self._wall_clock()
        if self._window_start is None or now >= self._window_start + self.rate_limit.period_seconds:
            self._window_start, self._window_count = now, 0
        if self._window_count >= self.rate_limit.requests:
            message = (
                f"You exceeded the rate limit of {self.rate_limit.requests} API calls per "
                f"{self.rate_limit.period_seconds:g} seconds."
            )
            return _json(429, _error(message, 429), self._rate_headers())
        self._window_count += 1
        return None

    def _rate_headers(self) -> dict[str, str]:
        if self.rate_limit is None or self._window_start is None:
            return {}
        return {
            "X-RateLimit-Limit": str(self.rate_limit.requests),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit.requests - self._window_count)),
            "X-RateLimit-Reset": str(int(self._window_start + self.rate_limit.period_seconds)),
        }

    def _batch_new(self, request: httpx.Request, headers: Mapping[str, str]) -> httpx.Response:
        try:
            entries = json.loads(request.content)
        except ValueError:
            return _json(400, _error("Request body is not valid JSON.", 400), headers)
        if not isinstance(entries, list):
            return _json(
                400, _error("The request payload must be an array of entities.", 400), headers
            )
        if len(entries) > self.batch_limit:
            message = f"A max of {self.batch_limit} entities are supported at a time."
            return _json(500, _error(message, 500), headers)
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
        return _json(201, body, headers)

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


def _json(status: int, body: Any, headers: Mapping[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=dict(headers or {}))


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
