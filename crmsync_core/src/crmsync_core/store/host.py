"""The host-facing queue API: add, queue (by ids or filter), unselect, and read states and summaries."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from ..contacts import ContactId
from ..errors import InvalidRequestError
from ..filters import ContactFilter
from ..queue import (
    ContactState,
    QueueResult,
    StatusSummary,
)
from ..status import SELECTABLE, Event, ProcessingStatus, SyncStatus
from .base import ID_CHUNK, _aware, _enum_value, _utcnow
from .circuits import CircuitsMixin
from .filters import FiltersMixin
from .fingerprints import FingerprintsMixin
from .notify import NotifyMixin


class HostQueueMixin(NotifyMixin, FiltersMixin, CircuitsMixin, FingerprintsMixin):
    """Queue operations take an optional ``connection``: given one, they run inside the caller's
    transaction (and do not commit), so a host can queue contacts atomically with its own writes."""

    # -- contacts ------------------------------------------------------------------------------------

    async def add_contacts(
        self, rows: Iterable[Mapping[str, Any]], *, connection: AsyncConnection | None = None
    ) -> int:
        """Insert contacts (dicts of :data:`~crmsync_core.layout.CONTACT_FIELDS` plus ``id``)."""
        allowed = {self.layout.id_column, *self.layout.fields.values()}
        now = (
            self._at(self.table.c[self.layout.updated_at], _utcnow())
            if self.layout.updated_at
            else None
        )
        # executemany takes its columns from the first row: rows are grouped by the columns they give,
        # so that no value of a later row is silently dropped.
        batches: dict[frozenset[str], list[dict[str, Any]]] = {}
        count = 0
        async with self._transaction(connection) as conn:
            for row in rows:
                unknown = set(row) - allowed
                if unknown:
                    raise InvalidRequestError(
                        f"unknown contact columns: {', '.join(sorted(unknown))}"
                    )
                values = dict(row)
                if now is not None and self.layout.managed:
                    values.setdefault("created_at", now)
                    values.setdefault("updated_at", now)
                batch = batches.setdefault(frozenset(values), [])
                batch.append(values)
                if len(batch) >= 5_000:
                    await conn.execute(sa.insert(self.table), batch)
                    count += len(batch)
                    batch.clear()
            for batch in batches.values():
                if batch:
                    await conn.execute(sa.insert(self.table), batch)
                    count += len(batch)
        return count

    # -- queue operations ----------------------------------------------------------------------------

    async def queue(
        self,
        crm: str,
        ids: Iterable[ContactId | str],
        *,
        by_system: bool = False,
        connection: AsyncConnection | None = None,
        now: datetime | None = None,
        force: bool = False,
    ) -> QueueResult:
        """Queue contacts by id for ``crm``. Contacts with no e-mail address are skipped with that reason;
        contacts already queued or in flight are counted and left alone; unknown ids are counted. All or
        nothing: it runs in one transaction (the caller's, when ``connection`` is given). Every id is
        accounted for, even while another transaction queues the same contacts: ``queued +
        already_queued + skipped + not_found`` is the number of distinct ids given.

        ``by_system`` puts contacts straight into ``Queued`` rather than the user's ``Selected``. A user's
        re-selection of a ``Complete`` contact whose payload has not changed since its delivery is
        completed by the engine without a request, unless ``force`` is true.
        """
        # In id order: two operations on overlapping ids then lock them in the same order.
        wanted = sorted(self._parse_ids(ids))
        total = QueueResult()
        async with self._transaction(connection) as conn:
            for start in range(0, len(wanted), ID_CHUNK):
                chunk = wanted[start : start + ID_CHUNK]
                where = self._id_column.in_(chunk)
                found = await self._lock_matching(conn, where)
                part = await self._queue_where(
                    conn, crm, where, by_system=by_system, now=now, force=force
                )
                total = total + self._accounted(part, found, len(chunk))
            await self._notify_queued(conn, crm, total.queued)
        return total

    async def queue_where(
        self,
        crm: str,
        contact_filter: ContactFilter,
        *,
        by_system: bool = False,
        connection: AsyncConnection | None = None,
        now: datetime | None = None,
        force: bool = False,
    ) -> QueueResult:
        """Queue every contact that matches ``contact_filter``, in set-based statements: the matching rows
        are never loaded into Python. ``by_system`` and ``force`` as in :meth:`queue`."""
        where = self._filter_clause(crm, contact_filter)
        async with self._transaction(connection) as conn:
            found = await self._lock_matching(conn, where)
            part = await self._queue_where(
                conn, crm, where, by_system=by_system, now=now, force=force
            )
            await self._notify_queued(conn, crm, part.queued)
        return self._accounted(part, found, found)

    async def unselect(
        self, crm: str, ids: Iterable[ContactId | str], *, connection: AsyncConnection | None = None
    ) -> int:
        """Take contacts out of ``crm``'s queue (not those being processed). Returns how many."""
        wanted = self._parse_ids(ids)
        c = self._crm(crm)
        condition, values = self._transition(c, Event.UNSELECT)
        changed = 0
        async with self._transaction(connection) as conn:
            for start in range(0, len(wanted), ID_CHUNK):
                chunk = wanted[start : start + ID_CHUNK]
                statement = (
                    sa.update(self.table)
                    .where(self._id_column.in_(chunk), condition)
                    .values(values | self._touch(_utcnow()))
                )
                changed += (await conn.execute(statement)).rowcount
        return changed

    async def _lock_matching(self, conn: AsyncConnection, where: sa.ColumnElement[bool]) -> int:
        """Lock the rows ``where`` selects (PostgreSQL; SQLite has one writer anyway) and count them.

        Counting and then updating without the lock let a concurrent queue operation change a row in
        between: it was neither "queued" (our UPDATE no longer matched it) nor "already queued" (it was
        not, when counted). Locked rows keep their state until this transaction ends; the id order
        makes two operations on overlapping ids lock in the same order instead of deadlocking.
        """
        locked = (
            sa.select(self._id_column)
            .where(where)
            .order_by(self._id_column)
            .with_for_update()
            .subquery()
        )
        return int(
            (await conn.execute(sa.select(sa.func.count()).select_from(locked))).scalar_one()
        )

    @staticmethod
    def _accounted(part: QueueResult, found: int, given: int) -> QueueResult:
        # Each found row is New, Complete, Error or Skipped (queued or skipped by this operation) or
        # Selected, Queued or Processing (already queued), so the rest of what was found is "already
        # queued": the four counts add up to what was given by construction.
        already = max(0, found - part.queued - part.skipped)
        return QueueResult(part.queued, already, part.skipped, max(0, given - found))

    async def _queue_where(
        self,
        conn: AsyncConnection,
        crm: str,
        where: sa.ColumnElement[bool],
        *,
        by_system: bool,
        now: datetime | None,
        force: bool = False,
    ) -> QueueResult:
        c = self._crm(crm)
        now = now or _utcnow()
        email = self.table.c[self.layout.fields["email"]]
        no_email = sa.or_(email.is_(None), sa.func.trim(email) == "")
        selectable = c.sync.in_([s.value for s in SELECTABLE])
        await self._mark_reselected(
            conn, c, sa.and_(where, selectable, sa.not_(no_email)), user=not (by_system or force)
        )

        skip_condition, skip_values = self._transition(c, Event.SKIP)
        skipped = await conn.execute(
            sa.update(self.table)
            .where(where, selectable, skip_condition, no_email)
            .values(skip_values | {c.names.error: "no e-mail address"} | self._touch(now))
        )
        event = Event.QUEUE if by_system else Event.SELECT
        queue_condition, queue_values = self._transition(c, event, now=now)
        queued = await conn.execute(
            sa.update(self.table)
            .where(where, queue_condition, sa.not_(no_email))
            .values(queue_values | self._touch(now))
        )
        return QueueResult(queued=queued.rowcount, skipped=skipped.rowcount)

    # -- reading -------------------------------------------------------------------------------------

    async def summary(self, crm: str, *, now: datetime | None = None) -> StatusSummary:
        """Counts per sync status, and how many are due, retrying, and waiting longest."""
        c = self._crm(crm)
        now = now or _utcnow()
        async with self._transaction(None) as conn:
            rows = (
                await conn.execute(
                    sa.select(c.sync, sa.func.count()).select_from(self.table).group_by(c.sync)
                )
            ).all()
            due_clause = self._due(c, now)
            retrying = sa.case(
                (sa.and_(c.processing == ProcessingStatus.QUEUED.value, self._attempts(c) > 0), 1),
                else_=0,
            )
            due_row = (
                await conn.execute(
                    sa.select(
                        sa.func.count(),
                        sa.func.min(self._due_since(c)),
                    )
                    .select_from(self.table)
                    .where(due_clause)
                )
            ).one()
            retry_count = (
                await conn.execute(
                    sa.select(sa.func.coalesce(sa.func.sum(retrying), 0)).select_from(self.table)
                )
            ).scalar_one()
        counts = dict.fromkeys(SyncStatus, 0)
        for status, count in rows:
            counts[SyncStatus(_enum_value(status))] += int(count)
        oldest = _aware(due_row[1])
        out_of_date = await self._out_of_date(c)
        paused = await self.circuit(crm)
        return StatusSummary(
            crm=crm,
            counts=counts,
            total=sum(counts.values()),
            due=int(due_row[0]),
            retrying=int(retry_count),
            oldest_due_seconds=max(0.0, (now - oldest).total_seconds()) if oldest else None,
            paused_since=paused.opened_at if paused else None,
            probe_at=paused.probe_at if paused else None,
            out_of_date=out_of_date,
            paused_by_user=paused.paused_by_user if paused else None,
        )

    async def states(
        self, crm: str, ids: Iterable[ContactId | str]
    ) -> dict[ContactId, ContactState]:
        """Each contact's state for ``crm`` (contacts that do not exist are absent)."""
        c = self._crm(crm)
        wanted = self._parse_ids(ids)
        result: dict[ContactId, ContactState] = {}
        async with self._transaction(None) as conn:
            for start in range(0, len(wanted), ID_CHUNK):
                chunk = wanted[start : start + ID_CHUNK]
                statement = sa.select(
                    self._id_column,
                    c.sync,
                    c.processing,
                    c.error,
                    c.remote_id,
                    self._attempts(c),
                    self._own_next_attempt(c),
                ).where(self._id_column.in_(chunk))
                for row in await conn.execute(statement):
                    result[row[0]] = ContactState(
                        sync_status=SyncStatus(_enum_value(row[1])),
                        processing_status=ProcessingStatus(_enum_value(row[2])) if row[2] else None,
                        error=row[3],
                        remote_id=row[4],
                        attempts=int(row[5] or 0),
                        next_attempt_at=_aware(row[6]),
                    )
        return result
