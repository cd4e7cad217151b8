"""The status page (``GET {prefix}/status``): what it shows, gathered from the store, and its actions.

It asks the store only through :class:`OverviewSource` (the queue's counts, paused CRMs, failure reasons,
contact lookup) and, when the store keeps run history, :class:`~crmsync_core.history.HistoryReader`; it
holds no SQL. :mod:`crmsync_core.status_html` renders what it gathers. :func:`add_status_page` mounts the
page and its POST actions on the router that :func:`crmsync_core.web.sync_router` builds.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Protocol, cast
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse

from .contacts import ContactId
from .errors import DatabaseUnavailableError, InvalidRequestError
from .history import HistoryReader, HourlyOutcome, RunRecord
from .queue import (
    CircuitState,
    ContactBrief,
    ContactState,
    FailureReason,
    QueueResult,
    StatusSummary,
)
from .status_view import CHART_HOURS, ContactView, CrmOverview, StatusPage

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

__all__ = [
    "ContactView",
    "CrmOverview",
    "OverviewSource",
    "StatusPage",
    "add_status_page",
    "gather_status",
    "history_of",
    "look_up",
]

#: the longest form body an action accepts (a reason of a few hundred characters, an id)
_MAX_FORM = 16_384


class OverviewSource(Protocol):
    """What the status page reads from the queue (:class:`crmsync_core.store.Store` implements it)."""

    async def summary(self, crm: str, *, now: datetime | None = None) -> StatusSummary: ...

    async def circuit(self, crm: str) -> CircuitState | None: ...

    async def failure_reasons(
        self, crm: str, *, limit: int = 5, examples: int = 3
    ) -> list[FailureReason]: ...

    async def find_contacts(self, query: str, *, limit: int = 20) -> list[ContactBrief]: ...

    async def states(
        self, crm: str, ids: Iterable[ContactId | str]
    ) -> dict[ContactId, ContactState]: ...


def history_of(store: object) -> HistoryReader | None:
    """The store's run history, when it keeps one (a store without it still gets a page)."""
    methods = ("recent_runs", "contact_attempts", "run_attempts", "hourly_outcomes")
    if all(callable(getattr(store, name, None)) for name in methods):
        return cast(HistoryReader, store)
    return None


async def gather_status(
    store: OverviewSource, crms: Sequence[str], *, now: datetime | None = None, runs: int = 10
) -> list[CrmOverview]:
    """Each CRM's counts, pause, common failure reasons, recent runs and last 24 hours."""
    now = now or datetime.now(UTC)
    history = history_of(store)
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=CHART_HOURS - 1)
    overviews = []
    for crm in crms:
        summary = await store.summary(crm, now=now)
        paused = await store.circuit(crm)
        reasons = await store.failure_reasons(crm)
        recent: list[RunRecord] = []
        hourly: list[HourlyOutcome] = []
        if history is not None:
            recent = await history.recent_runs(crm, runs)
            hourly = await history.hourly_outcomes(crm, start)
        overviews.append(
            CrmOverview(crm, summary, paused, reasons, recent, _hours(hourly, start, CHART_HOURS))
        )
    return overviews


async def look_up(store: OverviewSource, crms: Sequence[str], query: str) -> list[ContactView]:
    """The contacts whose id or e-mail address is ``query``, with their state for each CRM."""
    contacts = await store.find_contacts(query)
    ids = [c.id for c in contacts]
    per_crm = {crm: await store.states(crm, ids) for crm in crms}
    history = history_of(store)
    views = []
    for contact in contacts:
        attempts = await history.contact_attempts(contact.id) if history is not None else []
        states = {crm: per_crm[crm][contact.id] for crm in crms if contact.id in per_crm[crm]}
        views.append(ContactView(contact, states, attempts))
    return views


def _hours(found: Iterable[HourlyOutcome], start: datetime, count: int) -> list[HourlyOutcome]:
    """Every hour of the span, zeros where nothing happened."""
    by_hour: dict[datetime, tuple[int, int]] = {}
    for entry in found:
        hour = entry.hour if entry.hour.tzinfo else entry.hour.replace(tzinfo=UTC)
        hour = hour.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        synced, failed = by_hour.get(hour, (0, 0))
        by_hour[hour] = (synced + entry.synced, failed + entry.failed)
    hours = [start + timedelta(hours=n) for n in range(count)]
    return [HourlyOutcome(h, *by_hour.get(h, (0, 0))) for h in hours]


def _searchable(text: str | None) -> str | None:
    """The lookup's text as the database can compare it: PostgreSQL text holds neither NUL nor lone
    surrogates, and no id or e-mail address is longer than 320 characters."""
    if text is None:
        return None
    cleaned = text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
    return cleaned[:320]


@contextmanager
def _unavailable_as_503() -> Iterator[None]:
    try:
        yield
    except DatabaseUnavailableError as exc:
        raise HTTPException(503, "the database is unavailable; try again shortly") from exc


# -- the routes --------------------------------------------------------------------------------------

