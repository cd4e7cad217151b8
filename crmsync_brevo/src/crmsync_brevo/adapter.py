"""The Brevo adapter: single upserts for small batches, ``POST /contacts/import`` for volume.

* A batch of at most ``BREVO_IMPORT_THRESHOLD`` distinct contacts (or any batch when ``BREVO_LIST_ID``
  is empty: Brevo's import needs a list) is sent as one ``POST /contacts`` with ``updateEnabled: true``
  per contact, several in flight at once; the run's rate limiter keeps them within Brevo's budget.
* A larger batch is imported: ``POST /contacts/import`` with a ``jsonBody`` (split so that each request
  stays under 8 MB), then ``GET /processes/{id}`` with growing waits until the process completes, fails
  or outlasts ``BREVO_IMPORT_TIMEOUT_SECONDS``. Only contacts Brevo did not report invalid are synced.

Contacts with an invalid e-mail are skipped before any request, and contacts that share an e-mail (in
any letter case) are sent once and get the same outcome.

What each of these relies on, with its source (the OpenAPI spec, the reference, the SDK) and whether it is
confirmed: ``docs/vendors/brevo.md``.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from crmsync_core.adapter import AdapterContext, AdapterSpec
from crmsync_core.contacts import Contact, Outcome, PermanentFailure, Synced
from crmsync_core.errors import ConfigurationError, FatalError, TransientError
from crmsync_core.ratelimit import Bucket, LimitHeaders, RateLimit, RateLimits, WindowKind
from crmsync_core.sdk import BatchAdapter, Sent, Unresolved, cut, json_bytes

from .mapping import (
    BrevoContact,
    create_contact_body,
    import_body,
    import_item,
    map_contact,
)
from .settings import DEFAULT_BASE_URL, BrevoSettings

#: Brevo accepts import bodies up to 10 MB and recommends staying around 8 MB.
IMPORT_MAX_BYTES = 8_000_000
#: process statuses that mean "not done yet" (``in_process`` is an older spelling of ``processing``)
_RUNNING = frozenset({"queued", "in_process", "processing"})
#: ASSUMED end states: the reference's prose names only queued / processing / completed, but Brevo's
#: SDK (brevo-python 5.1.0 ``GetProcessResponseStatus``) also lists these; handled defensively
_FAILED = frozenset({"failed", "cancelled"})
_JSON = {"content-type": "application/json"}
_MENTIONS_LIST = re.compile(r"\blist", re.IGNORECASE)
_MENTIONS_PHONE = re.compile(r"\bsms\b|phone|mobile", re.IGNORECASE)

AUTH_HINT = (
    "set BREVO_API_KEY to a valid v3 API key (Brevo: SMTP & API > API keys; an SMTP key or a "
    "revoked key is refused), and if the key is right, allow this machine's IP address in Brevo's "
    "authorised IPs"
)


#: Brevo's rate-limit headers, on every response (https://developers.brevo.com/docs/limit-headers):
#: ``x-sib-ratelimit-remaining`` and ``-reset``, "time remaining until the rate limit resets, expressed in
#: the granularity unit (typically seconds)"; no ``Retry-After``. Whether the reset can be fractional is
#: UNCONFIRMED: both ``1`` and ``0.25`` are read. The core pauses the request's bucket on a 429 or a
#: remaining of 0, until that reset.
LIMIT_HEADERS = LimitHeaders(remaining="x-sib-ratelimit-remaining", reset="x-sib-ratelimit-reset")


def rate_limits(settings: BrevoSettings) -> RateLimits:
    """Brevo's general tier (https://developers.brevo.com/docs/api-limits, "General rate limits").

    * ``contacts``: "All endpoints under /v3/contacts/{…}": 10 RPS and 36,000 RPH (``POST /contacts`` and
      ``POST /contacts/import``). 36,000 per hour is 10 per second for 3,600 seconds, so at most 10 in
      any second keeps it: one bucket does. ``BREVO_SYNC_RATE_LIMIT_*`` sets it (20 per 1 s on the
      advanced tier).
    * ``other``: "All other endpoints": 100 RPH, which includes ``GET /processes/{id}`` (import polling);
      ``BREVO_OTHER_RATE_LIMIT_PER_HOUR`` sets it (200 on the advanced tier).

    Brevo does not say how it counts within the period (UNCONFIRMED): both are enforced as sliding
    windows, which keeps a fixed window of any alignment too.
    """
    return RateLimits(
        (
            Bucket("contacts", 10, 1.0, WindowKind.SLIDING, paths=("/contacts",)),
            Bucket("other", settings.other_rate_limit_per_hour, 3600.0, WindowKind.SLIDING),
        ),
        LIMIT_HEADERS,
    )


def parse_email_report(text: str) -> dict[str, str] | None:
    """E-mails (lower-cased) and reasons from one of the CSV reports of a completed import.

    CONFIRMED: a completed import's ``info.import.invalid_emails`` is the URL of a CSV file "containing
    invalid email addresses" (Brevo's get-process reference; ``brevo-python`` 5.1.0
    ``GetProcessResponseInfoImport``). ASSUMED: the file's layout, which Brevo does not document. So
    this reads any delimiter among ``;``, ``,`` and tab; takes the e-mail from the column headed
    ``EMAIL`` (the attribute name Brevo's import files use) when there is a header, else from the first
    cell holding an ``@``; and a column whose header mentions a reason, error or message as the reason.
    ``None`` means the report names no e-mail at all, so it cannot say which contacts were rejected.
    """
    if not text.strip():
        return None
    try:
        dialect: Any = csv.Sniffer().sniff(text[:4096], delimiters=";,\t")
    except csv.Error:
        dialect = csv.excel
        dialect.delimiter = ";"
    rows = [row for row in csv.reader(io.StringIO(text), dialect) if any(c.strip() for c in row)]
    reason_column: int | None = None
    email_column: int | None = None
    if rows and not any("@" in cell for cell in rows[0]):
        header = [cell.strip().lower() for cell in rows.pop(0)]
        email_column = next((i for i, cell in enumerate(header) if cell == "email"), None)
        for index, cell in enumerate(header):
            if any(word in cell for word in ("reason", "error", "message", "cause")):
                reason_column = index
                break
    found: dict[str, str] = {}
    for row in rows:
        email: str | None = None
        if email_column is not None and email_column < len(row) and "@" in row[email_column]:
            email = row[email_column].strip()
        if email is None:
            email = next((cell.strip() for cell in row if "@" in cell), None)
        if email is None:
            continue
        reason = ""
        if reason_column is not None and reason_column < len(row):
            reason = row[reason_column].strip()
        found[email.lower()] = reason or "listed in Brevo's invalid e-mails report"
    return found or None


class BrevoAdapter(BatchAdapter[BrevoSettings]):
    """Pushes contacts to one Brevo account. Built by :data:`SPEC`'s factory for one run.

    ``clock`` and ``sleep`` time the polling of imports; tests pass a manual clock so that nothing
    sleeps for real.
    """

    crm = "brevo"
    path = "/contacts"
    base_url_setting = "BREVO_API_BASE_URL"
    base_url_example = DEFAULT_BASE_URL
    api_key_setting = "BREVO_API_KEY"
    limit_headers = LIMIT_HEADERS
    # Every answer but 404/405 is read by ``outcomes``: one contact per request, nothing to bisect.
    batch_rejections = frozenset()

    def __init__(
        self,
        settings: BrevoSettings,
        context: AdapterContext,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._names = settings.attribute_names
        self._clock = clock
        self._sleep = sleep
        self._reports: httpx.AsyncClient | None = None
        self._poll_spacing = 3600.0 / settings.other_rate_limit_per_hour
        self._log = context.logger
        super().__init__(settings, context)

    def __repr__(self) -> str:
        return f"BrevoAdapter(base_url={self.settings.api_base_url!r}, list_id={self.settings.list_id!r})"

    async def aclose(self) -> None:
        if self._reports is not None:
            await self._reports.aclose()
        await super().aclose()

    # -- what the SDK asks: single upserts ------------------------------------------------------

    def api_key(self) -> str:
        if self.settings.api_key is None:
            raise ConfigurationError(
                "BREVO_API_KEY is not set: create a v3 API key in Brevo (SMTP & API > API keys) "
                "and set BREVO_API_KEY"
            )
        return self.settings.api_key.get_secret_value()

    def headers(self) -> dict[str, str]:
        return {"api-key": self.api_key(), "accept": "application/json"}

    def auth_hint(self) -> str:
        return AUTH_HINT

    def item(self, contact: Contact) -> BrevoContact:
        mapped = map_contact(contact, self._names)
        for note in mapped.notes:
            self._log.info("brevo: contact %s: %s", contact.id, note)
        return mapped

    def body(self, items: Sequence[Any]) -> dict[str, Any]:
        return create_contact_body(items[0], self.settings.list_id)

    async def exchange(self, sent: Sequence[Sent]) -> Sequence[Outcome | Unresolved]:
        """``POST /contacts`` for one contact; sent again without its phone number when Brevo refuses
        that number (malformed, or already another contact's): a phone number must not cost the
        contact."""
        (one,) = sent
        response = await self.send(self.body([one.item]))
        phone = self._names.sms
        if response.status_code >= 300 and phone and phone in one.item.attributes:
            code, message, metadata = self._error(response)
            self._stop_on_account_errors(response, code, message)
            if _about_phone(message, metadata, phone):
                self._log.info(
                    "brevo: contact %s sent without its phone number: Brevo said %s",
                    one.contact.id,
                    message,
                )
                response = await self.send(self.body([one.item.without(phone)]))
        return self.answer(response, sent)

    def outcomes(self, response: httpx.Response, sent: Sequence[Sent]) -> list[Outcome]:
        (one,) = sent
        status = response.status_code
        if status == 201:
            data = self.client.json(response)
            remote_id = data.get("id") if isinstance(data, dict) else None
            if not isinstance(remote_id, int) or isinstance(remote_id, bool):
                raise self.client.malformed(response, 'a created contact {"id": <number>}')
            return [Synced(one.contact.id, str(remote_id))]
        if status == 204:
            # Updated: Brevo returns no id. The e-mail is the id (as ScraperSky stores it) unless one
            # is recorded already: a re-delivered contact keeps Brevo's numeric id.
            return [Synced(one.contact.id, None, fallback_id=one.item.email)]
        if 200 <= status < 300:
            raise self.client.malformed(response, "HTTP 201 or 204")
        code, message, _ = self._error(response)
        self._stop_on_account_errors(response, code, message)
        reason = f"Brevo rejected the contact (HTTP {status} {code or 'error'}): {message}"
        return [PermanentFailure(one.contact.id, reason)]

    def not_found(self, response: httpx.Response) -> FatalError:
        code, message, _ = self._error(response)
        self._stop_on_account_errors(response, code, message)
        return super().not_found(response)

    # -- bulk import ----------------------------------------------------------------------------

    async def deliver(self, items: Sequence[Sent]) -> list[Outcome]:
        """Single upserts, or imports above ``BREVO_IMPORT_THRESHOLD`` (when there is a list)."""
        list_id = self.settings.list_id
        if len(items) <= self.settings.import_threshold or list_id is None:
            return await super().deliver(items)
        chunks = cut(
            items,
            len(items),
            budget=IMPORT_MAX_BYTES - len(json_bytes(import_body([], list_id))),
            cost=lambda s: len(json_bytes(import_item(s.item))) + 1,  # and its comma
        )
        return await self.send_all(chunks, self._import, concurrency=4)

    async def _import(self, sent: Sequence[Sent]) -> list[Outcome]:
        assert self.settings.list_id is not None
        body = import_body([import_item(s.item) for s in sent], self.settings.list_id)
        response = await self.client.request(
            "POST", "/contacts/import", content=json_bytes(body), headers=_JSON
        )
        if 200 <= response.status_code < 300:
            data = self.client.json(response)
            process_id = data.get("processId") if isinstance(data, dict) else None
            if not isinstance(process_id, int) or isinstance(process_id, bool):
                raise self.client.malformed(response, '{"processId": <number>}')
            process = await self._wait_for(process_id)
            return await self._import_outcomes(process_id, process, sent)
        code, message, _ = self._error(response)
        self._stop_on_account_errors(response, code, message)
        # Brevo refused the import as a whole: single upserts say which contact is at fault.
        self._log.warning(
            "brevo: import of %d contacts refused (HTTP %s %s: %s); sending them one by one",
            len(sent),
            response.status_code,
            code,
            message,
        )
        return await super().deliver(sent)

    async def _wait_for(self, process_id: int) -> dict[str, Any]:
        """Poll the import until it completes; a failure or a timeout is a :class:`TransientError`."""
        timeout = self.settings.import_timeout_seconds
        deadline = self._clock() + timeout
        interval = self.settings.import_poll_interval_seconds
        where = f"GET /processes/{process_id}"
        while True:
            response = await self.client.request("GET", f"/processes/{process_id}")
            if response.status_code != 200:
                _, message, _ = self._error(response)
                raise TransientError(
                    f"brevo: HTTP {response.status_code} on {where} while waiting for the import: "
                    f"{message}"
                )
            data = self.client.json(response)
            status = data.get("status") if isinstance(data, dict) else None
            if not isinstance(status, str):
                raise self.client.malformed(response, 'a process with a "status"')
            assert isinstance(data, dict)
            if status == "completed":
                return data
            if status in _FAILED:
                error = data.get("error") or "Brevo gave no reason"
                raise TransientError(
                    f"brevo: import process {process_id} {status}: {self.client.redact(str(error))}"
                )
            if status not in _RUNNING:
                self._log.warning(
                    "brevo: import process %s has unknown status %r", process_id, status
                )
            left = deadline - self._clock()
            if left <= 0:
                raise TransientError(
                    f"brevo: import process {process_id} did not finish within {timeout:g} s "
                    f"(last status {status!r}); its contacts will be sent again"
                )
            await self._sleep(min(interval, left))
            # Polls count against the ``other`` bucket (100 per hour, shared by every import of the
            # fleet, which the limiter enforces): one import alone polls at most at its rate.
            interval = min(interval * 2, max(self._poll_spacing, interval))

    async def _import_outcomes(
        self, process_id: int, process: dict[str, Any], sent: Sequence[Sent]
    ) -> list[Outcome]:
        """Synced for every contact the completed import did not report invalid.

        CONFIRMED (current reference, brevo-python 5.1.0): ``info.import.invalid_emails`` is the URL of a
        CSV report, or null when there is none; it is downloaded (without the API key) and the e-mails it
        lists fail for good (:func:`parse_email_report`). The older published spec gives a count
        instead, still read: a count above zero does not say which contacts were refused, so the chunk
        is sent again as single upserts, whose answers do (an upsert of an already imported contact is
        harmless). Duplicates (``duplicate_*``) are only logged: the adapter already sends each e-mail
        once.
        """
        info = process.get("info")
        details = info.get("import") if isinstance(info, dict) else None
        if not isinstance(details, dict):
            details = {}
        noted = {k: v for k, v in details.items() if k != "invalid_emails" and v}
        if noted:
            self._log.info("brevo: import process %s reported %s", process_id, noted)

        invalid = details.get("invalid_emails")
        rejected: dict[str, str] | None
        if invalid is None or (type(invalid) is int and invalid == 0):
            rejected = {}
        elif isinstance(invalid, str):
            rejected = await self._download_report(process_id, invalid)
        else:
            rejected = None
        if rejected is None:
            self._log.warning(
                "brevo: import process %s reported invalid e-mails (%r) without naming them; "
                "sending its %d contacts one by one to find out which",
                process_id,
                invalid,
                len(sent),
            )
            return await super().deliver(sent)
        outcomes: list[Outcome] = []
        for one in sent:
            reason = rejected.get(one.email)
            if reason is None:
                outcomes.append(Synced(one.contact.id, None, fallback_id=one.item.email))
            else:
                outcomes.append(
                    PermanentFailure(
                        one.contact.id,
                        f"Brevo's import {process_id} refused the e-mail address: {reason}",
                    )
                )
        return outcomes

    async def _download_report(self, process_id: int, url: str) -> dict[str, str] | None:
        if not url.startswith(("https://", "http://")):
            return None
        if self._reports is None:
            # A separate client: the report lives on a file host, which must never see the API key.
            self._reports = httpx.AsyncClient(
                transport=self.context.transport, timeout=30.0, follow_redirects=True
            )
        try:
            response = await self._reports.get(url)
        except httpx.HTTPError as exc:
            self._log.warning(
                "brevo: could not download the report of import %s: %s",
                process_id,
                type(exc).__name__,
            )
            return None
        if response.status_code != 200:
            self._log.warning(
                "brevo: the report of import %s answered HTTP %s", process_id, response.status_code
            )
            return None
        return parse_email_report(response.text)

    def _error(self, response: httpx.Response) -> tuple[str, str, dict[str, Any]]:
        """``(code, message, metadata)`` of a Brevo error body, or the start of any other body."""
        try:
            data = json.loads(response.content)
        except ValueError:
            data = None
        if isinstance(data, dict) and (data.get("code") or data.get("message")):
            metadata = data.get("metadata")
            return (
                str(data.get("code") or ""),
                self.client.redact(str(data.get("message") or ""))[:300],
                metadata if isinstance(metadata, dict) else {},
            )
        return "", self.client.body_snippet(response), {}

    def _stop_on_account_errors(self, response: httpx.Response, code: str, message: str) -> None:
        """Raise :class:`FatalError` for answers that are about the account, not about one contact."""
        status = response.status_code
        list_id = self.settings.list_id
        if (
            list_id is not None
            and status in (400, 404)
            and (code == "document_not_found" or _MENTIONS_LIST.search(message))
        ):
            # UNCONFIRMED: how Brevo words an unknown list (400 or 404, document_not_found or an
            # invalid_parameter naming the list); either is read as "BREVO_LIST_ID is wrong".
            raise FatalError(
                f"Brevo does not accept list {list_id} (HTTP {status} {code}: {message}): set "
                "BREVO_LIST_ID to the id of an existing list (Brevo: Contacts > Lists), or leave it "
                "empty to add contacts to no list"
            )
        if status == 402:
            raise FatalError(
                f"Brevo refused the request (HTTP 402 {code}: {message}): the Brevo account needs "
                "credits or a plan that allows it"
            )


def _about_phone(message: str, metadata: dict[str, Any], attribute: str) -> bool:
    identifiers = metadata.get("duplicate_identifiers")
    if isinstance(identifiers, list) and attribute in identifiers:
        return True
    return bool(_MENTIONS_PHONE.search(message)) or attribute.lower() in message.lower()


#: The Brevo adapter's capability manifest. 2,000 contacts per batch: about 1.5 MB of import body
#: (far under the 8 MB cap), and when a batch has to go one by one (no BREVO_LIST_ID) it takes
#: 200 s at 10 requests/s, well inside the 10-minute claim timeout.
SPEC: AdapterSpec[BrevoSettings] = AdapterSpec(
    name="brevo",
    settings_model=BrevoSettings,
    factory=BrevoAdapter,
    max_batch_size=2000,
    rate_limit=RateLimit(10, 1.0),
    rate_limits=rate_limits,
    partial_success=True,
    sandbox="crmsync_brevo.fake:make_sandbox",
    check="crmsync_brevo.account:check",
    description="Brevo contacts: upserts, and bulk imports above BREVO_IMPORT_THRESHOLD",
)
