"""The host-app endpoints (design.md section 7), as a FastAPI router. Needs ``crmsync-core[fastapi]``.

::

    from fastapi import Depends
    from crmsync_core import Layout
    from crmsync_core.web import sync_router

    app.include_router(
        sync_router(
            engine,                               # the host's AsyncEngine (or a connected Store)
            layout=Layout.scrapersky(),
            session=get_db_session,               # optional: a dependency yielding an AsyncSession
            dependencies=[Depends(get_current_user)],
        )
    )

Per CRM that has an installed adapter and columns in the table:

* ``POST {prefix}/{crm}/sync/batch``: queue contacts by id (``{"contact_ids": [...]}``);
* ``POST {prefix}/{crm}/sync/filtered``: queue every contact matching a filter (:class:`SyncFilter`);
* ``GET {prefix}/{crm}/status/summary``: counts per sync status, and what is due and retrying;
* ``GET {prefix}/{crm}/check``: whether the CRM account and the table are ready (``crmsync check``:
  credentials, mapped fields, list, rate-limit headroom, columns), changing nothing;

and ``PUT {prefix}/crm/select``: select or unselect contacts for several CRMs at once; ``GET
{prefix}/status``: the status page (HTML, see :mod:`crmsync_core.status_page`).

``POST {prefix}/{crm}/sync/confirm`` is the destination's callback for confirmed delivery
(``{CRM}_SYNC_CONFIRM``, :mod:`crmsync_core.confirm`): it is not guarded by ``dependencies`` (n8n is not
a user of the host) but by the bearer secret ``{CRM}_SYNC_CALLBACK_SECRET``.

Queue operations run on the host's session when ``session`` is given (and commit it, as the host's own
handlers do), else in a transaction of their own. Bad input answers 422 in FastAPI's usual shape
(``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``); an empty id list is not an error.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
import asyncio
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Path
from fastapi.exceptions import HTTPException, RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator

from . import confirm
from .errors import ConfigurationError, DatabaseUnavailableError, InvalidRequestError
from .filters import ContactFilter
from .layout import Layout
from .plugins import Registry, default_registry
from .queue import QueueResult
from .settings import SyncSettings
from .status import SyncStatus
from .store import Store

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

#: the most contact ids one request may carry; ``sync/filtered`` queues any number
MAX_CONTACT_IDS = 10_000

logger = logging.getLogger("crmsync.web")

__all__ = [
    "MAX_CONTACT_IDS",
    "CheckLine",
    "CheckResponse",
    "ConfirmRequest",
    "ConfirmResponse",
    "QueueResponse",
    "SelectRequest",
    "SelectResponse",
    "SummaryResponse",
    "SyncBatchRequest",
    "SyncFilter",
    "sync_router",
]


def _storable(value: str | None) -> str | None:
    """PostgreSQL text holds neither NUL nor lone surrogates: refuse them as bad input, not a 500."""
    if value is None:
        return None
    if "\x00" in value:
        raise ValueError("must not contain the NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text (it holds a lone surrogate)") from None
    return value


_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"description": "the database is unavailable"}
}
_NOT_JSON: dict[int | str, dict[str, Any]] = {
    400: {"description": "the body is not JSON"},
    **_UNAVAILABLE,
}

#: what PostgreSQL text can hold, for API clients and fuzzers
_TEXT: dict[str, Any] = {"pattern": "^[^\\x00]*$"}


class SyncBatchRequest(BaseModel):
    """Contacts to queue, by id. Ids that match no contact are counted, not refused."""

    model_config = ConfigDict(extra="forbid")

    contact_ids: list[UUID] = Field(max_length=MAX_CONTACT_IDS)


class SyncFilter(ContactFilter):
    """Queue every contact that matches all the given conditions; ``{}`` matches every contact.

    ``processing_status`` and ``sync_status`` are this CRM's; ``processing_status: "none"`` matches
    contacts it has never processed. ``email_contains`` and ``name_contains`` match case-insensitively.
    """

    domain_id: UUID | None = None
    page_id: UUID | None = None
    email_contains: str | None = Field(None, min_length=1, max_length=320, json_schema_extra=_TEXT)
    name_contains: str | None = Field(None, min_length=1, max_length=320, json_schema_extra=_TEXT)

    @field_validator("email_contains", "name_contains")
    @classmethod
    def _text_is_storable(cls, value: str | None) -> str | None:
        return _storable(value)


class QueueResponse(BaseModel):
    """What a queue request did."""

    #: now waiting for the CRM
    queued_count: int
    #: already selected, queued or being processed: left as they were
    already_queued_count: int
    #: not queued because they cannot be synced (no e-mail address): now ``Skipped`` with the reason
    skipped_count: int
    #: ids that match no contact (``sync/batch`` only)
    not_found_count: int = 0
    message: str


class SummaryResponse(BaseModel):
    """How one CRM's contacts stand: one count per sync status (they add up to ``total_contacts``)."""

    crm: str
    new: int
    #: selected by a user and waiting for the CRM
    selected: int
    #: queued by the system, or queued again after a transient failure
    queued: int
    processing: int
    complete: int
    error: int
    skipped: int
    total_contacts: int
    #: waiting contacts whose turn has come (the next run takes them)
    due: int
    #: waiting contacts queued again after a transient failure
    retrying: int
    #: seconds the longest-waiting due contact has waited (``null`` when nothing is due)
    oldest_due_seconds: float | None
    #: Complete contacts changed since their last delivery, not yet compared by ``sync --changed``
    #: (``null`` when the table has no ``updated_at``)
    out_of_date: int | None = None
    #: when the circuit breaker paused the CRM after repeated connection errors, timeouts or 5xx
    #: (``null``: not paused); its contacts stay queued, with no attempt used, until a probe succeeds
    paused_since: datetime | None = None
    #: when the paused CRM is probed next
    probe_at: datetime | None = None
    #: set when a user paused the CRM (the status page): their reason; only a resume lifts it
    paused_by_user: str | None = None


