"""Run history: a row per run and per contact attempt, in tables of crmsync's own.

Writing is built to cost the engine next to nothing: a run row is written when the run starts and when
it ends, and a batch's attempts are one ``INSERT`` in the transaction that records the batch's outcomes
(:meth:`~crmsync_core.store.leases.LeasesMixin.record`). Reading is in :mod:`.history_reads`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection

from ..contacts import ContactId
from ..errors import StoreError
from ..history import AttemptOutcome, HistorySettings
from ..queue import Resolution
from ..status import Event
from .base import StoreBase
from .tables import history_tables

if TYPE_CHECKING:
    from ..report import RunReport

logger = logging.getLogger("crmsync.history")

#: the attempt outcome each recorded event stands for
_OUTCOMES: dict[Event, str] = {
    Event.SUCCEED: AttemptOutcome.SYNCED.value,
    Event.RETRY: AttemptOutcome.RETRYING.value,
    Event.FAIL: AttemptOutcome.FAILED.value,
    Event.SKIP_BY_ADAPTER: AttemptOutcome.SKIPPED.value,
    Event.AWAIT: AttemptOutcome.AWAITING.value,
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
                    # Another worker created it between our check and our CREATE (or this role may
                    # not create tables: checked below).
                    pass
            async with self._transaction(None) as conn:
                present = await conn.run_sync(
                    lambda c: all(
                        sa.inspect(c).has_table(t.name, schema=t.schema) for t in (runs, attempts)
                    )
                )
            if not present:
                # History must never stop a sync: without its tables, it is off for this store.
                logger.warning(
                    "run history is off: this database role cannot create %s and %s (create them "
                    "with the SQL of `crmsync schema`, or set CRMSYNC_HISTORY=off)",
                    runs.name,
                    attempts.name,
                )
                self._history_settings = self.history_settings.model_copy(update={"history": False})
                raise StoreError("the run history's tables do not exist")
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
        try:
            async with self._transaction(None) as conn:
                return int((await conn.execute(statement)).scalar_one())
        except sa_exc.DBAPIError as exc:
            raise StoreError(f"could not keep the run: {_first_line(exc)}") from exc

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
        try:
            async with self._transaction(None) as conn:
                await conn.execute(statement)
        except sa_exc.DBAPIError as exc:
            raise StoreError(f"could not write the run: {_first_line(exc)}") from exc

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

    def _with_attempts(
        self, update: Any, outcome: Any, event: Event, crm: str, payloads: bool, prefix: str
    ) -> Any:
        """``update`` (an outcome statement joined to the ``outcome`` rows) as a data-modifying CTE whose
        written rows are inserted as attempts; the statement returns the written ids (PostgreSQL).

        The run id and the attempts' time are parameters (``<prefix>run_id``, ``<prefix>attempt_at``),
        so that the statement is built once and executed for every batch; the CRM and the outcome are
        the same for every execution of it."""
        id_column = self.table.c[self.layout.id_column]
        assert self._history_tables is not None, "the caller made sure the tables exist"
        _, attempts = self._history_tables
        returned = [
            id_column.label("written_id"),
            outcome.c.error.label("reason"),
            outcome.c.status_code.label("status_code"),
        ]
        if payloads:
            returned += [outcome.c.request.label("request"), outcome.c.response.label("response")]
        updated = update.returning(*returned).cte("updated")
        names = ["run_id", "contact_id", "crm", "at", "outcome", "status_code", "reason"]
        selected: list[Any] = [
            sa.bindparam(prefix + "run_id", type_=sa.BigInteger),
            sa.cast(updated.c.written_id, sa.Text),
            sa.literal(crm, sa.String),
            sa.bindparam(prefix + "attempt_at", type_=sa.DateTime(timezone=True)),
            sa.literal(_OUTCOMES[event], sa.String),
            updated.c.status_code,
            sa.cast(updated.c.reason, sa.Text),
        ]
        if payloads:
            names += ["request", "response"]
            selected += [updated.c.request, updated.c.response]
        insert = sa.insert(attempts).from_select(names, sa.select(*selected)).cte("kept")
        return sa.select(updated.c.written_id).add_cte(insert)

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


def _first_line(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]


def _missing_table(exc: Exception) -> bool:
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)
