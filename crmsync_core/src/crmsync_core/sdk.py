"""A base for adapters of the common shape: one HTTP API, contacts sent in batches (or one per request),
and an answer that says what became of each contact.

:class:`BatchAdapter` owns what every such adapter needs and gets subtly wrong when written by hand:

* contacts without a valid e-mail are skipped; contacts sharing an e-mail (case and spaces aside; or
  another :meth:`BatchAdapter.item_key`) are sent once and share that item's outcome;
* items are cut into requests of :attr:`BatchAdapter.batch_size`, sent through
  :class:`~crmsync_core.http.CrmClient` (rate limit, retries, redaction, 429s waited out) with at most
  ``{CRM}_SYNC_CONCURRENCY`` requests in flight for the adapter, however many batches the engine has in
  flight (each of those requests keeps a connection of its own);
* each request's outcomes are reported (``context.report``) as soon as it is answered, so a contact's
  fate follows its own request's answer; the first :class:`~crmsync_core.errors.FatalError` stops the
  requests not started yet and is raised once those in flight are answered and reported;
* a whole-batch rejection (:attr:`BatchAdapter.batch_rejections`), and items an answer refused together
  (:class:`Unresolved`), are bisected down to the bad items when :attr:`BatchAdapter.bisect_rejections`
  is set, within :attr:`BatchAdapter.bisection_requests` extra requests per batch; else every item of a
  rejected batch fails permanently;
* 404/405 stop the run naming the base URL setting; 401/403 stop it naming the credentials setting;
  the base URL is checked before anything is sent (a token in its query is redacted); the CRM's
  rate-limit headers are read as :attr:`BatchAdapter.limit_headers` declares.

An adapter states its endpoint (:attr:`path`, :attr:`method`), maps a contact to a payload item
(:meth:`item`), and maps an answer to outcomes (:meth:`outcomes`)::

    class AcmeAdapter(BatchAdapter[AcmeSettings]):
        crm, path, batch_size = "acme", "/contacts/batch", 100
        base_url_setting, api_key_setting = "ACME_BASE_URL", "ACME_API_KEY"

        def item(self, contact):
            return {"email": contact.email, "name": contact.name}

        def outcomes(self, response, sent):
            ...
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import httpx
from pydantic import SecretStr

from .adapter import AdapterContext
from .contacts import (
    Contact,
    ContactId,
    Outcome,
    PermanentFailure,
    Synced,
    TransientFailure,
    split_sendable,
)
from .errors import ConfigurationError, FatalError, PermanentError, TransientError
from .history import Exchange as KeptExchange
from .http import CrmClient, url_secrets
from .ratelimit import LimitHeaders
from .settings import SyncSettings

SettingsT = TypeVar("SettingsT", bound=SyncSettings)
_O = TypeVar("_O")
T = TypeVar("T")


def normalised_email(email: str | None) -> str:
    """The e-mail as CRMs compare addresses: without surrounding spaces, lower-cased."""
    return (email or "").strip().lower()


def checked_base_url(value: str | None, *, crm: str, setting: str, example: str) -> str:
    """``value`` without trailing slashes, or a :class:`ConfigurationError` naming ``setting`` when it is
    missing or not an http(s) address with a host (``example`` shows what one looks like)."""
    if not value or not value.strip():
        raise ConfigurationError(f"{crm}: set {setting} to the address of its API, e.g. {example}")
    url = value.strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        parsed = httpx.URL("")
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(f"{crm}: {setting} must be an http(s) address such as {example}")
    return url


def json_bytes(body: Any) -> bytes:
    """``body`` as sent: compact UTF-8 JSON (what a CRM's size limit counts)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def cut(
    items: Sequence[T],
    size: int,
    *,
    budget: int | None = None,
    cost: Callable[[T], int] | None = None,
) -> list[list[T]]:
    """``items`` in order, in runs of at most ``size`` items and, given a ``budget``, whose ``cost``
    adds up to at most ``budget`` (e.g. bytes under a body limit; an item over it goes alone)."""
    runs: list[list[T]] = []
    spent = 0
    for item in items:
        price = cost(item) if cost is not None else 0
        if runs and len(runs[-1]) < size and (budget is None or spent + price <= budget):
            runs[-1].append(item)
            spent += price
        else:
            runs.append([item])
            spent = price
    return runs