class SelectRequest(BaseModel):
    """Select contacts for CRMs (queue them) or unselect them (take them out of the queue)."""

    model_config = ConfigDict(extra="forbid")

    contact_ids: list[UUID] = Field(max_length=MAX_CONTACT_IDS)
    crms: list[str] = Field(max_length=64)
    action: Literal["select", "unselect"] = "select"


class CrmSelection(BaseModel):
    #: contacts whose state changed for this CRM
    updated_count: int
    #: contacts left as they were (already queued, being processed, or not found)
    unchanged_count: int
    #: contacts that cannot be synced (no e-mail address), now ``Skipped`` (``select`` only)
    skipped_count: int


class SelectResponse(BaseModel):
    action: Literal["select", "unselect"]
    crms: list[str]
    #: changes summed over the CRMs
    updated_count: int
    results: dict[str, CrmSelection]
    message: str


class CheckLine(BaseModel):
    """One check: what was checked, ``ok`` / ``problem`` / ``info``, what was found, what to do."""

    name: str
    status: Literal["ok", "problem", "info"]
    detail: str
    fix: str
    field: str | None


class CheckResponse(BaseModel):
    """The preflight checks of one CRM; ``ready`` is false when any of them is a problem."""

    crm: str
    ready: bool
    checks: list[CheckLine]


class ConfirmRequest(BaseModel):
    """The destination's callback for one delivery (confirmed delivery)."""

    #: the contact, as it was sent (``contact_id`` of n8n's payload)
    contact_id: str = Field(min_length=1, max_length=64)
    #: the ``Idempotency-Key`` header the contact was sent with
    idempotency_key: str | None = Field(None, min_length=1, max_length=200)
    #: ``ok``: the destination finished with the contact; ``error``: it failed
    status: Literal["ok", "error"]
    #: why it failed (kept as the contact's error)
    error: str | None = Field(None, max_length=2000, json_schema_extra=_TEXT)
    #: on a failure: whether a later attempt may succeed (else ``Error`` at once)
    retry: bool = True
    #: anything to hand to the ``contact_confirmed`` hook (enrichment results)
    data: JsonValue = None

    @field_validator("error")
    @classmethod
    def _text_is_storable(cls, value: str | None) -> str | None:
        return _storable(value)


class ConfirmResponse(BaseModel):
    """What the callback did: ``confirmed``, ``retrying``, ``failed``, ``early`` (kept until the
    acceptance is recorded) or ``ignored`` (a duplicate, a stale key, a contact not awaiting)."""

    result: Literal["confirmed", "retrying", "failed", "early", "ignored"]
    message: str


