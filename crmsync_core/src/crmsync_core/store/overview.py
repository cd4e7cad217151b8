"""What the status page asks of the contacts table beyond the queue API: the most common failure
reasons with example contacts, a contact lookup by id or e-mail, and retrying the ``Error`` contacts of
one reason."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from ..errors import InvalidRequestError
from ..queue import ContactBrief, FailureReason, QueueResult
from ..status import SyncStatus
from .base import _coerce_id, _utcnow
from .host import HostQueueMixin


class OverviewMixin(HostQueueMixin):
    async def failure_reasons(
        self, crm: str, *, limit: int = 5, examples: int = 3
    ) -> list[FailureReason]:
        """The ``Error`` contacts of ``crm`` grouped by their error, most common first, with up to
        ``examples`` contacts of each (lowest ids first)."""
        c = self._crm(crm)
        failed = c.sync == SyncStatus.ERROR.value
        counted = sa.func.count().label("n")
        statement = (
            sa.select(c.error, counted)
            .select_from(self.table)
            .where(failed)
            .group_by(c.error)
            .order_by(counted.desc(), c.error)
            .limit(limit)
        )
        reasons: list[FailureReason] = []
        async with self._transaction(None) as conn:
            for reason, count in (await conn.execute(statement)).all():
                same = c.error.is_(None) if reason is None else c.error == reason
                rows = (
                    await conn.execute(
                        sa.select(*self._brief_columns())
                        .where(failed, same)
                        .order_by(self._id_column)
                        .limit(examples)
                    )
                ).all()
                reasons.append(
                    FailureReason(reason, int(count), tuple(self._brief(row) for row in rows))
                )
        return reasons

    async def find_contacts(self, query: str, *, limit: int = 20) -> list[ContactBrief]:
        """Contacts whose id is ``query``, or whose e-mail address is ``query`` (ignoring case)."""
        query = query.strip()
        if not query:
            return []
        email = self.table.c[self.layout.fields["email"]]
        conditions: list[sa.ColumnElement[bool]] = [sa.func.lower(email) == query.lower()]
        # Not an id: an e-mail address only.
        with contextlib.suppress(InvalidRequestError):
            conditions.append(self._id_column == _coerce_id(query, self._id_type, "contact id"))
        statement = (
            sa.select(*self._brief_columns())
            .where(sa.or_(*conditions))
            .order_by(self._id_column)
            .limit(limit)
        )
        async with self._transaction(None) as conn:
            rows = (await conn.execute(statement)).all()
        return [self._brief(row) for row in rows]

    async def retry_failed(
        self,
        crm: str,
        reason: str | None,
        *,
        connection: Any = None,
        now: datetime | None = None,
    ) -> QueueResult:
        """Queue again (as a user's selection) every ``Error`` contact of ``crm`` whose error is
        ``reason`` (``None``: those without one); their retry state starts afresh."""
        c = self._crm(crm)
        same = c.error.is_(None) if reason is None else c.error == reason
        where = sa.and_(c.sync == SyncStatus.ERROR.value, same)
        async with self._transaction(connection) as conn:
            found = await self._lock_matching(conn, where)
            part = await self._queue_where(conn, crm, where, by_system=False, now=now or _utcnow())
        return self._accounted(part, found, found)

    def _brief_columns(self) -> list[sa.ColumnElement[Any]]:
        fields = self.layout.fields
        return [self._id_column, self.table.c[fields["email"]], self.table.c[fields["name"]]]

    @staticmethod
    def _brief(row: Any) -> ContactBrief:
        return ContactBrief(row[0], row[1], row[2])
