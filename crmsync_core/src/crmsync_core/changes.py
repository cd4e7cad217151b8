"""Change detection, dry runs and test sends (see ``docs/changes.md``).

* **Fingerprints.** An adapter that declares :attr:`~crmsync_core.adapter.AdapterSpec.payload` says what
  the CRM receives for a contact; :func:`fingerprint` is a short SHA-256 of that payload's canonical JSON.
  The store keeps, per CRM and contact, the fingerprint of the last delivery (table
  ``crmsync_fingerprints``), written in the transaction that records the contact ``Complete``. A change
  in a field the CRM does not receive leaves the fingerprint as it was, so it is no change.
* **Unchanged re-selections.** A contact a user re-selects after it was ``Complete`` whose payload has the
  fingerprint of its last delivery is completed by the engine without a request ("unchanged since
  <time>"); queueing with ``force=True`` re-sends it. A contact in ``Error`` or ``Skipped`` is never
  completed this way.
* **Changed contacts.** :func:`queue_changed` (``Engine.queue_changed``, ``crmsync sync --changed``)
  re-queues, as the system, the ``Complete`` contacts whose payload differs from the last delivered one.
* **Dry runs.** :func:`dry_run` runs the adapter over the due contacts against a
  :class:`RecordingTransport` that sends nothing, and returns the requests it would have sent, redacted.
* **Test one.** :func:`test_one` sends one contact now through a normal run, recording the exchange.

The engine calls into this module; it holds no SQL (the store's) and no HTTP beyond the recording
transport, which only wraps the one the adapter would use.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from pydantic import SecretStr

from .contacts import Contact, ContactId

if TYPE_CHECKING:
    from .adapter import AdapterSpec
    from .plugins import Registry
    from .queue import ContactState, Queue
    from .report import RunReport
    from .settings import SyncSettings
    from .store import Store

logger = logging.getLogger("crmsync.changes")


class EngineView(Protocol):
    """What these operations use of :class:`~crmsync_core.engine.Engine`, whose methods of the same
    names call them (typed by what they use, so that this module does not import the engine)."""

    @property
    def store(self) -> Queue: ...

    @property
    def registry(self) -> Registry: ...

    def now(self) -> datetime: ...

    def settings_for(self, crm: str) -> SyncSettings: ...

    def transport_for(self, crm: str) -> Any: ...

    async def run_once(
        self, crm: str, *, only: Sequence[Any] | None = None, transport: Any = None
    ) -> RunReport: ...


#: hex digits kept of the SHA-256 (64 bits: a collision among one CRM's contacts is not a concern)
FINGERPRINT_LENGTH = 16
#: contacts read and compared per chunk by :func:`queue_changed`
SCAN_CHUNK = 5_000
#: the longest response body :func:`test_one` shows
SHOWN_BODY_LENGTH = 4_000
#: header names whose values are never shown (besides any value that holds a known secret)
_SECRET_HEADER = re.compile(r"auth|key|token|secret|cookie|signature|password|session", re.I)


def fingerprint(payload: Mapping[str, Any]) -> str:
    """A short hex SHA-256 of ``payload``'s canonical JSON (sorted keys, no spaces): equal payloads, and
    only those, have equal fingerprints, whatever the order their keys were built in."""
    canonical = json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def payload_fingerprint(
    spec: AdapterSpec[Any], settings: SyncSettings, contact: Contact
) -> str | None:
    """The fingerprint of what ``spec``'s CRM would receive for ``contact``; ``None`` when the adapter
    does not say (no ``payload``), would not send the contact, or cannot map it."""
    if spec.payload is None:
        return None
    try:
        payload = spec.payload(contact, settings)
    except Exception:
        # An unmappable contact is sent (and fails or is skipped) as before: never skipped as unchanged.
        logger.debug("%s: no payload for contact %s", spec.name, contact.id, exc_info=True)
        return None
    return None if payload is None else fingerprint(payload)


def unchanged_reason(delivered_at: datetime) -> str:
    """What a contact completed without a request records as its reason."""
    return f"unchanged since {delivered_at.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


# -- change scan --------------------------------------------------------------------------------------


@dataclass
class ChangeScan:
    """What :func:`queue_changed` did for one CRM."""

    crm: str
    #: Complete contacts compared (those that may have changed since their last delivery)
    scanned: int = 0
    #: re-queued because what the CRM would receive differs from the last delivery
    requeued: int = 0
    #: compared and found unchanged (only fields the CRM does not receive changed)
    unchanged: int = 0
    duration_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "crm": self.crm,
            "scanned": self.scanned,
            "requeued": self.requeued,
            "unchanged": self.unchanged,
            "duration_seconds": round(self.duration_seconds, 3),
        }


async def queue_changed(engine: EngineView, crm: str, *, chunk: int = SCAN_CHUNK) -> ChangeScan:
    """Re-queue (as the system) every ``Complete`` contact of ``crm`` whose payload differs from the one
    last delivered; see :meth:`Engine.queue_changed`."""
    from .errors import ConfigurationError

    spec = engine.registry.get(crm)
    if spec.payload is None:
        raise ConfigurationError(
            f"the {crm} adapter does not say what it sends (AdapterSpec.payload), so crmsync cannot "
            "tell which contacts changed"
        )
    settings = engine.settings_for(crm)
    store = _store(engine)
    started = time.perf_counter()
    # Changes made while the scan reads are newer than this, so they are found by the next scan.
    checked_at = engine.now()
    scan = ChangeScan(crm)
    async for rows in store.change_candidates(crm, chunk=chunk):
        changed: list[ContactId] = []
        same: list[ContactId] = []
        for contact, delivered in rows:
            current = payload_fingerprint(spec, settings, contact)
            if current is None or current == delivered:
                same.append(contact.id)
            else:
                changed.append(contact.id)
        scan.scanned += len(rows)
        if changed:
            result = await store.queue(crm, changed, by_system=True, now=checked_at)
            scan.requeued += result.queued + result.skipped
        if same:
            await store.mark_checked(crm, same, at=checked_at)
            scan.unchanged += len(same)
    scan.duration_seconds = time.perf_counter() - started
    if scan.requeued:
        logger.info("%s: re-queued %d changed contacts", crm, scan.requeued)
    return scan


# -- recording requests -------------------------------------------------------------------------------


def _store(engine: EngineView) -> Store:
    """The engine's queue as the SQL store these operations read (any other queue lacks them)."""
    from .errors import ConfigurationError
    from .store import Store

    if not isinstance(engine.store, Store):
        raise ConfigurationError(
            "change scans, dry runs and test sends need the engine's queue to be a crmsync Store"
        )
    return engine.store


