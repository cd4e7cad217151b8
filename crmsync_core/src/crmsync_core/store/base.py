"""What every part of the store shares: the engine and table, transactions, and the status machine's
statements bound to one CRM's columns."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession

from ..contacts import Contact, ContactId
from ..errors import ConfigurationError, DatabaseUnavailableError, InvalidRequestError, StoreError
from ..history import HistorySettings
from ..layout import CrmColumns, Layout
from ..queue import (
    CircuitState,
)
from ..status import TRANSITIONS, Event, ProcessingStatus
from .schema import (
    CONNECTION_ERRORS,
    _add_missing_columns,
    _check_columns,
    _reflect,
    database_engine,
    default_table,
    unreachable,
)

#: ids per statement in queue-by-ids operations (SQLite allows 32,766 parameters per statement)
ID_CHUNK = 2_000


@dataclass
class _Crm:
    """A CRM's columns bound to the table."""

    names: CrmColumns
    sync: sa.Column[Any]
    processing: sa.Column[Any]
    error: sa.Column[Any]
    remote_id: sa.Column[Any]
    attempts: sa.Column[Any]
    next_attempt_at: sa.Column[Any]
    last_attempt_at: sa.Column[Any] | None
    claimed_at: sa.Column[Any]
    failed_crm: sa.Column[Any] | None
    #: statements built once and executed with parameters (see ``LeasesMixin._record_statement``)
    statements: dict[tuple[Any, ...], Any] = field(default_factory=dict)