#: the notices an action redirects with: the page shows only these, so a link cannot make it say
#: anything else
_NOTICES = {
    "retried": "{crm}: {n} Error contacts queued again",
    "unselected": "{crm}: {n} contacts taken out of the queue",
    "paused": "{crm}: paused until resumed",
    "resumed": "{crm}: resumed",
    "not-paused": "{crm}: was not paused",
}


def add_status_page(
    router: APIRouter,
    *,
    store: Callable[[], Awaitable[Any]],
    crms: Sequence[str],
    handle_dependency: Callable[..., Any],
    unit_of_work: Callable[[Any, Any], "AbstractAsyncContextManager[Any]"],
    action_dependencies: Sequence[Any] = (),
) -> None:
    """Mount ``GET /status`` and its POST actions on ``router`` (under its prefix and dependencies).

    ``store`` returns the connected store; ``unit_of_work(store, handle)`` is the request's transaction
    (on the host's session when it gave one); ``action_dependencies`` guard the actions only (e.g. an
    admin check), in addition to the router's own.
    """
    from . import status_html

    names = list(crms)
    Handle = Annotated[Any, Depends(handle_dependency)]

    def redirect(request: Request, notice: str, crm: str, n: int = 0) -> RedirectResponse:
        url = str(request.url_for("crmsync_status_page").path)
        query = urlencode({"done": notice, "crm": crm, "n": n})
        return RedirectResponse(f"{url}?{query}", status_code=303)

    async def form(request: Request, crm: str) -> dict[str, str]:
        if crm not in names:
            raise HTTPException(404, "unknown CRM")
        # Refuse a form posted from another site (the host's auth may be a cookie the browser sends
        # along). Browsers say where a request comes from in Sec-Fetch-Site, which proxies leave
        # alone; older ones only name the page's origin, compared with the host the request reached.
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        if site is not None:
            foreign = site == "cross-site"
        else:
            hosts = {request.headers.get("host"), request.headers.get("x-forwarded-host")}
            foreign = bool(origin) and urlsplit(origin or "").netloc not in hosts
        if foreign:
            raise HTTPException(403, "the form was posted from another site")
        body = await request.body()
        if len(body) > _MAX_FORM:
            raise HTTPException(413, "the form is too large")
        # PostgreSQL text holds no NUL: a reason that holds one matches nothing anyway.
        parsed = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {key: values[0].replace("\x00", "") for key, values in parsed.items()}

    @router.get(
        "/status",
        response_class=HTMLResponse,
        name="crmsync_status_page",
        # A page for people, not an API: the OpenAPI schema lists the JSON endpoints only.
        include_in_schema=False,
    )
    async def status_page(
        request: Request,
        contact: str | None = None,
        done: str | None = None,
        crm: str | None = None,
        n: int = 0,
    ) -> HTMLResponse:
        now = datetime.now(UTC)
        notice = None
        if done in _NOTICES and crm in names:
            notice = _NOTICES[done].format(crm=crm, n=n)
        query = _searchable(contact)
        with _unavailable_as_503():
            opened = await store()
            page = StatusPage(
                now=now,
                crms=await gather_status(opened, names, now=now),
                history=history_of(opened) is not None,
                query=query,
                found=await look_up(opened, names, query) if query else [],
                notice=notice,
                base=str(request.url_for("crmsync_status_page").path),
            )
        return HTMLResponse(status_html.render(page))

    actions = list(action_dependencies)

    @router.post("/status/{crm}/retry", dependencies=actions, include_in_schema=False)
    async def retry(request: Request, crm: str, handle: Handle) -> RedirectResponse:
        fields = await form(request, crm)
        reason = fields.get("reason")
        if reason is None and not fields.get("no_reason"):
            raise HTTPException(422, "say which reason's Error contacts to retry")
        opened = await store()
        async with unit_of_work(opened, handle) as conn:
            result: QueueResult = await opened.retry_failed(
                crm, None if fields.get("no_reason") else reason, connection=conn
            )
        return redirect(request, "retried", crm, result.queued)

    @router.post("/status/{crm}/unselect", dependencies=actions, include_in_schema=False)
    async def unselect(request: Request, crm: str, handle: Handle) -> RedirectResponse:
        fields = await form(request, crm)
        opened = await store()
        try:
            async with unit_of_work(opened, handle) as conn:
                changed = await opened.unselect(
                    crm, [fields.get("contact_id", "")], connection=conn
                )
        except InvalidRequestError as exc:
            raise HTTPException(422, exc.message) from exc
        return redirect(request, "unselected", crm, changed)

    @router.post("/status/{crm}/pause", dependencies=actions, include_in_schema=False)
    async def pause(request: Request, crm: str) -> RedirectResponse:
        fields = await form(request, crm)
        with _unavailable_as_503():
            opened = await store()
            await opened.pause(crm, reason=fields.get("reason", "")[:300])
        return redirect(request, "paused", crm)

    @router.post("/status/{crm}/resume", dependencies=actions, include_in_schema=False)
    async def resume(request: Request, crm: str) -> RedirectResponse:
        await form(request, crm)
        with _unavailable_as_503():
            opened = await store()
            was = await opened.resume(crm)
        return redirect(request, "resumed" if was else "not-paused", crm)
