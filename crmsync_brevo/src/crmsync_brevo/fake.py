"""A stateful fake of Brevo's contacts API, for the tests, the demo and the benchmarks.

:class:`FakeBrevo` answers the requests the adapter sends the way Brevo does: it checks the ``api-key``
header (401 ``unauthorized``), upserts contacts by e-mail (201 with the new id, 204 on update, 400
``duplicate_parameter`` without ``updateEnabled``), refuses malformed data with Brevo's error bodies,
runs imports as processes that complete after a delay and report invalid e-mails, and enforces a rate
limit with 429 and the ``x-sib-ratelimit-*`` headers. Failures can be injected.

Serve it in-process (``httpx.AsyncClient(transport=fake.transport())``) or on a loopback port
(``async with fake.serve() as base_url``). Its clock is injectable: with a :class:`ManualClock`, imports
complete and rate-limit windows pass without real waiting.

Where Brevo's behaviour is UNCONFIRMED the fake picks one answer and says so; the adapter is written to
handle the alternatives. Every behaviour, its source and whether it is confirmed: ``docs/vendors/brevo.md``;
``tests/brevo/test_response_shapes.py`` validates the fake's answers against Brevo's OpenAPI spec.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

import httpx

from crmsync_core.adapter import Sandbox, SandboxOptions
from crmsync_core.ratelimit import Bucket, RateLimit, WindowKind
from crmsync_core.testing.clock import ManualClock as ManualClock  # crmsync_brevo.ManualClock
from crmsync_core.testing.fakecrm import Budget, FakeCrm, Scripted

if TYPE_CHECKING:
    from .settings import BrevoSettings

DEFAULT_API_KEY = "xkeysib-fake-0123456789abcdef"
#: the base URL sandboxes use: it never resolves, so nothing reaches the network by mistake
SANDBOX_BASE_URL = "https://brevo.sandbox/v3"
SANDBOX_LIST_ID = 2
REPORT_HOST = "brevo-reports.sandbox"
MAX_IMPORT_BYTES = 10 * 1024 * 1024
#: Brevo's general tier caps every endpoint its limits page does not list (``/v3/processes`` included) at
#: 100 requests per hour (https://developers.brevo.com/docs/api-limits, "All other endpoints")
OTHER_RATE_LIMIT = RateLimit(100, 3600.0)

#: the attributes of a new Brevo account (EMAIL is an identifier, not listed), plus ScraperSky's:
#: ``{name: type}`` as ``GET /contacts/attributes`` lists them
STANDARD_ATTRIBUTES: dict[str, str] = {"FIRSTNAME": "text", "LASTNAME": "text", "SMS": "text"}
SCRAPERSKY_ATTRIBUTES: dict[str, str] = {
    "DOMAIN_ID": "text",
    "PAGE_ID": "text",
    "EMAIL_TYPE": "text",
    "SOURCE_URL": "text",
    "HAS_GMAIL": "boolean",
}
#: the categories and types the spec allows in ``POST /contacts/attributes/{category}/{name}``
_ATTRIBUTE_CATEGORIES = frozenset({"normal", "transactional", "category", "calculated", "global"})
_ATTRIBUTE_TYPES = frozenset(
    {"text", "date", "float", "boolean", "id", "category", "multiple-choice", "user"}
)

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_SMS = re.compile(r"^(?:\+|00)?[1-9]\d{7,14}$")
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_parameter", "Invalid parameter"),
    401: ("unauthorized", "Key not found"),
    402: ("not_enough_credits", "Not enough credits"),
    403: ("permission_denied", "Permission denied"),
    404: ("document_not_found", "Document not found"),
    405: ("method_not_allowed", "Method not allowed"),
    408: ("request_timeout", "Request timed out"),
    425: ("account_in_process", "Your account is being validated; try again later"),
    # UNCONFIRMED: the body of Brevo's 429
    429: ("too_many_requests", "The expected rate limit is exceeded."),
}


@dataclass
class FakeContact:
    """A contact as the fake holds it."""

    id: int
    email: str
    attributes: dict[str, Any] = field(default_factory=dict)
    list_ids: set[int] = field(default_factory=set)


#: the keys of a completed import's ``info.import``, as Brevo documents them (each a CSV report URL or
#: null in the current reference and SDK; a count or null in the older published spec)
IMPORT_REPORT_KEYS = (
    "invalid_emails",
    "duplicate_contact_id",
    "duplicate_ext_id",
    "duplicate_email_id",
    "duplicate_phone_id",
    "duplicate_whatsapp_id",
    "duplicate_landline_number_id",
)


@dataclass
class FakeProcess:
    """An import: queued, then processing, then completed (or failed, or stuck) after the delay."""

    id: int
    started: float
    items: list[Any]
    list_ids: list[int]
    outcome: Literal["completed", "failed", "stalled"] = "completed"
    status: str = "queued"
    info: dict[str, Any] | None = None
    error: str | None = None
    created_at: str = ""


class FakeBrevo(FakeCrm):
    """The remote side. Inspect :attr:`contacts`, :attr:`requests`, :attr:`processes` in tests."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        lists: tuple[int, ...] = (SANDBOX_LIST_ID,),
        rate_limit: RateLimit | None = None,
        other_rate_limit: RateLimit | None = OTHER_RATE_LIMIT,
        window: Literal["sliding", "fixed"] = "sliding",
        clock: Callable[[], float] = time.monotonic,
        import_delay_seconds: float = 1.0,
        import_report: Literal["csv", "counts"] = "csv",
        report_layout: Literal["rows", "email_reason"] = "rows",
        running_status: Literal["processing", "in_process"] = "processing",
        failure_rate: float = 0.0,
        seed: int = 0,
        latency_seconds: float = 0.0,
        rejected_domains: tuple[str, ...] = ("rejected.invalid",),
        base_path: str = "/v3",
        attributes: dict[str, str] | None = None,
    ) -> None:
        """
        ``import_report`` chooses how a completed import reports problem records: ``"csv"`` (the
        default) as Brevo's current reference and SDK say, a URL of a CSV report or null per key of
        ``info.import``; ``"counts"`` as the older published spec says (``invalid_emails: 2``).
        ``report_layout`` is the layout of those CSV files, which Brevo does not document (ASSUMED):
        ``"rows"`` the refused records as imported (``EMAIL`` and attribute columns, ``;``-separated
        like Brevo's import files), ``"email_reason"`` two columns ``EMAIL;REASON``.
        ``running_status`` is how a running process is spelled: ``processing`` (current reference)
        or ``in_process`` (older specs). ``rejected_domains``: addresses there are refused as invalid,
        like the addresses Brevo's own validation refuses although they look fine. ``attributes`` are
        the account's contact attributes (``{name: type}``; default: a new account's and ScraperSky's):
        like Brevo, the fake drops any other attribute from the contacts it stores, silently.

        Rate limits, as Brevo's general tier publishes them (https://developers.brevo.com/docs/api-limits):
        ``rate_limit`` counts every request under ``/v3/contacts`` (10 per second there; ``None`` here:
        unlimited unless asked), ``other_rate_limit`` every other endpoint, ``GET /v3/processes/{id}``
        included (100 per hour). How Brevo counts within the period is not published: ``window`` is
        ``"sliding"`` (the strictest: no period-long span ever holds more) or ``"fixed"`` (windows that
        start at the first request after the last one ended). Each bucket answers 429 over its limit and
        sends the ``x-sib-ratelimit-*`` headers on every response
        (https://developers.brevo.com/docs/limit-headers); there is no ``Retry-After``.
        """
        super().__init__(failure_rate=failure_rate, seed=seed)
        self.api_key = api_key
        self.lists = set(lists)
        self.rate_limit = rate_limit
        self.other_rate_limit = other_rate_limit
        self.window = window
        self.clock = clock
        self.import_delay_seconds = import_delay_seconds
        self.import_report = import_report
        self.report_layout = report_layout
        self.running_status = running_status
        self.latency_seconds = latency_seconds
        self.rejected_domains = {d.lower() for d in rejected_domains}
        self.base_path = base_path.rstrip("/")
        #: the account's contact attributes: name -> type
        self.attributes: dict[str, str] = dict(
            attributes
            if attributes is not None
            else {**STANDARD_ATTRIBUTES, **SCRAPERSKY_ATTRIBUTES}
        )
        #: contacts by lower-cased e-mail
        self.contacts: dict[str, FakeContact] = {}
        self.processes: dict[int, FakeProcess] = {}
        #: arrival times of the requests each bucket counted (``contacts``, ``other``), 429s included
        self.arrivals = self.windows.arrivals
        self.arrivals.update(contacts=[], other=[])
        #: the next imports fail (``"failed"``) or never finish (``"stalled"``)
        self.import_outcome: Literal["completed", "failed", "stalled"] = "completed"
        self._ids = itertools.count(1)
        self._process_ids = itertools.count(100)
        self._reports: dict[str, bytes] = {}
        self._phones: dict[str, str] = {}

    # -- inspection and failure injection --------------------------------------------------------

    @property
    def requests(self) -> list[httpx.Request]:
        """Every request received, in order."""
        return self.log

    def contact(self, email: str) -> FakeContact | None:
        return self.contacts.get(email.strip().lower())

    def requests_to(self, method: str, path: str) -> list[httpx.Request]:
        """The requests received for ``method`` and an API path such as ``/contacts``."""
        return [
            r for r in self.requests if r.method == method and r.url.path == self.base_path + path
        ]

    def fail_next(
        self,
        status: int,
        *,
        times: int = 1,
        method: str | None = None,
        path: str | None = None,
        body: dict[str, Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` matching requests with ``status`` (Brevo's error body for it
        unless ``body`` is given). ``path`` is an API path such as ``/contacts/import``; a prefix
        (``/processes``) matches the paths below it."""
        raw = json.dumps(body).encode() if isinstance(body, dict) else body
        self.script(status, body=raw, headers=headers, times=times, method=method, path=path)

    def drop_next(
        self, *, times: int = 1, method: str | None = None, path: str | None = None
    ) -> None:
        """Let the next ``times`` matching requests time out."""
        self.script(None, times=times, method=method, path=path, fault="timeout")

    # -- serving (``transport()``, and ``serve()`` whose base URL ends in ``/v3``: the base's) -------

    async def answer(self, request: httpx.Request) -> httpx.Response:
        """Answer one request as Brevo would."""
        if request.url.host == REPORT_HOST:
            return self._report(request)

        budgets, full = self.take_budget(request)
        limit_headers = _limit_headers(budgets[0]) if budgets else {}
        if full is not None:
            return self._error(429, headers=limit_headers)

        path = request.url.path
        if not path.startswith(self.base_path + "/"):
            return self._error(
                404, message=f"{path} is not a Brevo API path", headers=limit_headers
            )
        path = path[len(self.base_path) :]

        scripted = self.take_scripted(request, path)
        if scripted is not None:
            return self._injected(scripted, limit_headers)
        if self.injected_failure():
            if self.rng.random() < 0.5:
                raise httpx.RemoteProtocolError("injected dropped connection", request=request)
            return httpx.Response(
                503, text="Service Temporarily Unavailable", headers=limit_headers
            )

        if request.headers.get("api-key") != self.api_key:
            return self._error(401, headers=limit_headers)

        response = self._route(request.method, path, request.content)
        response.headers.update(limit_headers)
        return response

    # -- the API ----------------------------------------------------------------------------------

    def _route(self, method: str, path: str, content: bytes) -> httpx.Response:
        if path.startswith(("/contacts/attributes", "/contacts/lists/")):
            return self._account_route(method, path, content)
        if path == "/contacts":
            return (
                self._create_contact(content)
                if method == "POST"
                else self._not_allowed(method, path)
            )
        if path == "/contacts/import":
            return self._import(content) if method == "POST" else self._not_allowed(method, path)
        if path.startswith("/processes/"):
            if method != "GET":
                return self._not_allowed(method, path)
            return self._process(path.removeprefix("/processes/"))
        return self._error(404, message=f"{method} {path} is not served by the fake")

    def _create_contact(self, content: bytes) -> httpx.Response:
        body = _json_object(content)
        if body is None:
            return self._error(400, message="Input must be a JSON object")
        email = body.get("email")
        if not isinstance(email, str) or not email.strip():
            return self._error(400, "missing_parameter", "email is missing")
        if problem := self._email_problem(email):
            return self._error(400, "invalid_parameter", problem)
        list_ids = body.get("listIds") or []
        if missing := [i for i in list_ids if i not in self.lists]:
            # UNCONFIRMED: Brevo's exact answer to an unknown list.
            return self._error(404, "document_not_found", f"List ID does not exist: {missing[0]}")
        attributes = body.get("attributes") or {}
        if not isinstance(attributes, dict):
            return self._error(400, "invalid_parameter", "attributes should be an object")
        sms = attributes.get("SMS")
        if sms is not None:
            if not isinstance(sms, str) or not _SMS.match(sms):
                return self._error(400, "invalid_parameter", "Invalid phone number")
            if self._sms_owner(sms, email) is not None:
                return self._error(
                    400,
                    "duplicate_parameter",
                    "Unable to create contact, SMS is already associated with another Contact",
                    metadata={"duplicate_identifiers": ["SMS"]},
                )
        existing = self.contact(email)
        if existing is not None:
            if not body.get("updateEnabled"):
                return self._error(
                    400,
                    "duplicate_parameter",
                    "Contact already exist",
                    metadata={"duplicate_identifiers": ["email"]},
                )
            self._upsert(email, attributes, list_ids)
            return httpx.Response(204)
        contact = self._upsert(email, attributes, list_ids)
        return httpx.Response(201, json={"id": contact.id})

    def _import(self, content: bytes) -> httpx.Response:
        if len(content) > MAX_IMPORT_BYTES:
            return self._error(400, message="Maximum allowed json body size is 10MB")
        body = _json_object(content)
        if body is None:
            return self._error(400, message="Input must be a JSON object")
        items = body.get("jsonBody")
        if not isinstance(items, list):
            return self._error(400, "missing_parameter", "jsonBody is missing")
        list_ids = body.get("listIds")
        if not list_ids and not body.get("newList"):
            return self._error(400, "missing_parameter", "listIds is missing")
        if missing := [i for i in list_ids or [] if i not in self.lists]:
            return self._error(404, "document_not_found", f"List ID does not exist: {missing[0]}")
        process = FakeProcess(
            id=next(self._process_ids),
            started=self.clock(),
            items=items,
            list_ids=list(list_ids or []),
            outcome=self.import_outcome,
            created_at=datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        )
        self.processes[process.id] = process
        return httpx.Response(202, json={"processId": process.id})

    def _process(self, raw_id: str) -> httpx.Response:
        try:
            process = self.processes[int(raw_id)]
        except (ValueError, KeyError):
            # the spec's example for an unknown process (GET /processes/{processId}, 404)
            return self._error(404, "invalid_parameter", "processId is invalid")
        elapsed = self.clock() - process.started
        if process.status in ("queued", self.running_status):
            if process.outcome == "stalled" or elapsed < self.import_delay_seconds:
                process.status = (
                    "queued" if elapsed < self.import_delay_seconds / 2 else self.running_status
                )
            elif process.outcome == "failed":
                process.status, process.error = (
                    "failed",
                    "Import failed: the file could not be parsed",
                )
            else:
                self._run_import(process)
        answer: dict[str, Any] = {
            "id": process.id,
            "name": "IMPORTUSER",
            "status": process.status,
            "created_at": process.created_at,
        }
        if process.info is not None:
            answer["info"] = process.info
        if process.error is not None:
            answer["error"] = process.error
        return httpx.Response(200, json=answer)

    def _run_import(self, process: FakeProcess) -> None:
        invalid: list[Any] = []
        duplicate_emails: list[Any] = []
        duplicate_phones: list[Any] = []
        seen: set[str] = set()
        for item in process.items:
            email = item.get("email") if isinstance(item, dict) else None
            if not isinstance(email, str) or self._email_problem(email):
                invalid.append(item)
                continue
            if email.lower() in seen:
                duplicate_emails.append(item)
                continue
            seen.add(email.lower())
            attributes = dict(item.get("attributes") or {})
            sms = attributes.get("SMS")
            # UNCONFIRMED: an import keeps a contact whose phone number is bad or taken, without it.
            if sms is not None and (not _SMS.match(str(sms)) or self._sms_owner(str(sms), email)):
                attributes.pop("SMS")
                duplicate_phones.append(item)
            self._upsert(email, attributes, process.list_ids)
        categories: dict[str, tuple[list[Any], str]] = {
            "invalid_emails": (invalid, "Invalid email address"),
            "duplicate_email_id": (duplicate_emails, "Duplicate email"),
            "duplicate_phone_id": (duplicate_phones, "Duplicate or invalid SMS"),
        }
        details: dict[str, Any] = dict.fromkeys(IMPORT_REPORT_KEYS)
        for name, (items, reason) in categories.items():
            if not items:
                continue
            if self.import_report == "counts":
                details[name] = len(items)
            else:
                details[name] = self._publish_report(process.id, name, items, reason)
        process.status = "completed"
        process.info = {"import": details}

    def _publish_report(self, process_id: int, name: str, items: list[Any], reason: str) -> str:
        # ASSUMED: Brevo does not document the layout of these files (see docs/vendors/brevo.md).
        out = io.StringIO()
        writer = csv.writer(out, delimiter=";", lineterminator="\n")
        records = [item if isinstance(item, dict) else {"email": item} for item in items]
        if self.report_layout == "email_reason":
            writer.writerow(["EMAIL", "REASON"])
            writer.writerows([str(r.get("email")), reason] for r in records)
        else:
            columns = list(dict.fromkeys(k for r in records for k in (r.get("attributes") or {})))
            writer.writerow(["EMAIL", *columns])
            for record in records:
                attributes = record.get("attributes") or {}
                writer.writerow(
                    [str(record.get("email")), *(attributes.get(c, "") for c in columns)]
                )
        path = f"/imports/{process_id}/{name}.csv"
        self._reports[path] = out.getvalue().encode()
        return f"https://{REPORT_HOST}{path}"

    def _report(self, request: httpx.Request) -> httpx.Response:
        content = self._reports.get(request.url.path)
        if request.method != "GET" or content is None:
            return httpx.Response(404, text="NoSuchKey")
        return httpx.Response(200, content=content, headers={"content-type": "text/csv"})

    # -- account set-up: attributes and lists (``crmsync check`` / ``crmsync brevo setup``) --------

    def _account_route(self, method: str, path: str, content: bytes) -> httpx.Response:
        if path == "/contacts/attributes":
            return self._list_attributes() if method == "GET" else self._not_allowed(method, path)
        if path.startswith("/contacts/attributes/"):
            if method != "POST":
                return self._not_allowed(method, path)
            category, _, name = path.removeprefix("/contacts/attributes/").partition("/")
            return self._create_attribute(category, name, content)
        if method != "GET":
            return self._not_allowed(method, path)
        return self._get_list(path.removeprefix("/contacts/lists/"))

    def _list_attributes(self) -> httpx.Response:
        # Brevo reference "List all attributes": {"attributes": [{"name", "category", "type"}]}.
        listed = [
            {"name": name, "category": "normal", "type": kind}
            for name, kind in self.attributes.items()
        ]
        return httpx.Response(200, json={"attributes": listed})

    def _create_attribute(self, category: str, name: str, content: bytes) -> httpx.Response:
        # Brevo reference "Create contact attribute": 201 with no body; errors are 400 errorModel.
        body = _json_object(content)
        if body is None:
            return self._error(400, message="Input must be a JSON object")
        if category not in _ATTRIBUTE_CATEGORIES:
            return self._error(400, "invalid_parameter", f"Invalid attribute category {category}")
        kind = body.get("type")
        if category in ("normal", "category", "transactional") and kind not in _ATTRIBUTE_TYPES:
            return self._error(400, "invalid_parameter", "type is invalid")
        name = name.upper()
        if not name or name in self.attributes:
            # UNCONFIRMED: Brevo's exact words for a duplicate attribute name.
            return self._error(400, "invalid_parameter", f"Attribute {name} already exists")
        self.attributes[name] = str(kind)
        return httpx.Response(201)

    def _get_list(self, raw_id: str) -> httpx.Response:
        # Brevo reference "Get a list's details": 404 "List ID not found" for an unknown id.
        try:
            list_id = int(raw_id)
        except ValueError:
            return self._error(400, "invalid_parameter", "listId must be an integer")
        if list_id not in self.lists:
            return self._error(404, "document_not_found", "List ID does not exist")
        members = sum(list_id in c.list_ids for c in self.contacts.values())
        return httpx.Response(
            200,
            json={
                "id": list_id,
                "name": f"List {list_id}",
                "folderId": 1,
                "totalBlacklisted": 0,
                "totalSubscribers": members,
                "uniqueSubscribers": members,
            },
        )

    # -- helpers ----------------------------------------------------------------------------------

    def _upsert(self, email: str, attributes: dict[str, Any], list_ids: list[int]) -> FakeContact:
        key = email.strip().lower()
        contact = self.contacts.get(key)
        if contact is None:
            contact = self.contacts[key] = FakeContact(next(self._ids), email.strip())
        if "SMS" in attributes:
            self._phones[_digits(str(attributes["SMS"]))] = key
        # Brevo keeps only the attributes the account has and drops the others without an error
        # (reported by Brevo's SDK users: getbrevo/brevo-php issue 37).
        contact.attributes.update({k: v for k, v in attributes.items() if k in self.attributes})
        contact.list_ids.update(list_ids)
        return contact

    def _email_problem(self, email: str) -> str | None:
        email = email.strip()
        local, _, domain = email.rpartition("@")
        if not _EMAIL.match(email) or len(local) > 64 or domain.lower() in self.rejected_domains:
            return "Invalid email address"
        return None

    def _sms_owner(self, sms: str, email: str) -> FakeContact | None:
        """Another contact that already has this phone number (Brevo keeps ``SMS`` unique)."""
        owner = self._phones.get(_digits(sms))
        if owner is None or owner == email.strip().lower():
            return None
        return self.contacts.get(owner)

    def rate_buckets(self, request: httpx.Request) -> Sequence[Bucket]:
        """One bucket per request: ``/v3/contacts*``, or every other endpoint."""
        contacts = request.url.path.startswith(self.base_path + "/contacts")
        limit = self.rate_limit if contacts else self.other_rate_limit
        if limit is None:
            return ()
        name = "contacts" if contacts else "other"
        return [Bucket(name, limit.requests, limit.period_seconds, WindowKind(self.window))]

    def now(self) -> float:
        return self.clock()

    def _injected(self, injection: Scripted, limit_headers: dict[str, str]) -> httpx.Response:
        assert injection.status is not None
        if injection.body is not None:
            response = httpx.Response(
                injection.status,
                content=injection.body,
                headers={"content-type": "application/json"},
            )
        elif injection.status >= 500:
            response = httpx.Response(injection.status, text="upstream failure (injected)")
        else:
            response = self._error(injection.status)
        response.headers.update(limit_headers)
        response.headers.update(injection.headers)
        if injection.status == 429 and "x-sib-ratelimit-reset" not in injection.headers:
            response.headers["x-sib-ratelimit-remaining"] = "0"
            response.headers["x-sib-ratelimit-reset"] = "1"
        return response

    def _not_allowed(self, method: str, path: str) -> httpx.Response:
        return self._error(405, message=f"{method} Method is not allowed on this path {path}")

    def _error(
        self,
        status: int,
        code: str | None = None,
        message: str | None = None,
        *,
        metadata: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        default_code, default_message = _ERRORS.get(status, ("error", "Error"))
        body: dict[str, Any] = {"code": code or default_code, "message": message or default_message}
        if metadata:
            body["metadata"] = metadata
        return httpx.Response(status, json=body, headers=headers)


def _limit_headers(budget: Budget) -> dict[str, str]:
    # UNCONFIRMED: whether Brevo's reset can be fractional; the fake sends milliseconds.
    return {
        "x-sib-ratelimit-limit": str(budget.bucket.requests),
        "x-sib-ratelimit-remaining": str(budget.remaining),
        "x-sib-ratelimit-reset": f"{budget.reset:.3f}",
    }


def _json_object(content: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(content)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _digits(number: str) -> str:
    digits = re.sub(r"\D", "", number)
    return digits[2:] if number.strip().startswith("00") else digits


def make_sandbox(options: SandboxOptions) -> Sandbox[BrevoSettings]:
    """A fake Brevo with one list, and settings that point at it (import mode included)."""
    from .settings import BrevoSettings

    fake = FakeBrevo(
        rate_limit=options.rate_limit,
        failure_rate=options.failure_rate,
        seed=options.seed,
        import_delay_seconds=0.2,
    )
    settings = BrevoSettings(
        api_key=fake.api_key,
        list_id=SANDBOX_LIST_ID,
        api_base_url=SANDBOX_BASE_URL,
        import_poll_interval_seconds=0.05,
        import_timeout_seconds=30.0,
    )
    return Sandbox(settings=settings, transport=fake.transport(), fake=fake)