def sync_router(
    database: "AsyncEngine | Store",
    *,
    layout: Layout | None = None,
    session: Callable[..., Any] | None = None,
    dependencies: Sequence[Any] = (),
    prefix: str = "/api/v3/contacts",
    crms: Iterable[str] | None = None,
    registry: Registry | None = None,
    tags: Sequence[str] = ("crm sync",),
    settings: Mapping[str, SyncSettings] | None = None,
    status_page: bool = True,
    action_dependencies: Sequence[Any] = (),
) -> APIRouter:
    """A router with the crmsync endpoints.

    ``database`` is the host's :class:`AsyncEngine` (the store is opened on it at the first request) or
    a connected :class:`Store`. ``layout`` says where the CRM columns are (default: the store's, or
    :meth:`Layout.default`). ``session`` is a FastAPI dependency that yields an ``AsyncSession`` or
    ``AsyncConnection``: queue operations then run in it and commit it. ``dependencies`` (e.g. the host's
    auth, ``[Depends(get_current_user)]``) guard every endpoint. ``crms`` defaults to every CRM with an
    installed adapter (from ``registry``) and columns in the layout. ``settings`` gives CRMs' settings
    in code (default: read from the environment), for the confirmation callback.

    ``status_page`` mounts ``GET {prefix}/status``, an HTML page of every CRM at a glance with a contact
    lookup, and its form actions (retry the ``Error`` contacts of a reason, unselect a contact, pause
    and resume a CRM), each also guarded by ``action_dependencies`` (e.g. an admin check); see
    docs/status-page.md.
    """
    if isinstance(database, Store):
        layout = database.layout
    layout = layout or Layout.default()
    names = _crm_names(layout, crms, registry)
    choices: list[JsonValue] = list(names)
    opener = _StoreOpener(database, layout)
    handle_dependency = session or _no_session

    router = APIRouter(prefix=prefix, dependencies=list(dependencies), tags=list(tags))
    # The callback is authenticated by its own secret, not by the host's user dependencies.
    callbacks = APIRouter(prefix=prefix, tags=list(tags))
    known_settings: dict[str, SyncSettings] = dict(settings or {})

    def settings_for(crm: str) -> SyncSettings:
        if crm not in known_settings:
            known_settings[crm] = (registry or default_registry()).get(crm).settings_model()
        return known_settings[crm]

    def crm_name(
        crm: Annotated[
            str, Path(description="the CRM to sync with", json_schema_extra={"enum": names})
        ],
    ) -> str:
        if crm not in names:
            raise _invalid(("path", "crm"), f"unknown CRM {crm[:40]!r}; {_known(names)}", crm)
        return crm

    class Selection(SelectRequest):
        """Select contacts for CRMs (queue them) or unselect them (take them out of the queue)."""

        crms: list[str] = Field(
            max_length=64, json_schema_extra={"items": {"type": "string", "enum": choices}}
        )

    Crm = Annotated[str, Depends(crm_name)]
    Handle = Annotated[Any, Depends(handle_dependency)]

    @router.post(
        "/{crm}/sync/batch",
        response_model=QueueResponse,
        operation_id="crmsync_sync_batch",
        responses=_NOT_JSON,
        summary="Queue contacts by id",
    )
    async def sync_batch(
        body: SyncBatchRequest,
        crm: Crm,
        handle: Handle,
    ) -> QueueResponse:
        store = await opener.store()
        async with _transaction(store, handle) as conn, _as_422(("body",)):
            result = await store.queue(crm, body.contact_ids, connection=conn)
        return _queue_response(crm, result)

    @router.post(
        "/{crm}/sync/filtered",
        response_model=QueueResponse,
        operation_id="crmsync_sync_filtered",
        responses=_NOT_JSON,
        summary="Queue every contact that matches a filter",
    )
    async def sync_filtered(
        body: SyncFilter,
        crm: Crm,
        handle: Handle,
    ) -> QueueResponse:
        store = await opener.store()
        async with _transaction(store, handle) as conn, _as_422(("body",)):
            result = await store.queue_where(crm, body, connection=conn)
        return _queue_response(crm, result)

    @router.get(
        "/{crm}/status/summary",
        response_model=SummaryResponse,
        operation_id="crmsync_status_summary",
        responses=_UNAVAILABLE,
        summary="Counts per sync status, and what is due and retrying",
    )
    async def status_summary(crm: Crm) -> SummaryResponse:
        store = await opener.store()
        with _unavailable_as_503():
            summary = await store.summary(crm)
        counts = {status: summary.counts.get(status, 0) for status in SyncStatus}
        return SummaryResponse(
            crm=crm,
            new=counts[SyncStatus.NEW],
            selected=counts[SyncStatus.SELECTED],
            queued=counts[SyncStatus.QUEUED],
            processing=counts[SyncStatus.PROCESSING],
            complete=counts[SyncStatus.COMPLETE],
            error=counts[SyncStatus.ERROR],
            skipped=counts[SyncStatus.SKIPPED],
            total_contacts=summary.total,
            due=summary.due,
            retrying=summary.retrying,
            oldest_due_seconds=summary.oldest_due_seconds,
            out_of_date=summary.out_of_date,
            paused_since=summary.paused_since,
            probe_at=summary.probe_at,
            paused_by_user=summary.paused_by_user,
        )

    @router.get(
        "/{crm}/check",
        response_model=CheckResponse,
        operation_id="crmsync_check",
        summary="Whether the CRM account and the table are ready to sync (changes nothing)",
    )
    async def check(crm: Crm) -> CheckResponse:
        from .check import run_checks

        results = (
            await run_checks(
                [crm],
                registry=registry,
                database=database,
                layout=layout,
            )
        )[crm]
        return CheckResponse(
            crm=crm,
            ready=all(r.ok for r in results),
            checks=[CheckLine(**r.as_dict()) for r in results],
        )

    @router.put(
        "/crm/select",
        response_model=SelectResponse,
        operation_id="crmsync_select",
        responses=_NOT_JSON,
        summary="Select or unselect contacts for several CRMs",
    )
    async def select(body: Selection, handle: Handle) -> SelectResponse:
        chosen = list(dict.fromkeys(body.crms))
        for index, crm in enumerate(body.crms):
            if crm not in names:
                raise _invalid(
                    ("body", "crms", index), f"unknown CRM {crm[:40]!r}; {_known(names)}", crm
                )
        wanted = len(set(body.contact_ids))
        results: dict[str, CrmSelection] = {}
        store = await opener.store()
        async with _transaction(store, handle) as conn, _as_422(("body",)):
            for crm in chosen:
                if body.action == "select":
                    queued = await store.queue(crm, body.contact_ids, connection=conn)
                    changed, skipped = queued.queued, queued.skipped
                else:
                    changed = await store.unselect(crm, body.contact_ids, connection=conn)
                    skipped = 0
                results[crm] = CrmSelection(
                    updated_count=changed,
                    unchanged_count=wanted - changed - skipped,
                    skipped_count=skipped,
                )
        updated = sum(r.updated_count for r in results.values())
        done = "selected" if body.action == "select" else "unselected"
        if not chosen or not wanted:
            message = "nothing to do: no contact ids" if not wanted else "nothing to do: no CRMs"
        else:
            parts = ", ".join(f"{r.updated_count} for {crm}" for crm, r in results.items())
            message = f"{done} {parts}"
        return SelectResponse(
            action=body.action, crms=chosen, updated_count=updated, results=results, message=message
        )

    @callbacks.post(
        "/{crm}/sync/confirm",
        response_model=ConfirmResponse,
        operation_id="crmsync_sync_confirm",
        responses={
            401: {"description": "no or a wrong bearer secret ({CRM}_SYNC_CALLBACK_SECRET)"},
            404: {"description": "confirmed delivery is off for this CRM"},
            500: {"description": "the contact_confirmed hook failed; nothing changed, call again"},
            **_NOT_JSON,
        },
        summary="The destination confirms (or reports the failure of) one delivery",
    )
    async def sync_confirm(
        body: ConfirmRequest,
        crm: Crm,
        authorization: Annotated[str | None, Header()] = None,
    ) -> ConfirmResponse:
        crm_settings = settings_for(crm)
        secret = crm_settings.sync_callback_secret
        expected = f"Bearer {secret.get_secret_value()}" if secret else None
        if expected is None or not hmac.compare_digest(
            (authorization or "").encode("utf-8"), expected.encode("utf-8")
        ):
            raise HTTPException(
                401, "a bearer secret is required", headers={"WWW-Authenticate": "Bearer"}
            )
        if not crm_settings.sync_confirm:
            prefix_name = crm_settings.model_config.get("env_prefix", f"{crm.upper()}_")
            raise HTTPException(
                404, f"confirmed delivery is off for {crm} ({prefix_name}SYNC_CONFIRM)"
            )
        store = await opener.store()
        callback = confirm.Callback(
            contact_id=body.contact_id,
            idempotency_key=body.idempotency_key,
            ok=body.status == "ok",
            error=body.error,
            data=body.data,
            retry=body.retry,
        )
        try:
            with _unavailable_as_503():
                result = await confirm.handle_callback(
                    store, registry or default_registry(), crm, crm_settings, callback
                )
        except HTTPException:
            raise
        except Exception as exc:
            logger.exception("%s: a confirmation callback failed", crm)
            raise HTTPException(
                500, "the confirmation could not be applied; nothing changed, call again"
            ) from exc
        return ConfirmResponse(result=result, message=_CONFIRM_MESSAGES[result].format(crm=crm))

    if status_page:
        from .status_page import add_status_page

        add_status_page(
            router,
            store=opener.store,
            crms=names,
            handle_dependency=handle_dependency,
            unit_of_work=_transaction,
            action_dependencies=action_dependencies,
        )

    outer = APIRouter()
    outer.include_router(router)
    outer.include_router(callbacks)
    return outer