def secrets_of(settings: SyncSettings) -> list[str]:
    """Every secret value in ``settings`` (API keys, tokens, URLs with credentials), for redaction."""
    from .http import url_secrets

    found: list[str] = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if secret:
                found.append(secret)
                if "://" in secret:
                    found.extend(url_secrets(secret))
    return found


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One request as the adapter made it, with secrets replaced by ``***``."""

    method: str
    url: str
    #: the URL's path (what a CRM's API reference names)
    path: str
    headers: dict[str, str]
    #: the body as JSON when it is JSON, else as text (``None`` when empty)
    body: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
        }


@dataclass(frozen=True, slots=True)
class RecordedExchange:
    """A request and the CRM's answer to it (``status`` ``None``: no answer, e.g. a connection error)."""

    request: RecordedRequest
    status: int | None
    headers: dict[str, str]
    #: the answer's body, redacted (JSON when it is JSON, else text cut to ``SHOWN_BODY_LENGTH``)
    body: Any

    def as_dict(self) -> dict[str, Any]:
        return {
            "request": self.request.as_dict(),
            "status": self.status,
            "headers": self.headers,
            "body": self.body,
        }


class RecordingTransport(httpx.AsyncBaseTransport):
    """Records each request (redacted) and passes it to ``inner``; with no ``inner`` it sends nothing
    and answers every request ``503 dry run``, which adapters treat as a transient failure of that
    request alone (no retries are configured for a dry run), so each request of a batch is made once."""

    def __init__(self, secrets: Iterable[str], inner: httpx.AsyncBaseTransport | None) -> None:
        from .http import Redactor

        self._redact = Redactor(secrets)
        self._inner = inner
        self.exchanges: list[RecordedExchange] = []

    @property
    def requests(self) -> list[RecordedRequest]:
        return [exchange.request for exchange in self.exchanges]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        recorded = RecordedRequest(
            method=request.method,
            url=self._redact(str(request.url)),
            path=self._redact(request.url.path),
            headers=self._headers(request.headers),
            body=self._body(content, request.headers.get("content-type", "")),
        )
        if self._inner is None:
            self.exchanges.append(RecordedExchange(recorded, None, {}, None))
            return httpx.Response(
                503, json={"message": "crmsync dry run: nothing was sent"}, request=request
            )
        try:
            response = await self._inner.handle_async_request(request)
        except Exception as exc:
            self.exchanges.append(
                RecordedExchange(recorded, None, {}, self._redact(f"{type(exc).__name__}: {exc}"))
            )
            raise
        body = await response.aread()
        self.exchanges.append(
            RecordedExchange(
                recorded,
                response.status_code,
                self._headers(response.headers),
                self._body(body, response.headers.get("content-type", ""), clip=True),
            )
        )
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            content=body,
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()

    def _headers(self, headers: httpx.Headers) -> dict[str, str]:
        return {
            name: "***" if _SECRET_HEADER.search(name) else self._redact(value)
            for name, value in headers.items()
        }

    def _body(self, content: bytes, content_type: str, *, clip: bool = False) -> Any:
        if not content:
            return None
        text = self._redact(content.decode("utf-8", errors="replace"))
        if "json" in content_type or text[:1] in "{[":
            try:
                return json.loads(text)
            except ValueError:
                pass
        if clip and len(text) > SHOWN_BODY_LENGTH:
            return text[:SHOWN_BODY_LENGTH] + "…"
        return text


