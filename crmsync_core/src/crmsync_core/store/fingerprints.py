"""Change detection: crmsync's own table of delivered payloads (``crmsync_fingerprints``).

Per CRM and contact it keeps the fingerprint of the payload last delivered (written in the transaction
that records the contact ``Complete``), when, when crmsync last knew the CRM to hold it, and whether the
contact's current queueing is a user's re-selection of it while ``Complete`` (set in the transaction that
queues it). The contacts table is never changed for it; where the table was not created (a host table
without `crmsync schema --scrapersky`) every operation here is a no-op and nothing is skipped. See
``docs/changes.md`` and :mod:`crmsync_core.changes`.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from ..contacts import Contact, ContactId
from ..errors import ConfigurationError
from ..layout import CONTACT_FIELDS
from ..queue import Resolution, StoredFingerprint
from ..status import Event, SyncStatus
from .base import ID_CHUNK, StoreBase, _aware, _Crm, contact_from_row
from .schema import _schema_hint
from .tables import FINGERPRINT_TABLE, fingerprint_table

#: fingerprints per INSERT ... ON CONFLICT statement
RECORD_CHUNK = 1_000
#: how long a store believes that the fingerprint table is missing before it looks again
_FINGERPRINT_TABLE_RECHECK_SECONDS = 60.0


class FingerprintsMixin(StoreBase):
    """The fingerprint table's statements; :class:`~crmsync_core.store.Store` includes them."""

    _fingerprints: sa.Table | None = None
    _fingerprints_missing_since: float | None = None

    async def _fingerprint_table(
        self, connection: AsyncConnection | None = None
    ) -> sa.Table | None:
        """crmsync's fingerprint table, or ``None`` where it was not created (a host table that has not
        had `crmsync schema --scrapersky`): change detection is then off, and nothing fails."""
        if self._fingerprints is not None:
            return self._fingerprints
        missing_since = self._fingerprints_missing_since
        if (
            missing_since is not None
            and time.monotonic() - missing_since < _FINGERPRINT_TABLE_RECHECK_SECONDS
        ):
            return None
        table = fingerprint_table(schema=self.layout.schema)

        def exists(sync_conn: sa.Connection) -> bool:
            return sa.inspect(sync_conn).has_table(FINGERPRINT_TABLE, schema=self.layout.schema)

        if connection is not None:
            found = await connection.run_sync(exists)
        else:
            async with self._transaction(None) as conn:
                found = await conn.run_sync(exists)
        if not found:
            self._fingerprints_missing_since = time.monotonic()
            return None
        self._fingerprints = table
        return table

    def _id_text(self, value: Any) -> str:
        """A contact id as the fingerprint table keeps it: the database's own text of the id column
        (``CAST(id AS TEXT)``), so that the table joins the contacts table in SQL."""
        if isinstance(value, uuid.UUID) and self.dialect != "postgresql":
            return value.hex  # SQLAlchemy keeps a UUID as 32 hex digits where it has no uuid type
        return str(value)

    def _ids_as_text(self) -> sa.ColumnElement[Any]:
        return sa.cast(self._id_column, sa.String(255))

    async def fingerprints(
        self, crm: str, ids: Iterable[ContactId | str]
    ) -> dict[ContactId, StoredFingerprint]:
        """What was last delivered to ``crm`` for each of ``ids`` (contacts never delivered, or
        delivered before crmsync kept fingerprints, are absent)."""
        table = await self._fingerprint_table()
        if table is None:
            return {}
        by_text = {self._id_text(i): i for i in self._parse_ids(ids)}
        keys = list(by_text)
        found: dict[ContactId, StoredFingerprint] = {}
        async with self._transaction(None) as conn:
            for start in range(0, len(keys), ID_CHUNK):
                statement = sa.select(
                    table.c.contact_id,
                    table.c.fingerprint,
                    table.c.delivered_at,
                    table.c.reselected,
                ).where(table.c.crm == crm, table.c.contact_id.in_(keys[start : start + ID_CHUNK]))
                for row in await conn.execute(statement):
                    delivered = _aware(row[2])
                    assert delivered is not None
                    found[by_text[row[0]]] = StoredFingerprint(row[1], delivered, bool(row[3]))
        return found

    async def _mark_reselected(
        self, conn: AsyncConnection, c: _Crm, queued: sa.ColumnElement[bool], *, user: bool
    ) -> None:
        """Before contacts are queued (``queued`` selects them): remember which are a user's re-selection
        of a ``Complete`` contact, the only ones the engine may complete unchanged."""
        table = await self._fingerprint_table(conn)
        if table is None:
            return
        ids = sa.select(self._ids_as_text()).where(queued)
        mine = sa.and_(table.c.crm == c.names.crm, table.c.contact_id.in_(ids))
        await conn.execute(
            sa.update(table).where(mine, table.c.reselected).values(reselected=False)
        )
        if user:
            complete = sa.select(self._ids_as_text()).where(
                queued, c.sync == SyncStatus.COMPLETE.value
            )
            await conn.execute(
                sa.update(table)
                .where(table.c.crm == c.names.crm, table.c.contact_id.in_(complete))
                .values(reselected=True)
            )

    async def _record_fingerprints(
        self,
        conn: AsyncConnection,
        crm: str,
        resolutions: Sequence[Resolution],
        written: set[ContactId],
        now: datetime,
    ) -> None:
        """In :meth:`record`'s transaction: the fingerprint of each contact delivered, the check time of
        each completed unchanged; other outcomes end the re-selection (a retry is always sent)."""
        table = await self._fingerprint_table(conn)
        if table is None:
            return
        delivered: list[dict[str, Any]] = []
        unchanged: list[str] = []
        forget: list[str] = []
        others: list[str] = []
        at = self._at(table.c.delivered_at, now)
        for r in resolutions:
            if r.contact_id not in written:
                continue
            key = self._id_text(r.contact_id)
            if r.event is not Event.SUCCEED:
                others.append(key)
            elif r.unchanged:
                unchanged.append(key)
            elif r.fingerprint is not None:
                delivered.append(
                    {
                        "crm": crm,
                        "contact_id": key,
                        "fingerprint": r.fingerprint,
                        "delivered_at": at,
                        "checked_at": at,
                        "reselected": False,
                    }
                )
            else:
                # Delivered, but what was sent is not known: an older fingerprint would be wrong.
                forget.append(key)
        mine = table.c.crm == crm
        # One row per contact (one statement may not upsert a row twice), the last one winning.
        delivered = list({row["contact_id"]: row for row in delivered}.values())
        for start in range(0, len(delivered), RECORD_CHUNK):
            rows = delivered[start : start + RECORD_CHUNK]
            if self.dialect == "postgresql":
                # One multi-row INSERT, not an executemany: psycopg sends an executemany in pipeline
                # mode, and a connection broken in the middle of one could not even roll back.
                insert: Any = postgresql.insert(table).values(rows)
                parameters: Any = None
            else:
                insert, parameters = sqlite_insert(table), rows
            statement = insert.on_conflict_do_update(
                index_elements=[table.c.crm, table.c.contact_id],
                set_={
                    "fingerprint": insert.excluded.fingerprint,
                    "delivered_at": insert.excluded.delivered_at,
                    "checked_at": insert.excluded.checked_at,
                    "reselected": False,
                },
            )
            await conn.execute(statement, parameters)
        for keys, values in (
            (unchanged, {"checked_at": at, "reselected": False}),
            (others, {"reselected": False}),
        ):
            for start in range(0, len(keys), ID_CHUNK):
                chunk = keys[start : start + ID_CHUNK]
                await conn.execute(
                    sa.update(table).where(mine, table.c.contact_id.in_(chunk)).values(values)
                )
        for start in range(0, len(forget), ID_CHUNK):
            chunk = forget[start : start + ID_CHUNK]
            await conn.execute(sa.delete(table).where(mine, table.c.contact_id.in_(chunk)))

    def _changed_since_checked(self, table: sa.Table) -> sa.ColumnElement[bool]:
        """Contacts updated after crmsync last knew the CRM to hold their payload."""
        updated: Any = self.table.c[self.layout.updated_at] if self.layout.updated_at else None
        if updated is None:
            return sa.true()
        if self.dialect == "postgresql" and not getattr(updated.type, "timezone", False):
            # A naive updated_at holds UTC: say so, or it is read in the session's time zone.
            updated = sa.func.timezone("UTC", updated)
        return sa.and_(updated > table.c.checked_at)

    def _delivered_join(self, c: _Crm, table: sa.Table) -> Any:
        return self.table.join(
            table,
            sa.and_(table.c.crm == c.names.crm, table.c.contact_id == self._ids_as_text()),
        )

    async def _out_of_date(self, c: _Crm) -> int | None:
        if not self.layout.updated_at:
            return None
        table = await self._fingerprint_table()
        if table is None:
            return None
        statement = (
            sa.select(sa.func.count())
            .select_from(self._delivered_join(c, table))
            .where(c.sync == SyncStatus.COMPLETE.value, self._changed_since_checked(table))
        )
        async with self._transaction(None) as conn:
            return int((await conn.execute(statement)).scalar_one())

    async def change_candidates(
        self, crm: str, *, chunk: int = 5_000
    ) -> AsyncIterator[list[tuple[Contact, str]]]:
        """The ``Complete`` contacts of ``crm`` that may differ from what was last delivered, each with
        the fingerprint delivered, in lists of up to ``chunk``: those updated since their last delivery
        or check where the table has ``updated_at``, else every one with a fingerprint.

        One join finds the candidates' ids (a hash join over both tables: about two seconds for a
        million contacts; a server-side cursor would forgo PostgreSQL's parallel plan and take several
        times longer), then their fields are read ``chunk`` at a time by primary key.
        """
        c = self._crm(crm)
        table = await self._fingerprint_table()
        if table is None:
            raise ConfigurationError(
                f"there is no {FINGERPRINT_TABLE} table, so crmsync does not know what it delivered; "
                f"{_schema_hint(self.layout)}"
            )
        found = (
            sa.select(self._id_column, table.c.fingerprint)
            .select_from(self._delivered_join(c, table))
            .where(c.sync == SyncStatus.COMPLETE.value, self._changed_since_checked(table))
        )
        async with self._transaction(None) as conn:
            candidates = {row[0]: str(row[1]) for row in await conn.execute(found)}
        ids = list(candidates)
        fields = [self.table.c[self.layout.fields[f]] for f in CONTACT_FIELDS]
        for start in range(0, len(ids), chunk):
            statement = sa.select(self._id_column, *fields, self._attempts(c)).where(
                self._id_column.in_(ids[start : start + chunk]),
                c.sync == SyncStatus.COMPLETE.value,
            )
            async with self._transaction(None) as conn:
                rows = (await conn.execute(statement)).all()
            yield [(contact, candidates[contact.id]) for contact in map(contact_from_row, rows)]

    async def mark_checked(self, crm: str, ids: Iterable[ContactId], *, at: datetime) -> int:
        """Record that the CRM holds the current payload of ``ids`` as of ``at`` (compared, unchanged),
        so that the next change scan passes over them until they are updated again."""
        table = await self._fingerprint_table()
        if table is None:
            return 0
        keys = [self._id_text(i) for i in ids]
        when = self._at(table.c.checked_at, at)
        changed = 0
        async with self._transaction(None) as conn:
            for start in range(0, len(keys), ID_CHUNK):
                statement = (
                    sa.update(table)
                    .where(
                        table.c.crm == crm, table.c.contact_id.in_(keys[start : start + ID_CHUNK])
                    )
                    .values(checked_at=when)
                )
                changed += (await conn.execute(statement)).rowcount
        return changed

    async def due_contacts(
        self, crm: str, *, now: datetime, limit: int | None = None
    ) -> list[Contact]:
        """The contacts a run would claim now, in claim order, without claiming them (a dry run)."""
        c = self._crm(crm)
        condition, _ = self._transition(c, Event.CLAIM)
        fields = [self.table.c[self.layout.fields[f]] for f in CONTACT_FIELDS]
        statement = sa.select(self._id_column, *fields, self._attempts(c)).where(
            self._due(c, now), condition
        )
        if c.names.claim_is_token:
            statement = statement.order_by(c.next_attempt_at, self._id_column)
        if limit is not None:
            statement = statement.limit(limit)
        async with self._transaction(None) as conn:
            rows = (await conn.execute(statement)).all()
        return [contact_from_row(row) for row in rows]