def setting_value(settings: SyncSettings, env_name: str) -> str | None:
    """The value of the setting read from the environment variable ``env_name`` (``ACME_API_KEY`` is the
    field ``api_key`` of settings whose prefix is ``ACME_``), secrets unwrapped; ``None`` when unset."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    name = env_name[len(prefix) :] if env_name.upper().startswith(prefix.upper()) else env_name
    value = getattr(settings, name.lower(), None)
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Sent:
    """One item of a request: the contact it was made from, and what was sent for it."""

    contact: Contact
    item: Any
    #: every contact the item stands for (rows sharing the e-mail); the first is ``contact``
    members: tuple[ContactId, ...]

    @property
    def email(self) -> str:
        """The contact's e-mail, normalised: what to match the CRM's answer against."""
        return normalised_email(self.contact.email)


@dataclass(frozen=True, slots=True)
class Unresolved:
    """What :meth:`BatchAdapter.outcomes` returns for an item the CRM refused together with others
    without saying which of them was at fault: the SDK sends such items again in halves (bisection),
    while the batch's budget lasts, until each one's fate is known."""

    contact_id: ContactId
    #: what the CRM said
    reason: str


#: one exchange: a request (or several) for some items, and what the answer says of each
Exchange = Callable[[Sequence[Sent]], Awaitable[Sequence[Outcome | Unresolved]]]
_JSON = {"Content-Type": "application/json"}
#: set while a request of :meth:`BatchAdapter.send_all` holds one of the adapter's slots: a ``send_all``
#: nested in it (an exchange that falls back to single requests) runs in that slot's stead, since
#: waiting for another slot could wait forever once every slot is held the same way
_HOLDING_SLOT: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "crmsync_holding_slot", default=False
)


class _Budget:
    """How many more requests one batch may spend on bisection."""

    def __init__(self, left: int) -> None:
        self.left = left


class BatchAdapter(Generic[SettingsT]):
    """A CRM adapter of the common shape; see the module docstring. Subclass, set the class attributes,
    and implement :meth:`item` and :meth:`outcomes`."""

    #: the adapter's name, as in its spec (used in messages)
    crm: ClassVar[str]
    #: the endpoint every batch goes to, relative to the base URL
    path: ClassVar[str]
    method: ClassVar[str] = "POST"
    #: the most items one request carries (1: one request per contact)
    batch_size: ClassVar[int] = 1
    #: the environment variable of the API's base URL, e.g. ``"ACME_BASE_URL"``
    base_url_setting: ClassVar[str] = ""
    #: shown in the base URL's error messages
    base_url_example: ClassVar[str] = "https://api.example.com"
    #: the environment variable of the API key sent as ``Authorization: Bearer``; empty when the
    #: subclass authenticates otherwise (overriding :meth:`headers` and :meth:`secrets`)
    api_key_setting: ClassVar[str] = ""
    #: where the CRM announces its rate limit (header names); see :class:`~crmsync_core.ratelimit.LimitHeaders`
    limit_headers: ClassVar[LimitHeaders | None] = None
    #: statuses with which the CRM rejects a whole batch because of what some items hold
    batch_rejections: ClassVar[frozenset[int]] = frozenset({400, 422})
    #: whether a whole-batch rejection is bisected down to the bad items (else they all fail)
    bisect_rejections: ClassVar[bool] = False
    #: extra requests one batch may spend on bisection (see :meth:`bisection_budget`)
    bisection_requests: ClassVar[int] = 16
    #: the setting that raises :attr:`bisection_requests`, named when a batch used its budget up
    bisection_setting: ClassVar[str] = ""
    #: the adapter's request slots (``{CRM}_SYNC_CONCURRENCY``), made on first use in the running loop
    _slots: asyncio.Semaphore | None = None

    def __init__(self, settings: SettingsT, context: AdapterContext) -> None:
        self.settings = settings
        self.context = context
        self.base_url = checked_base_url(
            self.base_url_value(),
            crm=self.crm,
            setting=self.base_url_setting,
            example=self.base_url_example,
        )
        self.client = CrmClient(
            context,
            crm=self.crm,
            base_url=self.base_url,
            headers=self.headers(),
            # a token in the base URL's query (a webhook's signature) is a secret too
            secrets=[*self.secrets(), *url_secrets(self.base_url)],
            auth_hint=self.auth_hint(),
            timeout=float(getattr(settings, "timeout_seconds", 30.0)),
            limit_headers=self.limit_headers,
            inspect=self.inspect,
            lanes=self.concurrency(),
        )

    # -- what a subclass states ---------------------------------------------------------------------

    def item(self, contact: Contact) -> Any:
        """``contact`` as one payload item (raise :class:`PermanentError` for data the CRM cannot take)."""
        raise NotImplementedError

    def body(self, items: Sequence[Any]) -> Any:
        """The JSON body of one request carrying ``items``. Default: the list of items."""
        return list(items)

    def outcomes(
        self, response: httpx.Response, sent: Sequence[Sent]
    ) -> Sequence[Outcome | Unresolved]:
        """What the CRM's answer (any status but 401, 403, 404, 405 and :attr:`batch_rejections`) says
        of each item: one outcome per :class:`Sent`, for its ``contact.id``. An item left without one is
        a transient failure; an :class:`Unresolved` one is bisected. Raise :class:`TransientError` (e.g. ``self.client.malformed(...)``) or
        :class:`PermanentError` for the whole request, :class:`FatalError` to stop the run."""
        raise NotImplementedError

    # -- what a subclass may change -----------------------------------------------------------------

    def base_url_value(self) -> str | None:
        """The configured base URL (default: the setting :attr:`base_url_setting` names)."""
        return setting_value(self.settings, self.base_url_setting)

    def api_key(self) -> str:
        """The API key :attr:`api_key_setting` names, or a :class:`ConfigurationError` saying to set it."""
        key = (setting_value(self.settings, self.api_key_setting) or "").strip()
        if not key:
            raise ConfigurationError(f"{self.crm}: set {self.api_key_setting} to your API key")
        return key

    def headers(self) -> dict[str, str]:
        """Headers of every request. Default: JSON, and the API key as a bearer token."""
        headers = {"Accept": "application/json"}
        if self.api_key_setting:
            headers["Authorization"] = f"Bearer {self.api_key()}"
        return headers

    def secrets(self) -> list[str]:
        """Values never to appear in a message or a log line. Default: the API key."""
        return [self.api_key()] if self.api_key_setting else []

    def auth_hint(self) -> str:
        """What to fix when the CRM answers 401 or 403."""
        return f"check the API key setting {self.api_key_setting or self.crm.upper() + '_*'}"

    def inspect(self, response: httpx.Response) -> None:
        """Called on every response before the generic handling; may raise (e.g. a daily limit)."""

    async def send(self, body: Any) -> httpx.Response:
        """Send one request's body (override to sign requests, e.g. with a token fetched first)."""
        return await self.client.request(
            self.method, self.request_path(), content=json_bytes(body), headers=_JSON
        )

    async def exchange(self, sent: Sequence[Sent]) -> Sequence[Outcome | Unresolved]:
        """One request for ``sent`` and what its answer says of each item: :meth:`send` the
        :meth:`body`, then :meth:`answer`. Override for an exchange of several requests (e.g. submit
        a job, then poll it), or one that sends again on some answers."""
        body = self.body([s.item for s in sent])
        response = await self.send(body)
        kept: KeptExchange | None = None
        sampler = self.context.payloads
        if sampler is not None and sampler.wanted():
            # Kept in the run history: redacted, capped, for every contact of this request.
            kept = sampler.capture(json.dumps(body, default=str), response.text, self.client.redact)
        # The run history keeps each contact's status code.
        status = response.status_code
        return [_with_status(o, status, kept) for o in self.answer(response, sent)]

    async def deliver(self, items: Sequence[Sent]) -> list[Outcome]:
        """Send a push's items (de-duplicated and mapped) and return each contact's outcome. Default:
        requests of :meth:`request_size` items through :meth:`send_all`. Override to take another route
        for some pushes (e.g. a bulk import above a threshold), through :meth:`send_all` too."""
        return await self.send_all(cut(items, max(1, self.request_size())))

    def request_path(self) -> str:
        """The endpoint (default :attr:`path`; e.g. a setting instead)."""
        return self.path

    def item_key(self, contact: Contact) -> str:
        """What makes contacts one item: those with the same key are sent once and share its outcome.
        Default: the normalised e-mail; ``str(contact.id)`` sends every row (a webhook whose workflow
        decides what a repeated e-mail means)."""
        return normalised_email(contact.email)

    def representative(self, members: Sequence[Contact]) -> Contact:
        """Which of the contacts sharing an e-mail is sent for all of them. Default: the first."""
        return members[0]

    def bisection_budget(self) -> int:
        """Extra requests one batch may spend on bisection (default :attr:`bisection_requests`)."""
        return self.bisection_requests

    def not_found(self, response: httpx.Response) -> FatalError:
        """The error for a 404 or 405: the base URL (or the endpoint) is wrong."""
        return FatalError(
            f"{self.crm}: no API at {self.client.redact(self.base_url + self.request_path())} (HTTP "
            f"{response.status_code}): check the base URL setting "
            f"{self.base_url_setting or self.crm.upper() + '_*'}. "
            f"The CRM said: {self.client.body_snippet(response)}"
        )

    def rejected(self, response: httpx.Response, sent: Sequence[Sent]) -> str:
        """What the CRM said when it refused a whole request (:attr:`batch_rejections`); may raise
        :class:`FatalError` when no contact is at fault (e.g. an unknown field). Default: its answer."""
        return self.client.body_snippet(response)

    def item_rejected(self, item: Sent, reason: str) -> Outcome:
        """The outcome of an item the CRM refused alone. Default: a permanent failure quoting it."""
        return PermanentFailure(item.contact.id, f"{self.crm} rejected the contact: {reason}")

    def request_size(self) -> int:
        """The most items one request carries (default :attr:`batch_size`; e.g. a setting instead)."""
        return self.batch_size

    def concurrency(self) -> int:
        """Requests in flight at once within one push (``{CRM}_SYNC_CONCURRENCY``)."""
        return max(1, int(getattr(self.settings, "sync_concurrency", 1)))

    # -- the protocol -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    async def push(self, contacts: Sequence[Contact]) -> Sequence[Outcome]:
        """:meth:`~crmsync_core.adapter.Adapter.push`: one outcome per contact; see the module docstring."""
        sendable, skipped = split_sendable(contacts)
        outcomes: list[Outcome] = list(skipped)
        groups: dict[str, list[Contact]] = {}
        for contact in sendable:
            groups.setdefault(self.item_key(contact), []).append(contact)
        items: list[Sent] = []
        for members in groups.values():
            chosen = self.representative(members)
            others = tuple(m.id for m in members if m is not chosen)
            try:
                item = self.item(chosen)
            except PermanentError as exc:
                outcomes += [PermanentFailure(m.id, exc.message) for m in members]
                continue
            items.append(Sent(chosen, item, (chosen.id, *others)))
        self.context.report(outcomes)
        return outcomes + await self.deliver(items)

    async def send_all(
        self,
        chunks: Sequence[Sequence[Sent]],
        exchange: Exchange | None = None,
        *,
        concurrency: int | None = None,
    ) -> list[Outcome]:
        """Each chunk through one ``exchange`` (default :meth:`exchange`), ``concurrency`` at a time
        (default: the adapter's :meth:`concurrency` slots, which every push in flight shares), each
        one's outcomes reported as it is answered; the first fatal error stops the chunks not started
        yet; see the module docstring."""
        # The engine pushes several batches at once: by default their requests share the adapter's
        # slots, so that no more than {CRM}_SYNC_CONCURRENCY requests are in flight in all.
        shared = concurrency is None and not _HOLDING_SLOT.get()
        if shared:
            if self._slots is None:
                self._slots = asyncio.Semaphore(self.concurrency())
            semaphore = self._slots
        else:
            semaphore = asyncio.Semaphore(concurrency or self.concurrency())
        exchange = exchange or self.exchange
        failed: list[Exception] = []

        async def run(chunk: Sequence[Sent]) -> list[Outcome]:
            async with semaphore:
                if failed:
                    return []  # the run is stopping: not sent, handed back untouched
                holding = _HOLDING_SLOT.set(True) if shared else None
                try:
                    outcomes = await self._request(chunk, self._budget(), exchange)
                    answered = _spread(chunk, outcomes, self.crm)
                except Exception as exc:  # a FatalError, a database error: raised below
                    failed.append(exc)
                    return []
                finally:
                    if holding is not None:
                        _HOLDING_SLOT.reset(holding)
                self.context.report(answered)
                return answered

        results = await asyncio.gather(*(run(chunk) for chunk in chunks))
        if failed:
            raise next((e for e in failed if isinstance(e, FatalError)), failed[0])
        return [outcome for result in results for outcome in result]

    def _budget(self) -> _Budget:
        return _Budget(self.bisection_budget())

    def answer(
        self, response: httpx.Response, sent: Sequence[Sent]
    ) -> Sequence[Outcome | Unresolved]:
        """What ``response`` says of ``sent``: 404/405 and :attr:`batch_rejections` as the module
        docstring says, any other status as :meth:`outcomes` says."""
        status = response.status_code
        if status in (404, 405):
            raise self.not_found(response)
        if status not in self.batch_rejections:
            return self.outcomes(response, sent)
        said = self.rejected(response, sent)
        if not self.bisect_rejections and len(sent) > 1:
            reason = f"{self.crm} rejected the batch (HTTP {status}): {said}"
            return [PermanentFailure(s.contact.id, reason) for s in sent]
        return [Unresolved(s.contact.id, f"HTTP {status}: {said}") for s in sent]

    async def _request(
        self, sent: Sequence[Sent], budget: _Budget, exchange: Exchange
    ) -> list[Outcome]:
        """One exchange for ``sent``: the outcomes of its representatives (``Sent.contact``)."""
        try:
            answered = await exchange(sent)
        except TransientError as exc:
            code = _status_of(exc)
            return [
                TransientFailure(s.contact.id, exc.message, exc.retry_after, code) for s in sent
            ]
        except PermanentError as exc:
            code = _status_of(exc)
            return [PermanentFailure(s.contact.id, exc.message, code) for s in sent]
        outcomes = [o for o in answered if not isinstance(o, Unresolved)]
        unresolved = {o.contact_id: o.reason for o in answered if isinstance(o, Unresolved)}
        left = [s for s in sent if s.contact.id in unresolved]
        if left:
            said = "; ".join(dict.fromkeys(unresolved.values()))
            outcomes += await self._bisect(left, said, budget, exchange)
        return outcomes

    async def _bisect(
        self, sent: Sequence[Sent], said: str, budget: _Budget, exchange: Exchange
    ) -> list[Outcome]:
        """The CRM refused ``sent`` together without saying which were at fault: send them again in
        halves while the batch's budget lasts, until each one stands alone."""
        if len(sent) == 1:
            return [self.item_rejected(sent[0], said)]
        if budget.left < 2:
            setting = f" ({self.bisection_setting})" if self.bisection_setting else ""
            reason = (
                f"{self.crm}: the CRM refused this contact's batch of {len(sent)} without saying "
                f"which contacts were at fault ({said[:300]}), and the batch used up its "
                f"{self.bisection_budget()} requests for narrowing that down{setting}: it is sent "
                "again in a later run"
            )
            return [TransientFailure(s.contact.id, reason) for s in sent]
        budget.left -= 2
        middle = len(sent) // 2
        first = await self._request(sent[:middle], budget, exchange)
        return first + await self._request(sent[middle:], budget, exchange)

    # -- helpers for outcomes() ---------------------------------------------------------------------

    @staticmethod
    def by_email(sent: Sequence[Sent]) -> dict[str, Sent]:
        """``sent`` keyed by normalised e-mail, to match an answer that names contacts by address."""
        return {s.email: s for s in sent}


def _spread(sent: Sequence[Sent], outcomes: Sequence[Outcome], crm: str) -> list[Outcome]:
    """One outcome per contact of ``sent``: each item's outcome (first one wins) given to every contact
    it stands for; an item the answer left out is a transient failure."""
    by_id: dict[ContactId, Outcome] = {}
    for outcome in outcomes:
        by_id.setdefault(outcome.contact_id, outcome)
    spread: list[Outcome] = []
    for item in sent:
        outcome = by_id.get(item.contact.id) or TransientFailure(
            item.contact.id, f"{crm}'s answer has no result for this contact"
        )
        spread.append(outcome)
        spread += [dataclasses.replace(outcome, contact_id=m) for m in item.members[1:]]
    return spread


def _with_status(outcome: _O, status: int, exchange: KeptExchange | None) -> _O:
    if isinstance(outcome, (Synced, TransientFailure, PermanentFailure)) and (
        outcome.status_code is None or exchange is not None
    ):
        return dataclasses.replace(
            outcome,
            status_code=outcome.status_code or status,
            exchange=exchange or outcome.exchange,
        )
    return outcome


def _status_of(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None