# -- dry run ------------------------------------------------------------------------------------------


@dataclass
class DryRun:
    """What a sync of one CRM would send now; nothing was sent and nothing changed."""

    crm: str
    #: the contacts due now (at most the limit asked for)
    due: int = 0
    requests: list[RecordedRequest] = field(default_factory=list)
    #: due contacts that would be completed without a request (unchanged since their last delivery)
    unchanged: list[ContactId] = field(default_factory=list)
    #: why the adapter could not be built (a missing key, ...): then no request is shown
    stopped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "crm": self.crm,
            "due": self.due,
            "requests": [request.as_dict() for request in self.requests],
            "unchanged": [str(contact_id) for contact_id in self.unchanged],
            "stopped": self.stopped,
        }


async def dry_run(engine: EngineView, crm: str, *, limit: int | None = None) -> DryRun:
    """The requests a sync of ``crm`` would send now; see :meth:`Engine.dry_run`."""
    from .adapter import AdapterContext, collect_outcomes
    from .errors import ConfigurationError, FatalError
    from .ratelimit import Limiter
    from .retry import RequestRetry

    spec = engine.registry.get(crm)
    engine.store.layout.columns_for(crm)
    report = DryRun(crm)
    contacts = await _store(engine).due_contacts(crm, limit=limit, now=engine.now())
    report.due = len(contacts)
    try:
        settings = engine.settings_for(crm)
    except ConfigurationError as exc:
        report.stopped = str(exc)
        return report
    unchanged = await _unchanged(engine, spec, settings, contacts)
    report.unchanged = [c.id for c in contacts if c.id in unchanged]
    to_send = [c for c in contacts if c.id not in unchanged]
    recorder = RecordingTransport(secrets_of(settings), None)
    context = AdapterContext(
        # Its own budget and no retries: a dry run neither waits for nor spends the CRM's requests.
        rate_limiter=Limiter(None),
        request_retry=RequestRetry(attempts=1, initial_wait=0.0, max_wait=0.0),
        transport=recorder,
        logger=logging.getLogger(f"crmsync.{crm}.dry_run"),
    )
    try:
        adapter = spec.factory(settings, context)
    except (ConfigurationError, FatalError) as exc:
        report.stopped = str(exc)
        return report
    size = min(settings.sync_scheduler_batch_size or spec.max_batch_size, spec.max_batch_size)
    try:
        for start in range(0, len(to_send), size):
            try:
                await collect_outcomes(adapter, to_send[start : start + size], crm=crm)
            except FatalError as exc:
                report.stopped = str(exc)
                break
    finally:
        await adapter.aclose()
    report.requests = recorder.requests
    return report


