"""Reading the run history: recent runs, one run's or one contact's attempts, hourly outcomes.

Reading never creates the tables: read-only commands work with a read-only role and on a database that
never ran a sync (they answer with nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ..errors import StoreError
from ..history import AttemptOutcome, AttemptRecord, HourlyOutcome, RunRecord
from .base import _aware, _coerce_id
from .history import _MAX_LIMIT, HistoryMixin, _missing_table


class HistoryReadsMixin(HistoryMixin):
    async def recent_runs(self, crm: str | None = None, limit: int = 20) -> list[RunRecord]:
        """The latest runs, newest first; of ``crm``, or of every CRM."""
        runs, _ = self._history_read_tables()
        statement = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc())
        if crm is not None:
            statement = statement.where(runs.c.crm == crm)
        statement = statement.limit(max(1, min(limit, _MAX_LIMIT)))
        rows = await self._history_rows(statement)
        return [
            RunRecord(
                id=int(row.id),
                crm=row.crm,
                worker=row.worker,
                started_at=_required(row.started_at),
                finished_at=_aware(row.finished_at),
                claimed=row.claimed,
                synced=row.synced,
                skipped=row.skipped,
                retrying=row.retrying,
                failed=row.failed,
                released=row.released,
                contacts_per_second=float(row.contacts_per_second),
                rate_limited_seconds=float(row.rate_limited_seconds),
                stopped_reason=row.stopped_reason,
                paused_reason=row.paused_reason,
            )
            for row in rows
        ]

    async def contact_attempts(self, contact_id: object) -> list[AttemptRecord]:
        """One contact's attempts across CRMs, newest first (``contact_id`` as an id or its text; an id
        that cannot be one of the table's raises :class:`~crmsync_core.errors.InvalidRequestError`)."""
        _, attempts = self._history_read_tables()
        key = str(_coerce_id(contact_id, self._id_type, "contact id"))
        statement = (
            sa.select(attempts)
            .where(attempts.c.contact_id == key)
            .order_by(attempts.c.at.desc())
            .limit(_MAX_LIMIT)
        )
        return [_attempt(row) for row in await self._history_rows(statement)]

    async def run_attempts(self, run_id: int) -> list[AttemptRecord]:
        """The attempts of one run, newest first."""
        _, attempts = self._history_read_tables()
        statement = (
            sa.select(attempts)
            .where(attempts.c.run_id == run_id)
            .order_by(attempts.c.at.desc())
            .limit(_MAX_LIMIT)
        )
        return [_attempt(row) for row in await self._history_rows(statement)]

    async def hourly_outcomes(self, crm: str | None, since: datetime) -> list[HourlyOutcome]:
        """Synced and failed-for-good attempts per hour since ``since``, oldest first; hours without
        attempts are left out."""
        _, attempts = self._history_read_tables()
        if self.dialect == "postgresql":
            hour: Any = sa.func.date_trunc("hour", sa.func.timezone("UTC", attempts.c.at))
        else:
            hour = sa.func.strftime("%Y-%m-%d %H:00:00", attempts.c.at)
        synced = sa.func.sum(
            sa.case((attempts.c.outcome == AttemptOutcome.SYNCED.value, 1), else_=0)
        )
        failed = sa.func.sum(
            sa.case((attempts.c.outcome == AttemptOutcome.FAILED.value, 1), else_=0)
        )
        statement = (
            sa.select(hour.label("hour"), synced, failed)
            .where(attempts.c.at >= self._moment(since))
            .group_by(hour)
            .order_by(hour)
        )
        if crm is not None:
            statement = statement.where(attempts.c.crm == crm)
        rows = await self._history_rows(statement)
        return [
            HourlyOutcome(_required(row[0]), int(row[1] or 0), int(row[2] or 0)) for row in rows
        ]

    async def _history_rows(self, statement: Any) -> Sequence[Any]:
        try:
            async with self._transaction(None) as conn:
                return (await conn.execute(statement)).all()
        except (sa_exc.ProgrammingError, StoreError) as exc:
            if _missing_table(exc):
                return []  # no table yet: no run was ever recorded here
            raise


def _required(moment: Any) -> datetime:
    aware = _aware(moment)
    assert aware is not None
    return aware


def _attempt(row: sa.Row[Any]) -> AttemptRecord:
    return AttemptRecord(
        run_id=None if row.run_id is None else int(row.run_id),
        contact_id=row.contact_id,
        crm=row.crm,
        at=_required(row.at),
        outcome=AttemptOutcome(row.outcome),
        status_code=row.status_code,
        reason=row.reason,
        request=row.request,
        response=row.response,
    )
