"""The Mautic adapter: batch upsert by e-mail through ``POST /api/contacts/batch/new``.

One request carries up to ``MAUTIC_API_BATCH_MAX_LIMIT`` contacts (Mautic's ``api_batch_max_limit``,
200 by default; Mautic answers 500 above it). Mautic answers 201 for the batch as a whole, with each
contact's own result under ``statusCodes`` (201 created, 200 matched an existing contact by e-mail,
4xx rejected) and ``errors``; the remote id kept is Mautic's contact id.

Auth is HTTP Basic (a Mautic user) or OAuth 2 client credentials. An access token is cached until shortly
before it expires; a 401 drops it, and the request is sent once more with a new token before the run
stops. Mautic ships with its API, and Basic auth, switched off: both are recognised in its answers, and
the error names the setting to switch on. An OAuth 2 client that lacks the client-credentials grant
(Mautic's default for a client) answers ``unauthorized_client``: the run stops saying how to get one that
has it, or to use Basic auth.

What each of these relies on, with its source in Mautic's code and whether it is confirmed:
``docs/vendors/mautic.md``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import httpx

from crmsync_core.adapter import AdapterContext, AdapterSpec
from crmsync_core.contacts import Contact, Outcome, PermanentFailure, Synced, TransientFailure
from crmsync_core.errors import AuthenticationError, ConfigurationError, FatalError
from crmsync_core.ratelimit import Bucket, LimitHeaders, RateLimits, WindowKind
from crmsync_core.sdk import BatchAdapter, Sent, checked_base_url

from .mapping import contact_payload
from .settings import MauticSettings

BATCH_PATH = "/api/contacts/batch/new"
TOKEN_PATH = "/oauth/v2/token"  # noqa: S105 (a path, not a password)
#: An access token is renewed this many seconds before Mautic says it expires.
TOKEN_EXPIRY_MARGIN = 30.0
_OK = frozenset({200, 201})
#: Mautic's rate limiter (noxlogic/ratelimit-bundle) sends ``X-RateLimit-Remaining`` and
#: ``X-RateLimit-Reset``, a Unix time (UNCONFIRMED: a small number is read as seconds from now);
#: ``Retry-After`` wins when present.
LIMIT_HEADERS = LimitHeaders(remaining="x-ratelimit-remaining", reset="x-ratelimit-reset")


def api_root(base_url: str) -> str:
    """The Mautic installation's address, from a base URL given with or without ``/api`` or a slash."""
    url = base_url.strip().rstrip("/")
    if url.lower().endswith("/api"):
        url = url[: -len("/api")].rstrip("/")
    return url