async def _unchanged(
    engine: EngineView, spec: AdapterSpec[Any], settings: SyncSettings, contacts: Sequence[Contact]
) -> dict[ContactId, datetime]:
    """Which of ``contacts`` a run completes without a request, with their last delivery time."""
    prints = {c.id: payload_fingerprint(spec, settings, c) for c in contacts}
    wanted = [contact_id for contact_id, value in prints.items() if value is not None]
    if not wanted:
        return {}
    stored = await engine.store.fingerprints(spec.name, wanted)
    return {
        contact_id: known.delivered_at
        for contact_id, known in stored.items()
        if known.reselected and known.fingerprint == prints.get(contact_id)
    }


# -- test one -----------------------------------------------------------------------------------------


@dataclass
class TestOne:
    """What :func:`test_one` did: the exchanges with the CRM and the contact's state afterwards."""

    __test__ = False  # not a pytest test class, whatever its name

    crm: str
    contact_id: ContactId
    exchanges: list[RecordedExchange]
    report: RunReport
    state: ContactState | None

    def as_dict(self) -> dict[str, Any]:
        state = self.state
        return {
            "crm": self.crm,
            "contact_id": str(self.contact_id),
            "exchanges": [exchange.as_dict() for exchange in self.exchanges],
            "sync_status": state.sync_status.value if state else None,
            "processing_status": (
                state.processing_status.value if state and state.processing_status else None
            ),
            "error": state.error if state else None,
            "remote_id": state.remote_id if state else None,
            "stopped": self.report.stopped,
        }


async def test_one(engine: EngineView, crm: str, contact_id: ContactId | str) -> TestOne:
    """Send one contact to ``crm`` now and record the outcome as a sync does; see
    :meth:`Engine.test_one`."""
    from .errors import InvalidRequestError

    store = _store(engine)
    engine.registry.get(crm)
    store.layout.columns_for(crm)
    states = await store.states(crm, [contact_id])
    if not states:
        raise InvalidRequestError(f"there is no contact {str(contact_id)[:60]!r}")
    (key, state), *_ = states.items()
    from .status import SyncStatus

    if state.sync_status is SyncStatus.PROCESSING:
        raise InvalidRequestError(
            f"contact {key} is being sent to {crm} by a worker right now; try again when it is done"
        )
    # Queued by the user and forced: a test send never stops at "unchanged".
    result = await store.queue(crm, [key], force=True, now=engine.now())
    if result.skipped:
        states = await store.states(crm, [key])
        raise InvalidRequestError(
            f"contact {key} cannot be sent to {crm}: {states[key].error or 'skipped'}"
        )
    settings = engine.settings_for(crm)
    # The network unless the engine routes this CRM elsewhere (a sandbox, a test's fake).
    inner = engine.transport_for(crm) or httpx.AsyncHTTPTransport()
    recorder = RecordingTransport(secrets_of(settings), inner)
    report = await engine.run_once(crm, only=[key], transport=recorder)
    after = (await store.states(crm, [key])).get(key)
    return TestOne(crm, key, recorder.exchanges, report, after)
