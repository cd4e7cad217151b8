"""Confirmed delivery (``{CRM}_SYNC_CONFIRM``): the SQL side of :mod:`crmsync_core.confirm`.

crmsync keeps what it awaits in a table of its own, ``crmsync_confirmations`` (created on first use, on
PostgreSQL and SQLite), so that the host's contacts table needs no new column: one row per CRM and
contact that the destination accepted and has not confirmed, with the idempotency key it was sent with
and the time by which the callback must come. A callback that arrives before the acceptance is recorded
(a fast workflow) is kept in the same row and applied when it is. Rows go when the contact is resolved.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from ..contacts import Contact, ContactId
from ..layout import CONTACT_FIELDS
from ..queue import Callback, ConfirmResolution, Pending
from ..status import AWAITING, Event, ProcessingStatus, SyncStatus
from .base import StoreBase

CONFIRMATION_TABLE = "crmsync_confirmations"
_AWAITING_PROCESSING = ProcessingStatus.COMPLETE.value


def confirmation_table(
    id_type: Any, metadata: sa.MetaData | None = None, schema: str | None = None
) -> sa.Table:
    """crmsync's table of deliveries awaiting the destination's callback (``id_type``: the contacts'
    id column's type)."""
    return sa.Table(
        CONFIRMATION_TABLE,
        metadata or sa.MetaData(),
        sa.Column("crm", sa.String(64), primary_key=True),
        sa.Column("contact_id", id_type, primary_key=True),
        #: the key the contact was sent with (the callback must carry it)
        sa.Column("idempotency_key", sa.String(200)),
        #: when the destination accepted it (NULL: only a callback that came first is known)
        sa.Column("accepted_at", sa.DateTime(timezone=True)),
        sa.Column("confirm_by", sa.DateTime(timezone=True)),
        #: a callback that came before the acceptance was recorded: ok / error, and what it carried
        sa.Column("outcome", sa.String(8)),
        sa.Column("error", sa.Text),
        sa.Column("data", sa.Text),
        sa.Index("ix_crmsync_confirmations_confirm_by", "crm", "confirm_by"),
        schema=schema,
    )


class ConfirmationsMixin(StoreBase):
    """The store's half of confirmed delivery."""

    _confirmations: sa.Table | None = None

    async def _confirmation_table(self) -> sa.Table:
        if self._confirmations is not None:
            return self._confirmations
        table = confirmation_table(
            self.table.c[self.layout.id_column].type.copy(), schema=self.layout.schema
        )
        try:
            async with self._transaction(None) as conn:
                await conn.run_sync(table.create, checkfirst=True)
        except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
            pass  # another worker created it between our check and our CREATE
        self._confirmations = table
        return table

    def _upsert(self, table: sa.Table) -> Any:
        dialect = self.dialect
        return (postgresql if dialect == "postgresql" else sqlite).insert(table)

    async def expect_confirmations(
        self,
        crm: str,
        items: Sequence[tuple[ContactId, str | None]],
        *,
        now: datetime,
        confirm_by: datetime,
    ) -> None:
        """Record that ``items`` (contact id, idempotency key) were accepted and await a callback by
        ``confirm_by``. Written before the contacts' acceptance, so an awaiting contact always has its
        row; a callback already received for the same key is kept."""
        if not items:
            return
        table = await self._confirmation_table()
        at = self._at
        insert = self._upsert(table)
        same_key = sa.and_(
            table.c.accepted_at.is_(None),
            table.c.idempotency_key == insert.excluded.idempotency_key,
        )
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.crm, table.c.contact_id],
            set_={
                "idempotency_key": insert.excluded.idempotency_key,
                "accepted_at": insert.excluded.accepted_at,
                "confirm_by": insert.excluded.confirm_by,
                "outcome": sa.case((same_key, table.c.outcome), else_=sa.null()),
                "error": sa.case((same_key, table.c.error), else_=sa.null()),
                "data": sa.case((same_key, table.c.data), else_=sa.null()),
            },
        )
        rows = [
            {
                "crm": crm,
                "contact_id": contact_id,
                "idempotency_key": key,
                "accepted_at": at(table.c.accepted_at, now),
                "confirm_by": at(table.c.confirm_by, confirm_by),
            }
            for contact_id, key in items
        ]
        async with self._transaction(None) as conn:
            await conn.execute(statement, rows)

    async def keep_early_callback(self, crm: str, callback: Callback) -> None:
        """Keep a callback for a contact whose acceptance is not recorded yet; applied when it is."""
        table = await self._confirmation_table()
        contact_id = self._parse_ids([callback.contact_id])[0]
        insert = self._upsert(table)
        statement = insert.on_conflict_do_update(
            index_elements=[table.c.crm, table.c.contact_id],
            set_={
                "outcome": insert.excluded.outcome,
                "error": insert.excluded.error,
                "data": insert.excluded.data,
            },
            where=sa.or_(
                table.c.idempotency_key.is_(None),
                table.c.idempotency_key == callback.idempotency_key,
            ),
        )
        async with self._transaction(None) as conn:
            await conn.execute(
                statement,
                {
                    "crm": crm,
                    "contact_id": contact_id,
                    "idempotency_key": callback.idempotency_key,
                    "outcome": "ok" if callback.ok else "error",
                    "error": callback.error,
                    "data": json.dumps(callback.data) if callback.data is not None else None,
                },
            )

    async def pending_confirmations(
        self,
        crm: str,
        ids: Iterable[ContactId | str] | None = None,
        *,
        expired_at: datetime | None = None,
        with_outcome: bool = False,
    ) -> list[Pending]:
        """Confirmation rows of ``crm`` with their contacts' state: those of ``ids``, or those whose
        contact awaits past ``expired_at``, or (``with_outcome``) those holding an early callback."""
        table = await self._confirmation_table()
        c = self._crm(crm)
        id_column = self.table.c[self.layout.id_column]
        statement = (
            sa.select(
                table.c.contact_id,
                table.c.idempotency_key,
                table.c.outcome,
                table.c.error,
                table.c.data,
                c.sync,
                c.processing,
                self._attempts(c),
                c.remote_id,
            )
            .select_from(table.join(self.table, id_column == table.c.contact_id))
            .where(table.c.crm == crm)
        )
        if ids is not None:
            statement = statement.where(table.c.contact_id.in_(self._parse_ids(ids)))
        if expired_at is not None:
            statement = statement.where(
                table.c.confirm_by < self._at(table.c.confirm_by, expired_at),
                self._awaiting(c),
            )
        if with_outcome:
            statement = statement.where(table.c.outcome.is_not(None), self._awaiting(c))
        async with self._transaction(None) as conn:
            rows = (await conn.execute(statement)).all()
        return [
            Pending(
                contact_id=row[0],
                idempotency_key=row[1],
                early=(
                    None
                    if row[2] is None
                    else Callback(
                        contact_id=str(row[0]),
                        idempotency_key=row[1],
                        ok=row[2] == "ok",
                        error=row[3],
                        data=json.loads(row[4]) if row[4] else None,
                    )
                ),
                awaiting=(
                    _value(row[5]) == AWAITING.sync.value and _value(row[6]) == _AWAITING_PROCESSING
                ),
                claimed=(
                    _value(row[5]) == SyncStatus.PROCESSING.value
                    and _value(row[6]) == ProcessingStatus.PROCESSING.value
                ),
                attempts=int(row[7] or 0),
                remote_id=row[8],
            )
            for row in rows
        ]

    def parse_id(self, value: ContactId | str) -> ContactId:
        """``value`` as the contacts table's id type (``InvalidRequestError`` when it is not one)."""
        parsed: ContactId = self._parse_ids([value])[0]
        return parsed

    async def contact_state_for_callback(self, crm: str, contact_id: ContactId | str) -> str:
        """``awaiting``, ``claimed`` (sent, acceptance not yet recorded), ``other`` or ``missing``."""
        states = await self.states(crm, [contact_id])  # type: ignore[attr-defined]
        if not states:
            return "missing"
        state = next(iter(states.values()))
        if state.sync_status is AWAITING.sync and state.processing_status is AWAITING.processing:
            return "awaiting"
        if (
            state.sync_status is SyncStatus.PROCESSING
            and state.processing_status is ProcessingStatus.PROCESSING
        ):
            return "claimed"
        return "other"

    async def resolve_confirmations(
        self, crm: str, resolutions: Sequence[ConfirmResolution], *, now: datetime
    ) -> set[ContactId]:
        """Move awaiting contacts on (confirmed, failed, back to the queue) and drop their rows; only
        contacts still awaiting are changed. Returns those that were."""
        if not resolutions:
            return set()
        table = await self._confirmation_table()
        c = self._crm(crm)
        id_column = self.table.c[self.layout.id_column]
        at = self._at
        changed: set[ContactId] = set()
        async with self._transaction(None) as conn:
            for r in resolutions:
                condition, values = self._transition(c, r.event)
                if r.event is Event.CONFIRM:
                    values[c.names.error] = None
                else:
                    values[c.names.error] = r.error
                    values[c.names.attempts] = r.attempts
                    values[c.names.next_attempt_at] = at(c.next_attempt_at, r.next_attempt_at)
                    if c.last_attempt_at is not None and c.names.last_attempt_at:
                        values[c.names.last_attempt_at] = at(c.last_attempt_at, now)
                    if c.failed_crm is not None and c.names.failed_crm:
                        values[c.names.failed_crm] = c.names.crm
                values |= self._touch(now)
                statement = (
                    sa.update(self.table)
                    .where(id_column == r.contact_id, condition)
                    .values(values)
                    .returning(id_column)
                )
                for row in await conn.execute(statement):
                    changed.add(row[0])
            if changed:
                await self._drop_confirmations(conn, table, crm, changed)
        return changed

    async def _drop_confirmations(
        self, conn: AsyncConnection, table: sa.Table, crm: str, ids: set[ContactId]
    ) -> None:
        await conn.execute(
            sa.delete(table).where(table.c.crm == crm, table.c.contact_id.in_(list(ids)))
        )

    async def contacts(self, ids: Iterable[ContactId | str]) -> dict[ContactId, Contact]:
        """The contacts of ``ids`` as adapters and hooks see them (those that exist)."""
        wanted = self._parse_ids(ids)
        id_column = self.table.c[self.layout.id_column]
        fields = [self.table.c[self.layout.fields[f]] for f in CONTACT_FIELDS]
        async with self._transaction(None) as conn:
            rows = (
                await conn.execute(sa.select(id_column, *fields).where(id_column.in_(wanted)))
            ).all()
        return {
            row[0]: Contact(
                row[0], **{f: _value(v) for f, v in zip(CONTACT_FIELDS, row[1:], strict=True)}
            )
            for row in rows
        }

    def _awaiting(self, c: Any) -> sa.ColumnElement[bool]:
        return sa.and_(
            c.sync == AWAITING.sync.value,
            c.processing == _AWAITING_PROCESSING,
        )


def _value(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value