class TokenCache:
    """One OAuth 2 access token, kept until :data:`TOKEN_EXPIRY_MARGIN` seconds before it expires.

    ``clock`` returns seconds (monotonic); tests pass their own to move time on.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0

    def get(self) -> str | None:
        """The cached token, or ``None`` when there is none or it is about to expire."""
        if self._token is not None and self._clock() < self._expires_at - TOKEN_EXPIRY_MARGIN:
            return self._token
        return None

    def store(self, token: str, expires_in: float) -> None:
        self._token = token
        self._expires_at = self._clock() + expires_in

    def drop(self, token: str) -> None:
        """Forget ``token`` (Mautic refused it); a newer token another request fetched is kept."""
        if self._token == token:
            self._token = None


class MauticAdapter(BatchAdapter[MauticSettings]):
    """Pushes contacts to one Mautic installation during one run."""

    crm = "mautic"
    path = BATCH_PATH
    base_url_setting = "MAUTIC_BASE_URL"
    base_url_example = "https://mautic.example.com"
    limit_headers = LIMIT_HEADERS

    def __init__(
        self,
        settings: MauticSettings,
        context: AdapterContext,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``clock`` (monotonic seconds) decides when a cached access token has expired."""
        # The base URL first: with nothing set, it is the first thing to fix.
        self._root = checked_base_url(
            api_root(settings.base_url or ""),
            crm="mautic",
            setting=self.base_url_setting,
            example=self.base_url_example,
        )
        self._basic: str | None = None
        self._client_secret: str | None = None
        self._secrets: list[str] = []
        if settings.client_id or settings.client_secret:
            if not settings.client_id:
                raise ConfigurationError(
                    "mautic: MAUTIC_CLIENT_SECRET is set: set MAUTIC_CLIENT_ID too"
                )
            if not settings.client_secret or not settings.client_secret.get_secret_value():
                raise ConfigurationError(
                    "mautic: MAUTIC_CLIENT_ID is set: set MAUTIC_CLIENT_SECRET too"
                )
            self._client_secret = settings.client_secret.get_secret_value()
            self._secrets.append(self._client_secret)
        elif settings.username or settings.password:
            password = settings.password.get_secret_value() if settings.password else ""
            if not settings.username:
                raise ConfigurationError("mautic: MAUTIC_PASSWORD is set: set MAUTIC_USERNAME too")
            if not password:
                raise ConfigurationError("mautic: MAUTIC_USERNAME is set: set MAUTIC_PASSWORD too")
            self._basic = base64.b64encode(f"{settings.username}:{password}".encode()).decode()
            self._secrets += [password, self._basic]
        else:
            raise ConfigurationError(
                "mautic: set MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET (OAuth 2, recommended) or "
                "MAUTIC_USERNAME and MAUTIC_PASSWORD (HTTP Basic auth)"
            )
        self._tokens = TokenCache(clock)
        self._issued: list[str] = []
        self._token_lock = asyncio.Lock()
        super().__init__(settings, context)

    def __repr__(self) -> str:
        mode = "basic" if self._basic else "oauth2"
        return f"MauticAdapter(base_url={self._root!r}, auth={mode!r})"

    # -- what the SDK asks ------------------------------------------------------------------------

    def base_url_value(self) -> str:
        return self._root

    def secrets(self) -> list[str]:
        return self._secrets

    def auth_hint(self) -> str:
        if self._basic is not None:
            return "check MAUTIC_USERNAME and MAUTIC_PASSWORD (a Mautic user allowed to create contacts)"
        return (
            "check MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET (an OAuth 2 client from Settings > "
            "API Credentials in Mautic) and that the client's user may create contacts"
        )

    def request_size(self) -> int:
        return self.settings.api_batch_max_limit

    def concurrency(self) -> int:
        # A self-hosted server: one batch request at a time per push, as before the SDK (the engine
        # still runs {CRM}_SYNC_CONCURRENCY pushes at once).
        return 1

    def item(self, contact: Contact) -> dict[str, Any]:
        return contact_payload(
            contact, field_aliases=self.settings.field_aliases, tags=self.settings.tags
        )

    async def send(self, body: Any) -> httpx.Response:
        return await self.api("POST", BATCH_PATH, body)

    def outcomes(self, response: httpx.Response, sent: Sequence[Sent]) -> list[Outcome]:
        status = response.status_code
        if status in _OK:
            return self._outcomes(sent, response)
        if 300 <= status < 400:
            location = self.client.redact(response.headers.get("location", "?"))
            raise FatalError(
                f"mautic: {self._root}{BATCH_PATH} redirects to {location} (HTTP {status}): set "
                "MAUTIC_BASE_URL to the address Mautic is served at (https?), and check that the API "
                "is enabled in Mautic's Configuration > API Settings"
            )
        if status == 413:
            raise FatalError(
                f"mautic: the server refused a batch of {len(sent)} contacts as too large "
                "(HTTP 413): lower MAUTIC_API_BATCH_MAX_LIMIT"
            )
        raise self.client.malformed(response, "HTTP 201 with statusCodes")

    # -- auth ---------------------------------------------------------------------------------------

    async def api(
        self, method: str, path: str, payload: Any = None, params: Mapping[str, Any] | None = None
    ) -> httpx.Response:
        """One authenticated API request, signed in like the sync's own (used by ``crmsync check``
        and ``crmsync mautic setup``); with OAuth 2 a refused token gets one retry with a new one."""
        token = await self._access_token()
        try:
            return await self.client.request(
                method, path, json=payload, params=params, headers=self._auth(token)
            )
        except AuthenticationError:
            if token is None:
                raise
        self._tokens.drop(token)
        token = await self._access_token()
        return await self.client.request(
            method, path, json=payload, params=params, headers=self._auth(token)
        )

    def _auth(self, token: str | None) -> dict[str, str]:
        if token is not None:
            return {"Authorization": f"Bearer {token}"}
        return {"Authorization": f"Basic {self._basic}"}

    async def _access_token(self) -> str | None:
        """The OAuth 2 access token (``None`` with Basic auth), fetched when none is cached."""
        if self._basic is not None:
            return None
        token = self._tokens.get()
        if token is not None:
            return token
        async with self._token_lock:
            token = self._tokens.get()  # another request may have fetched one meanwhile
            if token is None:
                token = await self._fetch_token()
            return token

    async def _fetch_token(self) -> str:
        assert self.settings.client_id is not None
        assert self._client_secret is not None
        response = await self.client.request(
            "POST",
            TOKEN_PATH,
            data={
                "grant_type": "client_credentials",
                "client_id": self.settings.client_id,
                "client_secret": self._client_secret,
            },
        )
        status = response.status_code
        if status == 400 and _oauth_error(response) == "unauthorized_client":
            # The credentials are right, but the client may not use this grant: a new OAuth2 client
            # allows only authorization_code and refresh_token (ApiBundle/Entity/oAuth2/Client), and
            # Mautic 5 adds client_credentials only when an administrator creates the client
            # (ApiBundle/Controller/ClientController::newAction).
            raise AuthenticationError(
                "mautic: the OAuth 2 client MAUTIC_CLIENT_ID is not allowed the client-credentials "
                f"grant (HTTP 400 unauthorized_client on POST {TOKEN_PATH}). Mautic gives that grant "
                "only to an OAuth 2 client that an administrator creates (Mautic 5 or later: log in "
                "as an administrator, Settings > API Credentials > New, authorization protocol "
                "OAuth 2); create one and set MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET to its "
                "public key and secret key. Or use HTTP Basic auth instead: set MAUTIC_USERNAME and "
                'MAUTIC_PASSWORD (and "Enable HTTP basic auth?" in Configuration > API Settings), '
                "leaving MAUTIC_CLIENT_ID empty. Mautic said: "
                f"{self.client.body_snippet(response)}"
            )
        if status in (400, 401, 403):  # 401/403 normally end in CrmClient with the auth hint
            # FOSOAuthServer answers 400 invalid_client for credentials it does not know.
            raise AuthenticationError(
                f"mautic refused the OAuth 2 client credentials (HTTP {status} on POST {TOKEN_PATH}): "
                "check MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET (an OAuth 2 client from Settings > "
                "API Credentials in Mautic). Mautic said: "
                f"{self.client.body_snippet(response)}"
            )
        if status in (404, 405):
            raise FatalError(
                f"mautic: no OAuth 2 token endpoint at {self._root}{TOKEN_PATH} (HTTP {status}): check "
                "MAUTIC_BASE_URL and that the API is enabled in Mautic's Configuration > API Settings"
            )
        if status not in _OK:
            raise self.client.malformed(response, "HTTP 200 with an access_token")
        body = self.client.json(response)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise self.client.malformed(response, "an access_token")
        # The token is a secret from now on: keep it out of every message CrmClient builds.
        self._issued.append(token)
        self.client.redact.add(token)
        expires_in = body.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            expires_in = 3600.0  # Mautic's default access token lifetime
        self._tokens.store(token, float(expires_in))
        return token

    def inspect(self, response: httpx.Response) -> None:
        """Recognise Mautic's answers that no retry or token can fix, before the generic handling."""
        status = response.status_code
        if status not in (401, 403, 500):
            return
        text = response.content[:2000].decode("utf-8", errors="replace").lower()
        said = self.client.body_snippet(response)
        if status == 500 and "entities are supported at a time" in text:
            raise FatalError(
                "mautic: the batch is larger than Mautic's api_batch_max_limit: set "
                "MAUTIC_API_BATCH_MAX_LIMIT to Mautic's limit or lower. Mautic said: " + said
            )
        if status == 500:
            return
        # Mautic's ApiSubscriber answers 403 {"errors": [{"type": "api_disabled", ...}]} while the API
        # is off, and "Basic Auth disabled ..." (type access_denied) for Basic credentials while Basic auth
        # is off; older versions put the same translated messages in other shapes, so the text is matched.
        if "api_disabled" in text or "api disabled" in text:
            raise FatalError(
                'mautic: the API is disabled in Mautic: set "API enabled?" to Yes (api_enabled) in '
                f"Configuration > API Settings, then clear Mautic's cache. Mautic said: {said}"
            )
        if "basic auth disabled" in text or "basic.auth.disabled" in text:
            raise FatalError(
                'mautic: HTTP basic auth is disabled in Mautic: set "Enable HTTP basic auth?" to Yes '
                "(api_enable_basic_auth) in Configuration > API Settings, or use an OAuth 2 client "
                f"(MAUTIC_CLIENT_ID and MAUTIC_CLIENT_SECRET). Mautic said: {said}"
            )

    # -- the batch answer ---------------------------------------------------------------------------

    def _outcomes(self, sent: Sequence[Sent], response: httpx.Response) -> list[Outcome]:
        contacts = [s.contact for s in sent]
        payload = [s.item for s in sent]
        body = self.client.json(response)
        if not isinstance(body, dict) or ("statusCodes" not in body and "contacts" not in body):
            raise self.client.malformed(response, "contacts and statusCodes")
        size = len(contacts)
        codes = _by_index(body.get("statusCodes"), size)
        if codes is None or not all(isinstance(c, int) for c in codes.values()):
            raise self.client.malformed(response, "statusCodes keyed by request index")
        failed = [i for i in range(size) if i in codes and codes[i] not in _OK]
        errors = _by_index(body.get("errors"), size, failed if codes else None)
        if errors is None:
            raise self.client.malformed(response, "errors keyed by request index")
        succeeded = [i for i in range(size) if (codes.get(i) in _OK if codes else i not in errors)]
        records = _by_index(body.get("contacts"), size, succeeded)
        if records is None:
            raise self.client.malformed(response, "contacts keyed by request index")

        outcomes: list[Outcome] = []
        for index, contact in enumerate(contacts):
            error = errors.get(index)
            record = records.get(index)
            code = codes.get(index)
            if code is None:
                error_code = error.get("code") if isinstance(error, dict) else None
                if isinstance(error_code, int) and not isinstance(error_code, bool):
                    code = error_code
                elif error is None and record is not None:
                    code = 201
            outcomes.append(self._outcome(contact, payload[index], code, record, error))
        return outcomes

    def _outcome(
        self,
        contact: Contact,
        sent: Mapping[str, Any],
        code: int | None,
        record: Any,
        error: Any,
    ) -> Outcome:
        if code in _OK:
            remote_id = record.get("id") if isinstance(record, dict) else None
            if (
                isinstance(remote_id, bool)
                or not isinstance(remote_id, int | str)
                or remote_id == ""
            ):
                return TransientFailure(
                    contact.id, f"mautic answered HTTP {code} for this contact without its id"
                )
            echoed = _record_email(record)
            if echoed is not None and echoed.strip().lower() != str(sent["email"]).lower():
                # Never store another contact's id: a mis-numbered answer is retried instead.
                return TransientFailure(
                    contact.id, "mautic's answer for this contact's position holds another e-mail"
                )
            return Synced(contact.id, str(remote_id))
        reason = self._error_text(error)
        if code is None:
            return TransientFailure(contact.id, "mautic's answer has no result for this contact")
        if code in (401, 403):
            raise FatalError(
                f"mautic refused to create contacts (HTTP {code}): give the Mautic API user (or the "
                f"OAuth 2 client's user) permission to create and edit contacts. Mautic said: {reason}"
            )
        if code == 429 or code >= 500:
            return TransientFailure(contact.id, f"mautic: HTTP {code} for this contact: {reason}")
        if 400 <= code < 500:
            return PermanentFailure(
                contact.id, f"mautic rejected the contact (HTTP {code}): {reason}"
            )
        return TransientFailure(
            contact.id, f"mautic: unexpected HTTP {code} for this contact: {reason}"
        )

    def _error_text(self, error: Any) -> str:
        if isinstance(error, dict):
            message = str(error.get("message") or "").strip()
            details = error.get("details")
            if isinstance(details, dict):
                for field, problems in details.items():
                    problems = problems if isinstance(problems, list) else [problems]
                    text = f"{field}: {'; '.join(map(str, problems))}"
                    if text not in message:
                        message = f"{message} {text}".strip()
        elif error is not None:
            message = str(error)
        else:
            message = ""
        return self.client.snippet(message or "(no error message)", 300)


