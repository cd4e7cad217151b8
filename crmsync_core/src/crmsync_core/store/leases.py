"""The worker's lease protocol: claim due contacts, record their outcomes in bulk, release and renew
claims, and take back the claims of dead workers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from ..contacts import ContactId
from ..errors import StoreError
from ..layout import CONTACT_FIELDS
from ..queue import (
    Claim,
    RecordResult,
    Resolution,
)
from ..status import Event, ProcessingStatus
from .base import ID_CHUNK, _Crm, contact_from_row
from .fingerprints import FingerprintsMixin
from .history import _OUTCOMES, HistoryMixin

#: outcomes per UPDATE ... FROM (VALUES ...) statement (up to 5 parameters each)
RECORD_CHUNK = 1_000
#: the prefix of the outcome statements' parameter names: no column of a host table has it, and an
#: UPDATE's parameter named after one of its table's columns would set that column
_P = "crmsync_"


class LeasesMixin(FingerprintsMixin, HistoryMixin):
    # -- the engine's operations ---------------------------------------------------------------------

    async def claim(
        self, crm: str, limit: int, *, now: datetime, ids: Sequence[ContactId] | None = None
    ) -> Claim:
        """Take up to ``limit`` due contacts for ``crm`` and mark them ``Processing``, in one statement.

        On PostgreSQL the due rows are selected ``FOR UPDATE SKIP LOCKED``, so concurrent workers never
        claim the same contact. ``ids`` claims only those contacts, queued ones whether due or not (a
        test send asked for now).
        """
        c = self._crm(crm)
        condition, values = self._transition(c, Event.CLAIM)
        if ids is not None:
            wanted = self._id_column.in_(self._parse_ids(ids))
            due_now = sa.and_(c.processing == ProcessingStatus.QUEUED.value, wanted)
        else:
            due_now = self._due(c, now)
        due = (
            sa.select(self._id_column)
            .where(due_now, condition)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if c.names.claim_is_token:
            due = due.order_by(c.next_attempt_at)
        due_cte = due.cte("due")
        values = values | {c.names.claimed_at: self._at(c.claimed_at, now)} | self._touch(now)
        fields = [self.table.c[self.layout.fields[f]] for f in CONTACT_FIELDS]
        statement = (
            sa.update(self.table)
            .where(self._id_column.in_(sa.select(due_cte.c[self.layout.id_column])))
            .values(values)
            .returning(self._id_column, *fields, self._attempts(c))
            .add_cte(due_cte)
        )
        async with self._transaction(None) as conn:
            rows = (await conn.execute(statement)).all()
        contacts = [contact_from_row(row) for row in rows]
        return Claim(crm, contacts, now)

    async def record(
        self,
        claim: Claim,
        resolutions: Sequence[Resolution],
        *,
        now: datetime,
        run_id: int | None = None,
    ) -> RecordResult:
        """Write the outcome of a claim in bulk, one statement per kind of event, in one transaction.

        A row is written only if it is still in this claim (``Processing`` and, where the layout keeps a
        claim time of its own, claimed at ``claim.claimed_at``); the others are counted as stale. With
        run history on, the written contacts' attempts are one more statement of the same transaction.
        """
        history = self.history_settings.history
        if history and self._history_tables is None:
            try:
                await self._history_write_tables()
            except StoreError:
                history = False  # logged once; the outcomes are what matters
        c = self._crm(claim.crm)
        groups: dict[Event, list[Resolution]] = {}
        for resolution in resolutions:
            groups.setdefault(resolution.event, []).append(resolution)
        written: set[ContactId] = set()
        # On PostgreSQL each outcome statement also inserts its written contacts' attempts (a
        # data-modifying CTE): no statement and no round trip of its own.
        kept = (run_id,) if history and self.dialect == "postgresql" else None
        async with self._transaction(None) as conn:
            for event, group in groups.items():
                for start in range(0, len(group), RECORD_CHUNK):
                    statement, params = self._record_statement(
                        c, event, claim, group[start : start + RECORD_CHUNK], now, kept
                    )
                    written.update(row[0] for row in await conn.execute(statement, params))
            # Same transaction: a contact is Complete with its fingerprint, or neither.
            await self._record_fingerprints(conn, claim.crm, resolutions, written, now)
            if history and kept is None:
                await self._record_attempts(conn, claim.crm, run_id, resolutions, written, now)
        return RecordResult(frozenset(written), len(resolutions) - len(written))

    async def release(self, claim: Claim, ids: Iterable[ContactId] | None = None) -> int:
        """Hand claimed contacts back to the queue untouched (fatal error, shutdown): no attempt used."""
        c = self._crm(claim.crm)
        wanted = [contact.id for contact in claim.contacts] if ids is None else list(ids)
        condition, values = self._transition(c, Event.RELEASE)
        released = 0
        async with self._transaction(None) as conn:
            for start in range(0, len(wanted), ID_CHUNK):
                chunk = wanted[start : start + ID_CHUNK]
                where = [self._id_column.in_(chunk), condition]
                if c.names.claim_is_token:
                    where.append(c.claimed_at == self._at(c.claimed_at, claim.claimed_at))
                statement = (
                    sa.update(self.table).where(*where).values(values | self._release_values(c))
                )
                released += (await conn.execute(statement)).rowcount
        return released

    async def extend_claim(self, claim: Claim, *, now: datetime) -> Claim:
        """Renew a claim whose contacts are still being pushed, so that no other worker takes them back as
        a dead worker's; returns the renewed claim. Statuses do not change."""
        c = self._crm(claim.crm)
        ids = [contact.id for contact in claim.contacts]
        values = {c.names.claimed_at: self._at(c.claimed_at, now)} | self._touch(now)
        async with self._transaction(None) as conn:
            for start in range(0, len(ids), ID_CHUNK):
                where = [
                    self._id_column.in_(ids[start : start + ID_CHUNK]),
                    c.processing == ProcessingStatus.PROCESSING.value,
                ]
                if c.names.claim_is_token:
                    where.append(c.claimed_at == self._at(c.claimed_at, claim.claimed_at))
                await conn.execute(sa.update(self.table).where(*where).values(values))
        return Claim(claim.crm, claim.contacts, now)

    async def release_expired(self, crm: str, *, now: datetime, older_than: timedelta) -> int:
        """Return contacts whose claim is older than ``older_than`` (their worker died) to the queue.

        The crash is not a failed attempt: attempts and errors are left as they were.
        """
        c = self._crm(crm)
        condition, values = self._transition(c, Event.RELEASE)
        cutoff = self._at(c.claimed_at, now - older_than)
        statement = (
            sa.update(self.table)
            .where(condition, c.claimed_at < cutoff)
            .values(values | self._release_values(c) | self._touch(now))
        )
        async with self._transaction(None) as conn:
            return (await conn.execute(statement)).rowcount

    def _record_statement(
        self,
        c: _Crm,
        event: Event,
        claim: Claim,
        group: Sequence[Resolution],
        now: datetime,
        kept: tuple[int | None] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        """One ``UPDATE ... FROM (outcome rows)`` for a group of contacts that met the same event, and
        its parameters: one statement and one exact row count, whatever the driver. With ``kept``
        (PostgreSQL, history on: the run id), the same statement inserts the written contacts'
        attempts.

        Every value is a parameter. On PostgreSQL the statement is therefore built once per CRM, event
        and shape, kept in ``c.statements`` and executed again with each batch's values: SQLAlchemy
        then neither rebuilds it nor recomputes its cache key (about 0.8 s of Python per 50,000
        contacts with the attempts' CTE, half that without: docs/benchmarks.md). SQLite's VALUES list
        has a row count of its own, so its statement is built per batch.
        """
        history = kept is not None
        payloads = history and any(r.request is not None or r.response is not None for r in group)
        arrays: dict[str, list[Any]] = {
            "contact_id": [r.contact_id for r in group],
            "error": [r.error for r in group],
        }
        if history:
            arrays["status_code"] = [r.status_code for r in group]
            if payloads:
                arrays["request"] = [r.request for r in group]
                arrays["response"] = [r.response for r in group]
        if event in (Event.SUCCEED, Event.AWAIT):
            arrays["remote_id"] = [r.remote_id for r in group]
            arrays["fallback_id"] = [r.fallback_id for r in group]
        if event in (Event.RETRY, Event.FAIL):
            arrays["attempts"] = [r.attempts for r in group]
            arrays["next_attempt_at"] = [
                self._at(c.next_attempt_at, r.next_attempt_at) for r in group
            ]
        params: dict[str, Any] = {}
        if c.names.claim_is_token:
            params[_P + "claimed_at"] = self._at(c.claimed_at, claim.claimed_at)
        if event in (Event.RETRY, Event.FAIL) and c.last_attempt_at is not None:
            params[_P + "last_attempt_at"] = self._at(c.last_attempt_at, now)
        if self.layout.updated_at:
            params[_P + "touched_at"] = self._at(self.table.c[self.layout.updated_at], now)
        attempts = history and self._history_tables is not None and event in _OUTCOMES
        if attempts:
            params[_P + "run_id"] = kept[0] if kept is not None else None
            params[_P + "attempt_at"] = self._moment(now)
        if self.dialect == "postgresql":
            params |= {f"{_P}outcome_{name}": values for name, values in arrays.items()}
            key = ("record", event, history, payloads, attempts)
            statement = c.statements.get(key)
            if statement is None:
                statement = self._build_record_statement(
                    c, event, history, payloads, attempts, None
                )
                c.statements[key] = statement
            return statement, params
        for k, values in enumerate(arrays.values()):
            params |= {f"{_P}outcome_{r}_{k}": value for r, value in enumerate(values)}
        statement = self._build_record_statement(c, event, history, payloads, attempts, len(group))
        return statement, params

    def _build_record_statement(
        self,
        c: _Crm,
        event: Event,
        history: bool,
        payloads: bool,
        attempts: bool,
        rows: int | None,
    ) -> Any:
        """The statement of :meth:`_record_statement`, all of whose values are bound parameters (named
        ``crmsync_...``); ``rows``: the number of outcome rows (SQLite), or ``None`` (arrays)."""
        condition, values = self._transition(c, event)
        columns = [sa.column("contact_id", self._id_column.type), sa.column("error", c.error.type)]
        if history:
            columns.append(sa.column("status_code", sa.Integer))
            if payloads:
                columns += [sa.column("request", sa.Text), sa.column("response", sa.Text)]
        if event in (Event.SUCCEED, Event.AWAIT):
            columns += [
                sa.column("remote_id", c.remote_id.type),
                sa.column("fallback_id", c.remote_id.type),
            ]
        if event in (Event.RETRY, Event.FAIL):
            columns += [
                sa.column("attempts", c.attempts.type),
                sa.column("next_attempt_at", c.next_attempt_at.type),
            ]
        outcome = self._outcome_rows(columns, rows)
        where = [self._id_column == outcome.c.contact_id, condition]
        if c.names.claim_is_token:
            where.append(c.claimed_at == sa.bindparam(_P + "claimed_at", type_=c.claimed_at.type))
            values[c.names.claimed_at] = None
        values[c.names.error] = self._typed(outcome.c.error, c.error)
        if event in (Event.SUCCEED, Event.AWAIT):
            # An answer without an id never replaces the id the CRM gave before (a re-delivery).
            values[c.names.remote_id] = sa.func.coalesce(
                self._typed(outcome.c.remote_id, c.remote_id),
                c.remote_id,
                self._typed(outcome.c.fallback_id, c.remote_id),
            )
        if event in (Event.RETRY, Event.FAIL):
            values[c.names.attempts] = self._typed(outcome.c.attempts, c.attempts)
            values[c.names.next_attempt_at] = self._typed(
                outcome.c.next_attempt_at, c.next_attempt_at
            )
            if c.last_attempt_at is not None and c.names.last_attempt_at:
                values[c.names.last_attempt_at] = sa.bindparam(
                    _P + "last_attempt_at", type_=c.last_attempt_at.type
                )
            if c.failed_crm is not None and c.names.failed_crm:
                values[c.names.failed_crm] = c.names.crm
        if self.layout.updated_at:
            updated_at = self.table.c[self.layout.updated_at]
            values[self.layout.updated_at] = sa.bindparam(_P + "touched_at", type_=updated_at.type)
        update = sa.update(self.table).where(*where).values(values)
        if not attempts:
            return update.returning(self._id_column)
        return self._with_attempts(update, outcome, event, c.names.crm, payloads, _P)

    def _outcome_rows(self, columns: list[sa.ColumnClause[Any]], rows: int | None) -> Any:
        """The outcomes as a table to join in an UPDATE, as parameters named ``crmsync_outcome_...``.

        On PostgreSQL, ``unnest`` of one array per column (``rows`` is ``None``): the statement is the
        same for every batch, so SQLAlchemy compiles it once (a VALUES list of literal rows costs a
        compilation per batch, which was most of the engine's CPU). SQLite has no arrays: a VALUES CTE
        of ``rows`` rows there.
        """
        if rows is None:
            arrays = [
                sa.bindparam(f"{_P}outcome_{column.name}", type_=postgresql.ARRAY(column.type))
                for column in columns
            ]
            return sa.func.unnest(*arrays).table_valued(*columns, name="outcome").render_derived()
        # A CTE rather than FROM (VALUES ...) AS alias (columns): SQLite only knows the former. Written
        # as text because SQLAlchemy 2.0 has no VALUES CTE (Values.cte() came in 2.1), and RECURSIVE
        # because 2.0 names a CTE's columns only then; SQLite accepts it on a plain VALUES list.
        params = [
            sa.bindparam(f"{_P}outcome_{r}_{k}", type_=column.type)
            for r in range(rows)
            for k, column in enumerate(columns)
        ]
        values = ", ".join(
            "(" + ", ".join(f":{_P}outcome_{r}_{k}" for k in range(len(columns))) + ")"
            for r in range(rows)
        )
        return (
            sa.text(f"VALUES {values}")
            .bindparams(*params)
            .columns(*columns)
            .cte("outcome", recursive=True)
        )

    def _typed(self, value: sa.ColumnElement[Any], column: sa.Column[Any]) -> sa.ColumnElement[Any]:
        # PostgreSQL types a VALUES column whose rows are all NULL as text; say what it holds. (SQLite's
        # CAST would turn a timestamp into a number, and it needs no help.)
        if self.dialect == "postgresql":
            return sa.cast(value, column.type)
        return value