class StoreBase:
    """The engine, the table and its layout; :class:`~crmsync_core.store.Store` adds the operations."""

    def __init__(
        self, engine: AsyncEngine, layout: Layout, table: sa.Table, *, owns_engine: bool
    ) -> None:
        self.engine = engine
        self.layout = layout
        self.table = table
        self._owns_engine = owns_engine
        self._crms: dict[str, _Crm] = {}
        self._id_type = _python_type(table.c[layout.id_column])
        self._rate_limits: sa.Table | None = None
        self._circuits: sa.Table | None = None
        #: paused CRMs where the database cannot share them (SQLite: one worker)
        self._local_circuits: dict[str, CircuitState] = {}
        self._history_settings: HistorySettings | None = None
        self._history_tables: tuple[sa.Table, sa.Table] | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, database: str | AsyncEngine, layout: Layout | None = None, *, create: bool = False
    ) -> Self:
        """Open the store on a database URL or the host's own :class:`AsyncEngine`.

        ``layout`` defaults to :meth:`Layout.default`. With ``create=True`` a default layout's table is
        created, and columns for CRMs it lacks are added (additive only). A host table (any other
        layout) is reflected, and must have every column the layout names.
        """
        layout = layout or Layout.default()
        owns = isinstance(database, str)
        engine = database_engine(database) if isinstance(database, str) else database
        try:
            async with engine.begin() as conn:
                if layout.managed:
                    table = default_table(layout)
                    if create:
                        await conn.run_sync(table.metadata.create_all)
                        await conn.run_sync(_add_missing_columns, table)
                    await conn.run_sync(_check_columns, table, layout)
                else:
                    table = await conn.run_sync(_reflect, layout)
        except CONNECTION_ERRORS as exc:
            if owns:
                await engine.dispose()
            raise unreachable(engine, exc) from None
        except Exception:
            if owns:
                await engine.dispose()
            raise
        return cls(engine, layout, table, owns_engine=owns)

    async def close(self) -> None:
        """Dispose of the engine if the store created it (a host's engine is left open)."""
        if self._owns_engine:
            await self.engine.dispose()

    async def create_schema(self) -> None:
        """Create the default layout's table and indexes (a no-op when they exist)."""
        if not self.layout.managed:
            raise ConfigurationError("create_schema only creates crmsync's default layout")
        async with self.engine.begin() as conn:
            await conn.run_sync(self.table.metadata.create_all)
            await conn.run_sync(_add_missing_columns, self.table)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def shares_rate_limits(self) -> bool:
        """Whether workers on other machines can share a CRM's budget through this database."""
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def _transaction(
        self, connection: AsyncConnection | None
    ) -> AsyncIterator[AsyncConnection]:
        if connection is not None:
            yield connection
            return
        try:
            async with self.engine.begin() as conn:
                yield conn
        except (OSError, sa_exc.InterfaceError) as exc:
            raise DatabaseUnavailableError(f"lost the database: {exc}") from exc
        except sa_exc.OperationalError as exc:
            raise StoreError(
                f"database error: {str(exc.orig or exc).splitlines()[0][:300]}"
            ) from exc

    @asynccontextmanager
    async def unit_of_work(self, handle: object = None) -> AsyncIterator[AsyncConnection]:
        """A transaction for one unit of work (e.g. one web request), to pass as ``connection=`` to the
        queue operations.

        ``handle`` is the host's ``AsyncSession`` or ``AsyncConnection`` (committed at the end, rolled
        back on error) or ``None`` (a transaction of the store's own engine). Hosts use it so that their
        web layer needs no SQLAlchemy of its own.
        """
        if handle is None:
            async with self.engine.begin() as conn:
                yield conn
        elif isinstance(handle, AsyncSession):
            conn = await handle.connection()
            try:
                yield conn
            except BaseException:
                await handle.rollback()
                raise
            await handle.commit()
        elif isinstance(handle, AsyncConnection):
            try:
                yield handle
            except BaseException:
                await handle.rollback()
                raise
            await handle.commit()
        else:
            raise TypeError(
                "the session dependency must yield an AsyncSession or AsyncConnection, "
                f"not {type(handle).__name__}"
            )

    # -- statement building --------------------------------------------------------------------------

    def _crm(self, crm: str) -> _Crm:
        bound = self._crms.get(crm)
        if bound is None:
            names = self.layout.columns_for(crm)
            col = self.table.c
            bound = _Crm(
                names=names,
                sync=col[names.sync_status],
                processing=col[names.processing_status],
                error=col[names.error],
                remote_id=col[names.remote_id],
                attempts=col[names.attempts],
                next_attempt_at=col[names.next_attempt_at],
                last_attempt_at=col[names.last_attempt_at] if names.last_attempt_at else None,
                claimed_at=col[names.claimed_at],
                failed_crm=col[names.failed_crm] if names.failed_crm else None,
            )
            self._crms[crm] = bound
        return bound

    @property
    def _id_column(self) -> sa.Column[Any]:
        return self.table.c[self.layout.id_column]

    def _transition(
        self, c: _Crm, event: Event, *, now: datetime | None = None
    ) -> tuple[sa.ColumnElement[bool], dict[str, Any]]:
        """The WHERE (allowed from-states) and SET (to-states) of ``event``, from the status machine."""
        rule = TRANSITIONS[event]
        conditions: list[sa.ColumnElement[bool]] = [
            _one_of(c.sync, [s.value for s in rule.from_sync])
        ]
        if rule.from_processing is not None:
            values = [p.value for p in rule.from_processing if p is not None]
            processing: sa.ColumnElement[bool] = _one_of(c.processing, values)
            if None in rule.from_processing:
                processing = sa.or_(processing, c.processing.is_(None))
            conditions.append(processing)
        changes: dict[str, Any] = {
            c.names.sync_status: rule.to_sync.value,
            c.names.processing_status: rule.to_processing.value if rule.to_processing else None,
        }
        if rule.clears_error:
            changes[c.names.error] = None
        if rule.resets_retry:
            changes |= self._reset_retry(c, now)
        return sa.and_(*conditions), changes

    def _reset_retry(self, c: _Crm, now: datetime | None) -> dict[str, Any]:
        if c.failed_crm is None:
            changes: dict[str, Any] = {c.names.attempts: 0, c.names.claimed_at: None}
            # A queued contact is due from now: the next-attempt time doubles as the queue order.
            changes[c.names.next_attempt_at] = self._at(c.next_attempt_at, now) if now else None
            return changes
        assert c.names.failed_crm is not None
        own = self._owns_retry(c)
        return {
            c.names.attempts: sa.case((own, 0), else_=c.attempts),
            c.names.next_attempt_at: sa.case((own, sa.null()), else_=c.next_attempt_at),
            c.names.failed_crm: sa.case((own, sa.null()), else_=c.failed_crm),
        }

    def _owns_retry(self, c: _Crm) -> sa.ColumnElement[bool]:
        assert c.failed_crm is not None
        return sa.or_(c.failed_crm.is_(None), c.failed_crm == c.names.crm)

    def _attempts(self, c: _Crm) -> sa.ColumnElement[Any]:
        if c.failed_crm is None:
            return c.attempts
        return sa.case((c.failed_crm == c.names.crm, c.attempts), else_=0)

    def _own_next_attempt(self, c: _Crm) -> sa.ColumnElement[Any]:
        if c.failed_crm is None:
            return c.next_attempt_at
        return sa.case((c.failed_crm == c.names.crm, c.next_attempt_at), else_=sa.null())

    def _due(self, c: _Crm, now: datetime) -> sa.ColumnElement[bool]:
        queued = c.processing == ProcessingStatus.QUEUED.value
        at = self._at(c.next_attempt_at, now)
        if c.failed_crm is None:
            return sa.and_(queued, sa.or_(c.next_attempt_at.is_(None), c.next_attempt_at <= at))
        # Shared retry columns: another CRM's backoff must not delay this one.
        return sa.and_(
            queued,
            sa.or_(
                c.failed_crm.is_distinct_from(c.names.crm),
                c.next_attempt_at.is_(None),
                c.next_attempt_at <= at,
            ),
        )

    def _due_since(self, c: _Crm) -> sa.ColumnElement[Any]:
        if c.failed_crm is None:
            return sa.func.coalesce(c.next_attempt_at, c.claimed_at)
        updated: Any = self.table.c[self.layout.updated_at] if self.layout.updated_at else None
        if (
            updated is not None
            and self.dialect == "postgresql"
            and not getattr(updated.type, "timezone", False)
        ):
            # A naive updated_at holds UTC (crmsync writes it so): say so, or COALESCE with the
            # timestamptz next-attempt column reads it in the session's time zone.
            updated = sa.func.timezone("UTC", updated)
        return sa.func.coalesce(self._own_next_attempt(c), updated)

    def _touch(self, now: datetime) -> dict[str, Any]:
        if not self.layout.updated_at:
            return {}
        return {self.layout.updated_at: self._at(self.table.c[self.layout.updated_at], now)}

    def _release_values(self, c: _Crm) -> dict[str, Any]:
        return {c.names.claimed_at: None} if c.names.claim_is_token else {}

    def _parse_ids(self, ids: Iterable[ContactId | str]) -> list[Any]:
        if isinstance(ids, (str, bytes)):
            raise InvalidRequestError("ids must be a list of contact ids, not one string")
        parsed: dict[Any, None] = {}
        for value in ids:
            parsed[_coerce_id(value, self._id_type, "contact id")] = None
        return list(parsed)

    def _at(self, column: sa.Column[Any], moment: datetime | None) -> datetime | None:
        """``moment`` as the column stores it: aware UTC, or naive UTC for columns without a time zone."""
        if moment is None:
            return None
        moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
        timezone_aware = bool(getattr(column.type, "timezone", False)) and self.dialect != "sqlite"
        return moment if timezone_aware else moment.replace(tzinfo=None)