_CONFIRM_MESSAGES = {
    "confirmed": "the contact is complete in {crm}",
    "retrying": "the failure was recorded; the contact is queued again for {crm}",
    "failed": "the failure was recorded; the contact is in error for {crm}",
    "early": "kept: it applies when the acceptance of the contact is recorded",
    "ignored": "nothing changed: no contact awaits this confirmation",
}


def _crm_names(layout: Layout, crms: Iterable[str] | None, registry: Registry | None) -> list[str]:
    if crms is not None:
        names = list(dict.fromkeys(crms))
        for crm in names:
            layout.columns_for(crm)
    else:
        installed = (registry or default_registry()).adapters()
        names = [crm for crm in layout.crms if crm in installed]
    if not names:
        raise ConfigurationError(
            "no CRM to serve: install an adapter (e.g. pip install crmsync-brevo) whose CRM has "
            f"columns in table {layout.table!r}, or pass crms="
        )
    return names


class _StoreOpener:
    """Opens the store on the host's engine once, at the first request."""

    def __init__(self, database: "AsyncEngine | Store", layout: Layout) -> None:
        self._store = database if isinstance(database, Store) else None
        self._engine = None if isinstance(database, Store) else database
        self._layout = layout
        self._lock = asyncio.Lock()

    async def store(self) -> Store:
        if self._store is None:
            async with self._lock:
                if self._store is None:
                    assert self._engine is not None
                    with _unavailable_as_503():
                        self._store = await Store.connect(self._engine, self._layout)
        return self._store


