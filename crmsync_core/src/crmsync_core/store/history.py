"""Run history: a row per run and per contact attempt, in tables of crmsync's own.

Writing is built to cost the engine next to nothing: a run row is written when the run starts and when
it ends, and a batch's attempts are one ``INSERT`` in the transaction that records the batch's outcomes
(:meth:`~crmsync_core.store.leases.LeasesMixin.record`). Reading never creates the tables, so that
read-only commands work with a read-only role and on a database that never ran a sync.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from ..contacts import ContactId
from ..errors import StoreError
from ..history import AttemptOutcome, AttemptRecord, HistorySettings, HourlyOutcome, RunRecord
from ..queue import Resolution
from ..status import Event
from .base import StoreBase, _aware, _coerce_id
from .schema import history_tables

if TYPE_CHECKING:
    from ..report import RunReport

#: the attempt outcome each recorded event stands for
_OUTCOMES: dict[Event, str] = {
    Event.SUCCEED: AttemptOutcome.SYNCED.value,
    Event.RETRY: AttemptOutcome.RETRYING.value,
    Event.FAIL: AttemptOutcome.FAILED.value,
    Event.SKIP_BY_ADAPTER: AttemptOutcome.SKIPPED.value,
}
#: rows per INSERT on SQLite (9 parameters each, under SQLite's 32,766)
_SQLITE_CHUNK = 3_000
_MAX_LIMIT = 10_000


class HistoryMixin(StoreBase):
    # -- settings and tables -------------------------------------------------------------------------

    @property
    def history_settings(self) -> HistorySettings:
        """Run history's settings (``CRMSYNC_HISTORY*``, read once); assign to set them in code."""
        if self._history_settings is None:
            self._history_settings = HistorySettings()
        return self._history_settings

    @history_settings.setter
    def history_settings(self, settings: HistorySettings) -> None:
        self._history_settings = settings

    def _history_read_tables(self) -> tuple[sa.Table, sa.Table]:
        if self._history_tables is not None:
            return self._history_tables
        return history_tables(schema=self.layout.schema)

    async def _history_write_tables(self) -> tuple[sa.Table, sa.Table]:
        if self._history_tables is None:
            runs, attempts = history_tables(schema=self.layout.schema)
            for table in (runs, attempts):
                try:
                    async with self._transaction(None) as conn:
                        await conn.run_sync(table.create, checkfirst=True)
                except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
                    # Another worker created it between our check and our CREATE.
                    pass
            self._history_tables = runs, attempts
        return self._history_tables

    async def create_history_tables(self) -> None:
        """Create ``crmsync_runs`` and ``crmsync_attempts`` now (a no-op when they exist); otherwise they
        are created when the first run is kept."""
        await self._history_write_tables()

    def _moment(self, moment: datetime) -> datetime:
        # SQLite keeps naive UTC text; PostgreSQL a timestamptz.
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        return moment if self.dialect == "postgresql" else moment.replace(tzinfo=None)

    # -- writing -------------------------------------------------------------------------------------

    async def start_run(self, crm: str, *, worker: str, now: datetime) -> int | None:
        """Write the row of a run that starts; its id, or ``None`` when history is off."""
        if not self.history_settings.history:
            return None
        runs, _ = await self._history_write_tables()
        statement = (
            sa.insert(runs)
            .values(crm=crm, worker=worker[:200], started_at=self._moment(now))
            .returning(runs.c.id)
        )
        async with self._transaction(None) as conn:
            return int((await conn.execute(statement)).scalar_one())

    async def finish_run(self, run_id: int, report: RunReport, *, now: datetime) -> None:
        """Write what the run did into its row."""
        runs, _ = await self._history_write_tables()
        paused = report.paused_since is not None
        statement = (
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(
                finished_at=self._moment(now),
                claimed=report.claimed,
                synced=report.synced,
                skipped=report.skipped,
                retrying=report.retrying,
                failed=report.failed,
                released=report.released,
                contacts_per_second=(
                    report.processed / report.duration_seconds if report.duration_seconds else 0.0
                ),
                rate_limited_seconds=report.rate_limited_seconds,
                stopped_reason=None if paused else report.stopped,
                paused_reason=(report.stopped or "paused by the circuit breaker")
                if paused
                else None,
            )
        )
        async with self._transaction(None) as conn:
            await conn.execute(statement)

    async def _record_attempts(
        self,
        conn: AsyncConnection,
        crm: str,
        run_id: int | None,
        resolutions: Sequence[Resolution],
        written: set[ContactId],
        now: datetime,
    ) -> None:
        """The batch's attempts, in the transaction that records its outcomes: one statement (PostgreSQL:
        one array per column, so the statement is compiled once for every batch)."""
        rows = [r for r in resolutions if r.contact_id in written and r.event in _OUTCOMES]
        if not rows:
            return
        _, attempts = self._history_tables or await self._history_write_tables()
        at = self._moment(now)
        if self.dialect == "postgresql":
            columns: list[sa.ColumnClause[Any]] = [
                sa.column("contact_id", sa.Text),
                sa.column("outcome", sa.Text),
                sa.column("status_code", sa.Integer),
                sa.column("reason", sa.Text),
                sa.column("request", sa.Text),
                sa.column("response", sa.Text),
            ]
            arrays = {
                "contact_id": [str(r.contact_id) for r in rows],
                "outcome": [_OUTCOMES[r.event] for r in rows],
                "status_code": [r.status_code for r in rows],
                "reason": [r.error for r in rows],
                "request": [r.request for r in rows],
                "response": [r.response for r in rows],
            }
            params = [
                sa.bindparam(f"attempt_{c.name}", arrays[c.name], type_=postgresql.ARRAY(c.type))
                for c in columns
            ]
            source = sa.func.unnest(*params).table_valued(*columns, name="attempt").render_derived()
            select = sa.select(
                sa.bindparam("attempt_run_id", run_id, type_=sa.BigInteger),
                source.c.contact_id,
                sa.bindparam("attempt_crm", crm, type_=sa.String),
                sa.bindparam("attempt_at", at, type_=sa.DateTime(timezone=True)),
                source.c.outcome,
                source.c.status_code,
                source.c.reason,
                source.c.request,
                source.c.response,
            )
            statement: Any = sa.insert(attempts).from_select(
                [
                    "run_id",
                    "contact_id",
                    "crm",
                    "at",
                    "outcome",
                    "status_code",
                    "reason",
                    "request",
                    "response",
                ],
                select,
            )
            await conn.execute(statement)
            return
        values = [
            {
                "run_id": run_id,
                "contact_id": str(r.contact_id),
                "crm": crm,
                "at": at,
                "outcome": _OUTCOMES[r.event],
                "status_code": r.status_code,
                "reason": r.error,
                "request": r.request,
                "response": r.response,
            }
            for r in rows
        ]
        for start in range(0, len(values), _SQLITE_CHUNK):
            await conn.execute(sa.insert(attempts), values[start : start + _SQLITE_CHUNK])

    async def prune_history(self, *, now: datetime) -> int:
        """Delete runs and attempts older than the retention (``CRMSYNC_HISTORY_RETENTION_DAYS``); the
        number of attempts deleted. A no-op when the tables do not exist."""
        runs, attempts = self._history_read_tables()
        cutoff = self._moment(now - self.history_settings.retention)
        try:
            async with self._transaction(None) as conn:
                deleted = (
                    await conn.execute(sa.delete(attempts).where(attempts.c.at < cutoff))
                ).rowcount
                await conn.execute(
                    sa.delete(runs).where(
                        sa.func.coalesce(runs.c.finished_at, runs.c.started_at) < cutoff
                    )
                )
        except (sa_exc.ProgrammingError, StoreError) as exc:
            if _missing_table(exc):
                return 0
            raise
        return int(deleted or 0)

    # -- reading -------------------------------------------------------------------------------------

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


def _missing_table(exc: Exception) -> bool:
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


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