def _one_of(column: sa.Column[Any], values: Sequence[str]) -> sa.ColumnElement[bool]:
    # OR of equalities rather than IN: IN's expanding parameters cannot be used with executemany.
    if not values:
        return sa.false()
    return sa.or_(*(column == value for value in sorted(values)))


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(moment: Any) -> datetime | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _enum_value(value: Any) -> Any:
    return value.value if hasattr(value, "value") else value


def _python_type(column: sa.Column[Any]) -> type:
    try:
        return column.type.python_type
    except NotImplementedError:
        return str


def _coerce_id(value: Any, kind: type, what: str) -> Any:
    try:
        if kind is uuid.UUID:
            return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
        if kind is int:
            if isinstance(value, bool):
                raise ValueError
            return int(value)
    except (ValueError, TypeError, AttributeError):
        raise InvalidRequestError(
            f"{what} {str(value)[:60]!r} is not a valid {kind.__name__}"
        ) from None
    return str(value)


def contact_from_row(row: Any) -> Contact:
    """A contact from a row of id, the contact fields (``CONTACT_FIELDS`` order) and attempts."""
    return Contact(
        id=row[0],
        email=row[1],
        name=row[2],
        phone_number=row[3],
        email_type=_enum_value(row[4]),
        has_gmail=row[5],
        source_url=row[6],
        domain_id=row[7],
        page_id=row[8],
        context=row[9],
        attempts=int(row[10] or 0),
    )