async def _no_session() -> None:
    return None


@asynccontextmanager
async def _transaction(store: Store, handle: Any) -> AsyncIterator[Any]:
    """The request's unit of work (the host's session when it gave one); a lost database is a 503."""
    with _unavailable_as_503():
        async with store.unit_of_work(handle) as conn:
            yield conn


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    try:
        yield
    except DatabaseUnavailableError as exc:
        raise HTTPException(503, "the database is unavailable; try again shortly") from exc


@asynccontextmanager
async def _as_422(loc: tuple[str | int, ...]) -> AsyncIterator[None]:
    try:
        yield
    except InvalidRequestError as exc:
        raise _invalid(loc, exc.message, None) from exc


def _invalid(loc: tuple[str | int, ...], message: str, value: Any) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": loc, "msg": message, "type": "value_error", "input": value}]
    )


def _known(names: Sequence[str]) -> str:
    return f"this server syncs: {', '.join(names)}"


def _queue_response(crm: str, result: QueueResult) -> QueueResponse:
    parts = [f"queued {result.queued} contacts for {crm}"]
    if result.already_queued:
        parts.append(f"{result.already_queued} were already queued")
    if result.skipped:
        parts.append(f"{result.skipped} skipped (no e-mail address)")
    if result.not_found:
        parts.append(f"{result.not_found} ids match no contact")
    return QueueResponse(
        queued_count=result.queued,
        already_queued_count=result.already_queued,
        skipped_count=result.skipped,
        not_found_count=result.not_found,
        message="; ".join(parts),
    )