def _by_index(
    value: Any, size: int, expected: Sequence[int] | None = None
) -> dict[int, Any] | None:
    """A per-contact map from Mautic's answer, keyed by request index; ``None`` when malformed.

    PHP serialises an array keyed ``0..n-1`` as a JSON list and any other as an object keyed by index,
    so a list is positional. A list as long as the indices that ``expected`` says should be there, and
    shorter than the batch, is taken to hold exactly those, in order (a re-numbered array).
    """
    if value is None:
        return {}
    if isinstance(value, dict):
        result: dict[int, Any] = {}
        for key, item in value.items():
            try:
                index = int(key)
            except (TypeError, ValueError):
                return None
            result[index] = item
        return result
    if isinstance(value, list):
        if expected is not None and len(value) != size and len(value) == len(expected):
            return dict(zip(expected, value, strict=True))
        return dict(enumerate(value))
    return None


def _oauth_error(response: httpx.Response) -> str | None:
    """The ``error`` code of an OAuth 2 error answer (RFC 6749 section 5.2), if it is one."""
    try:
        body = response.json()
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, str) else None


def _record_email(record: Mapping[str, Any]) -> str | None:
    fields = record.get("fields")
    if isinstance(fields, dict):
        every = fields.get("all")
        if isinstance(every, dict) and isinstance(every.get("email"), str):
            return str(every["email"])
    return None


def rate_limits(settings: MauticSettings) -> RateLimits:
    """None by default; when the administrator enabled one (Configuration > API Settings), N calls per
    hour counted in fixed windows (``MAUTIC_RATE_LIMIT_PER_HOUR``, or ``MAUTIC_SYNC_RATE_LIMIT_*``)."""
    if settings.rate_limit_per_hour is None:
        return RateLimits((), LIMIT_HEADERS)
    bucket = Bucket("api", settings.rate_limit_per_hour, 3600.0, WindowKind.FIXED)
    return RateLimits((bucket,), LIMIT_HEADERS)


SPEC: AdapterSpec[MauticSettings] = AdapterSpec(
    name="mautic",
    settings_model=MauticSettings,
    factory=MauticAdapter,
    max_batch_size=200,
    rate_limit=None,
    rate_limits=rate_limits,
    partial_success=True,
    sandbox="crmsync_mautic.fake:make_sandbox",
    check="crmsync_mautic.account:check",
    description="Mautic (self-hosted): batch upsert by e-mail, HTTP Basic or OAuth 2 auth",
)
