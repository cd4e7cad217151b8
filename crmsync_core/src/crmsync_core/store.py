"""The database: every SQL statement crmsync runs is built in this module.

:class:`Store` works on the host's own contacts table through SQLAlchemy Core (async): PostgreSQL through
psycopg 3 by default or a host-supplied engine (asyncpg in ScraperSky), SQLite through aiosqlite. Every
state change is derived from :data:`crmsync_core.status.TRANSITIONS`: the table's ``from`` states become
the ``WHERE`` and its ``to`` states the ``SET`` of one set-based statement, so rows in any other state are
left alone and no code path can make a change the table lacks.

Queue operations take an optional ``connection``: given one, they run inside the caller's transaction
(and do not commit), so a host can queue contacts atomically with its own writes.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from .contacts import Contact, ContactId
from .errors import ConfigurationError, DatabaseUnavailableError, InvalidRequestError, StoreError
from .filters import ContactFilter
from .layout import CONTACT_FIELDS, CrmColumns, Layout
from .ratelimit import Bucket, Lease, Slot, issue_slots, prune, remove
from .status import SELECTABLE, TRANSITIONS, Event, ProcessingStatus, SyncStatus

#: ids per statement in queue-by-ids operations (SQLite allows 32,766 parameters per statement)
ID_CHUNK = 2_000
#: outcomes per UPDATE ... FROM (VALUES ...) statement (up to 5 parameters each)
RECORD_CHUNK = 1_000
_STATUS_LENGTH = 16


@dataclass(frozen=True, slots=True)
class QueueResult:
    """What a queue operation did."""

    queued: int = 0
    already_queued: int = 0
    #: refused at queue time (no e-mail address): now ``Skipped`` with the reason
    skipped: int = 0
    #: ids that match no contact
    not_found: int = 0

    def __add__(self, other: QueueResult) -> QueueResult:
        return QueueResult(
            self.queued + other.queued,
            self.already_queued + other.already_queued,
            self.skipped + other.skipped,
            self.not_found + other.not_found,
        )


@dataclass(frozen=True, slots=True)
class StatusSummary:
    """How one CRM's contacts stand."""

    crm: str
    counts: Mapping[SyncStatus, int]
    total: int
    #: queued and due now
    due: int
    #: queued again after a transient failure
    retrying: int
    #: seconds since the longest-waiting due contact became due (``None`` when nothing is due)
    oldest_due_seconds: float | None
    #: when the circuit breaker paused the CRM (``None``: not paused)
    paused_since: datetime | None = None
    #: when the paused CRM is probed next
    probe_at: datetime | None = None
    #: Complete contacts changed (``updated_at``) since their last delivery or check: what
    #: ``Engine.queue_changed`` compares next (``None``: no ``updated_at`` or no fingerprint table)
    out_of_date: int | None = None


@dataclass(frozen=True, slots=True)
class StoredFingerprint:
    """What crmsync remembers of a contact's last delivery to one CRM."""

    fingerprint: str
    delivered_at: datetime
    #: the contact's current queueing is a user's re-selection of it while it was ``Complete``
    reselected: bool


@dataclass(frozen=True, slots=True)
class CircuitState:
    """A CRM paused by the circuit breaker: since when, and when it is probed next."""

    crm: str
    opened_at: datetime
    probe_at: datetime
    cooldown_seconds: float


@dataclass(frozen=True, slots=True)
class ContactState:
    """One contact's state for one CRM."""

    sync_status: SyncStatus
    processing_status: ProcessingStatus | None
    error: str | None
    remote_id: str | None
    attempts: int
    next_attempt_at: datetime | None


@dataclass(frozen=True, slots=True)
class Claim:
    """Contacts taken from the queue by one worker; ``claimed_at`` identifies the claim."""

    crm: str
    contacts: list[Contact]
    claimed_at: datetime


@dataclass(frozen=True, slots=True)
class Resolution:
    """What happens to one claimed contact: an event of the status machine with its data."""

    contact_id: ContactId
    event: Event
    remote_id: str | None = None
    error: str | None = None
    attempts: int = 0
    next_attempt_at: datetime | None = None
    #: recorded as the remote id only when the CRM gave none and none is recorded yet
    fallback_id: str | None = None
    #: change detection: the fingerprint of the payload delivered (success only)
    fingerprint: str | None = None
    #: completed without a request: the payload is the one delivered before
    unchanged: bool = False


@dataclass(frozen=True, slots=True)
class RecordResult:
    #: the contacts whose result was written
    written_ids: frozenset[ContactId]
    #: results refused because the claim was no longer this worker's (it expired and was taken back)
    stale: int

    @property
    def written(self) -> int:
        return len(self.written_ids)


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
    statements: dict[str, Any] = field(default_factory=dict)


def database_engine(url: str) -> AsyncEngine:
    """An async engine for ``url``: ``postgresql://`` uses psycopg 3, ``sqlite://`` uses aiosqlite.

    psycopg is configured never to prepare statements on the server, so that it works behind
    transaction poolers (Supavisor, PgBouncer in transaction mode).
    """
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif parsed.drivername == "sqlite":
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    if parsed.drivername == "postgresql+psycopg":
        # pre-ping: a pooled connection the server dropped (restart, pg_terminate_backend, a pooler's
        # idle timeout) is replaced when taken from the pool instead of failing its next statement.
        return create_async_engine(
            parsed, connect_args={"prepare_threshold": None}, pool_size=10, pool_pre_ping=True
        )
    if parsed.drivername.startswith("sqlite"):
        engine = create_async_engine(parsed, connect_args={"timeout": 30})

        @sa.event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
            cursor = dbapi_connection.cursor()
            # WAL lets `crmsync status` read while a worker writes.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_async_engine(parsed, pool_pre_ping=True)


def default_table(layout: Layout, metadata: sa.MetaData | None = None) -> sa.Table:
    """The SQLAlchemy table of a default (crmsync-managed) layout."""
    metadata = metadata or sa.MetaData()
    columns: list[Any] = [
        sa.Column(layout.id_column, sa.Uuid, primary_key=True, default=uuid.uuid4),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("email", sa.String(320)),
        sa.Column("name", sa.String(500)),
        sa.Column("phone_number", sa.String(64)),
        sa.Column("email_type", sa.String(16)),
        sa.Column("has_gmail", sa.Boolean, server_default=sa.false()),
        sa.Column("source_url", sa.Text),
        sa.Column("domain_id", sa.Uuid),
        sa.Column("page_id", sa.Uuid),
        sa.Column("context", sa.Text),
    ]
    sync_values = ", ".join(f"'{s.value}'" for s in SyncStatus)
    processing_values = ", ".join(f"'{p.value}'" for p in ProcessingStatus)
    for names in layout.crms.values():
        columns += _crm_columns(names)
        columns += [
            sa.CheckConstraint(
                f"{names.sync_status} IN ({sync_values})",
                name=f"ck_{layout.table}_{names.crm}_sync",
            ),
            sa.CheckConstraint(
                f"{names.processing_status} IN ({processing_values})",
                name=f"ck_{layout.table}_{names.crm}_processing",
            ),
        ]
    table = sa.Table(layout.table, metadata, *columns, schema=layout.schema)
    for names in layout.crms.values():
        _crm_indexes(table, names)
    # crmsync's own table, created with the contacts table (create_all, `crmsync schema --apply`).
    if _qualified(FINGERPRINT_TABLE, layout.schema) not in metadata.tables:
        fingerprint_table(metadata, schema=layout.schema)
    sa.Index(f"ix_{layout.table}_email", table.c.email)
    return table


def _crm_columns(names: CrmColumns) -> list[sa.Column[Any]]:
    return [
        sa.Column(
            names.sync_status, sa.String(_STATUS_LENGTH), nullable=False, server_default="New"
        ),
        sa.Column(names.processing_status, sa.String(_STATUS_LENGTH)),
        sa.Column(names.error, sa.Text),
        sa.Column(names.remote_id, sa.String(255)),
        *_retry_columns(names),
    ]


def _retry_columns(names: CrmColumns) -> list[sa.Column[Any]]:
    columns: list[sa.Column[Any]] = [
        sa.Column(names.attempts, sa.Integer, nullable=False, server_default="0"),
        sa.Column(names.next_attempt_at, sa.DateTime(timezone=True)),
        sa.Column(names.claimed_at, sa.DateTime(timezone=True)),
    ]
    if names.last_attempt_at:
        columns.append(sa.Column(names.last_attempt_at, sa.DateTime(timezone=True)))
    return columns


def _crm_indexes(table: sa.Table, names: CrmColumns) -> None:
    # The claim query reads due contacts in next-attempt order; only queued and processing rows are
    # indexed, so the index stays small however many contacts are complete.
    sa.Index(
        f"ix_{table.name}_{names.crm}_due",
        table.c[names.processing_status],
        table.c[names.next_attempt_at],
        postgresql_where=table.c[names.processing_status].is_not(None),
        sqlite_where=table.c[names.processing_status].is_not(None),
    )
    sa.Index(f"ix_{table.name}_{names.sync_status}", table.c[names.sync_status])


def schema_sql(layout: Layout, dialect: str = "postgresql") -> str:
    """The DDL of a default layout, for users who apply schema changes by hand."""
    from sqlalchemy.dialects import sqlite

    target = postgresql.dialect() if dialect == "postgresql" else sqlite.dialect()  # type: ignore[no-untyped-call]
    table = default_table(layout)
    statements = [str(sa.schema.CreateTable(table).compile(dialect=target)).strip() + ";"]
    statements += [
        str(sa.schema.CreateIndex(index).compile(dialect=target)).strip() + ";"
        for index in sorted(table.indexes, key=lambda i: str(i.name))
    ]
    fingerprints = table.metadata.tables[_qualified(FINGERPRINT_TABLE, layout.schema)]
    statements.append(
        str(sa.schema.CreateTable(fingerprints).compile(dialect=target)).strip() + ";"
    )
    return "\n\n".join(statements) + "\n"


async def schema_sql_for(database: str | AsyncEngine, layout: Layout) -> str:
    """What a database needs for a default ``layout``: the whole DDL when the table is missing, else the
    statements that add what it lacks (nothing when it is complete)."""
    engine = database_engine(database) if isinstance(database, str) else database
    try:
        async with engine.connect() as conn:
            table = default_table(layout)
            exists = await conn.run_sync(
                lambda c: sa.inspect(c).has_table(table.name, schema=table.schema)
            )
            if not exists:
                return schema_sql(layout, engine.dialect.name)
            statements = await conn.run_sync(missing_columns_sql, table)
            statements += await conn.run_sync(_missing_fingerprint_table_sql, layout.schema)
    except (OSError, sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        url = engine.url.render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise DatabaseUnavailableError(f"cannot reach the database {url}: {reason}") from None
    finally:
        if isinstance(database, str):
            await engine.dispose()
    return "".join(f"{statement};\n" for statement in statements)


def scrapersky_migration_sql(table: str = "contacts") -> str:
    """Additive SQL that gives ScraperSky's table per-CRM retry state (``Layout.scrapersky(per_crm_retry=True)``).

    It only adds columns and indexes; no existing column, type or value changes. The shared
    ``retry_count``/``next_retry_at``/``last_failed_crm`` columns stay as they are for other code.
    """
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    lines = ["BEGIN;"]
    for names in Layout.scrapersky(per_crm_retry=True, table=table).crms.values():
        for column in _retry_columns(names):
            ddl = sa.schema.CreateColumn(column).compile(dialect=dialect)
            lines.append(f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {str(ddl).strip()};")
        lines.append(
            f"CREATE INDEX IF NOT EXISTS ix_{table}_{names.crm}_due ON {table} "
            f"({names.processing_status}, {names.next_attempt_at}) "
            f"WHERE {names.processing_status} IS NOT NULL;"
        )
    create = sa.schema.CreateTable(fingerprint_table(), if_not_exists=True)
    lines.append(str(create.compile(dialect=dialect)).strip() + ";")
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


RATE_LIMIT_TABLE = "crmsync_rate_slots"
CIRCUIT_TABLE = "crmsync_circuits"
FINGERPRINT_TABLE = "crmsync_fingerprints"
#: how long a store believes that the fingerprint table is missing before it looks again
_FINGERPRINT_TABLE_RECHECK_SECONDS = 60.0


def fingerprint_table(metadata: sa.MetaData | None = None, schema: str | None = None) -> sa.Table:
    """crmsync's own table of delivered payloads: per CRM and contact, the fingerprint of what was last
    delivered and when (see :mod:`crmsync_core.changes`). The contacts table stays as it is."""
    return sa.Table(
        FINGERPRINT_TABLE,
        metadata or sa.MetaData(),
        sa.Column("crm", sa.String(64), primary_key=True),
        # Text, whatever the contacts table's id type: the table fits every host.
        sa.Column("contact_id", sa.String(255), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=False),
        # the last time crmsync knew the CRM to hold this payload (a delivery, or a comparison)
        sa.Column("checked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reselected", sa.Boolean, nullable=False, server_default=sa.false()),
        schema=schema,
    )


def _qualified(name: str, schema: str | None) -> str:
    return f"{schema}.{name}" if schema else name


def _missing_fingerprint_table_sql(sync_conn: sa.Connection, schema: str | None) -> list[str]:
    if sa.inspect(sync_conn).has_table(FINGERPRINT_TABLE, schema=schema):
        return []
    create = sa.schema.CreateTable(fingerprint_table(schema=schema))
    return [str(create.compile(dialect=sync_conn.dialect)).strip()]


def circuit_table(metadata: sa.MetaData | None = None, schema: str | None = None) -> sa.Table:
    """crmsync's own table of paused CRMs, one row per paused CRM (PostgreSQL only)."""
    return sa.Table(
        CIRCUIT_TABLE,
        metadata or sa.MetaData(),
        sa.Column("crm", sa.String(64), primary_key=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probe_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cooldown_seconds", sa.Float, nullable=False),
        schema=schema,
    )


def rate_limit_table(metadata: sa.MetaData | None = None, schema: str | None = None) -> sa.Table:
    """crmsync's own table of shared request budgets, one row per CRM bucket (PostgreSQL only).

    ``slots`` holds the send slots issued within the last window, as start, end, start, end, ... (epoch
    seconds, the database's clock),
    ``paused_until`` the end of the latest pause the CRM announced, ``version`` makes each change a
    compare-and-swap (see :class:`crmsync_core.ratelimit.Limiter`).
    """
    return sa.Table(
        RATE_LIMIT_TABLE,
        metadata or sa.MetaData(),
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("slots", postgresql.ARRAY(postgresql.DOUBLE_PRECISION), nullable=False),
        sa.Column("paused_until", postgresql.DOUBLE_PRECISION, nullable=False),
        schema=schema,
    )


@dataclass(slots=True)
class _SlotRow:
    version: int
    slots: list[Slot]
    paused_until: float


def _pairs(flat: Sequence[float]) -> list[Slot]:
    return [(float(flat[i]), float(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def _flat(slots: Sequence[Slot]) -> list[float]:
    return [t for slot in slots for t in slot]


class SlotLedger:
    """The fleet's :class:`~crmsync_core.ratelimit.Ledger`: slots kept in :data:`RATE_LIMIT_TABLE`.

    Each worker keeps the last row it saw; a lease or a give-back is one ``UPDATE ... WHERE version = v``
    computed from it, and only when another worker changed the row in between does it read the row again
    (one more statement). Times are the database's clock (``clock_timestamp()``), which every machine
    shares; ``clock`` replaces it in tests.
    """

    def __init__(self, store: Store, clock: Callable[[], float] | None = None) -> None:
        self._store = store
        self._clock = clock
        self._rows: dict[str, _SlotRow] = {}
        self._offset: float | None = None  # database clock minus time.monotonic()
        self._best_round_trip = math.inf
        #: statements sent (for the benchmarks)
        self.statements = 0

    def now(self) -> float:
        """The database's clock, as estimated from the answers with the shortest round trips."""
        if self._clock is not None:
            return self._clock()
        return time.monotonic() + (self._offset or 0.0)

    def _db_now(self, table: sa.Table) -> Any:
        if self._clock is not None:
            return sa.literal(self._clock(), postgresql.DOUBLE_PRECISION)
        return sa.extract("epoch", sa.func.clock_timestamp())

    def _saw(self, db_now: float, sent: float) -> None:
        # The database read its clock somewhere within the round trip: the shorter the round trip (a
        # busy event loop lengthens it), the better the estimate. Older best round trips slowly age.
        received = time.monotonic()
        round_trip = received - sent
        self._best_round_trip *= 1.05
        if self._clock is None and round_trip <= self._best_round_trip:
            self._best_round_trip = round_trip
            self._offset = float(db_now) - (sent + received) / 2

    async def _read(self, key: str) -> _SlotRow:
        table = await self._store._rate_limit_table()
        statement = (
            postgresql.insert(table)
            .values(key=key, version=0, slots=[], paused_until=0.0)
            .on_conflict_do_update(index_elements=[table.c.key], set_={"version": table.c.version})
            .returning(table.c.version, table.c.slots, table.c.paused_until, self._db_now(table))
        )
        sent = time.monotonic()
        self.statements += 1
        async with self._store._transaction(None) as conn:
            version, slots, paused, db_now = (await conn.execute(statement)).one()
        self._saw(db_now, sent)
        row = self._rows[key] = _SlotRow(int(version), _pairs(slots), float(paused))
        return row

    async def _swap(self, key: str, row: _SlotRow, slots: list[Slot]) -> tuple[float, float] | None:
        """Write ``slots`` if nobody changed the row since ``row``; the pause and the clock, else ``None``."""
        table = await self._store._rate_limit_table()
        statement = (
            sa.update(table)
            .where(table.c.key == key, table.c.version == row.version)
            .values(version=table.c.version + 1, slots=_flat(slots))
            .returning(table.c.paused_until, self._db_now(table))
        )
        sent = time.monotonic()
        self.statements += 1
        async with self._store._transaction(None) as conn:
            result = (await conn.execute(statement)).one_or_none()
        if result is None:
            self._rows.pop(key, None)
            return None
        paused, db_now = float(result[0]), float(result[1])
        self._saw(db_now, sent)
        self._rows[key] = _SlotRow(row.version + 1, slots, paused)
        return paused, db_now

    async def lease(
        self,
        key: str,
        bucket: Bucket,
        count: int,
        returned: Sequence[Slot],
        not_before: float,
        validity: float | None = None,
    ) -> Lease:
        while True:
            row = self._rows.get(key) or await self._read(key)
            start = max(self.now(), not_before, row.paused_until)
            held = prune(remove(row.slots, returned), start, bucket)
            slots = issue_slots(held, count, bucket=bucket, start=start, validity=validity)
            done = await self._swap(key, row, held + slots)
            if done is not None:
                paused, db_now = done
                if paused > start:  # another worker paused the bucket in between: start after it
                    returned = slots
                    continue
                return Lease(slots, paused, db_now)

    async def give_back(self, key: str, bucket: Bucket, returned: Sequence[Slot]) -> None:
        while True:
            row = self._rows.get(key) or await self._read(key)
            if await self._swap(key, row, remove(row.slots, returned)) is not None:
                return

    async def pause(self, key: str, bucket: Bucket, until: float) -> None:
        table = await self._store._rate_limit_table()
        statement = (
            postgresql.insert(table)
            .values(key=key, version=0, slots=[], paused_until=until)
            .on_conflict_do_update(
                index_elements=[table.c.key],
                set_={
                    # The latest reset wins: a pause is a moment, never added to another.
                    "paused_until": sa.func.greatest(table.c.paused_until, until),
                    "version": table.c.version + 1,
                },
            )
            .returning(table.c.version, table.c.paused_until)
        )
        self.statements += 1
        async with self._store._transaction(None) as conn:
            version, paused = (await conn.execute(statement)).one()
        row = self._rows.get(key)
        if row is not None and row.version + 1 == version:
            row.version, row.paused_until = int(version), float(paused)
        else:
            self._rows.pop(key, None)


class Store:
    """The contacts table, as crmsync reads and writes it. Create with :meth:`connect`."""

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
        self._fingerprints: sa.Table | None = None
        self._fingerprints_missing_since: float | None = None

    # -- lifecycle -----------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls, database: str | AsyncEngine, layout: Layout | None = None, *, create: bool = False
    ) -> Store:
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
        except (OSError, sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
            if owns:
                await engine.dispose()
            url = engine.url.render_as_string(hide_password=True)
            reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
            raise DatabaseUnavailableError(f"cannot reach the database {url}: {reason}") from None
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
        contacts = [
            Contact(
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
            for row in rows
        ]
        return Claim(crm, contacts, now)

    async def record(
        self, claim: Claim, resolutions: Sequence[Resolution], *, now: datetime
    ) -> RecordResult:
        """Write the outcome of a claim in bulk, one statement per kind of event, in one transaction.

        A row is written only if it is still in this claim (``Processing`` and, where the layout keeps a
        claim time of its own, claimed at ``claim.claimed_at``); the others are counted as stale.
        """
        c = self._crm(claim.crm)
        groups: dict[Event, list[Resolution]] = {}
        for resolution in resolutions:
            groups.setdefault(resolution.event, []).append(resolution)
        written: set[ContactId] = set()
        async with self._transaction(None) as conn:
            for event, group in groups.items():
                for start in range(0, len(group), RECORD_CHUNK):
                    statement = self._record_statement(
                        c, event, claim, group[start : start + RECORD_CHUNK], now
                    )
                    written.update(row[0] for row in await conn.execute(statement))
            await self._record_fingerprints(conn, claim.crm, resolutions, written, now)
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

    # -- shared request budgets ----------------------------------------------------------------------

    @property
    def shares_rate_limits(self) -> bool:
        """Whether workers on other machines can share a CRM's budget through this database."""
        return self.dialect == "postgresql"

    def rate_ledger(self, clock: Callable[[], float] | None = None) -> SlotLedger:
        """The ledger of shared request budgets (PostgreSQL); ``clock`` replaces the database's in tests."""
        return SlotLedger(self, clock)

    async def _rate_limit_table(self) -> sa.Table:
        if self._rate_limits is None:
            table = rate_limit_table(schema=self.layout.schema)
            try:
                async with self._transaction(None) as conn:
                    await conn.run_sync(table.create, checkfirst=True)
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
                # Another worker created it between our check and our CREATE.
                pass
            self._rate_limits = table
        return self._rate_limits

    # -- circuit breaker -----------------------------------------------------------------------------

    async def circuit(self, crm: str) -> CircuitState | None:
        """Whether ``crm`` is paused by the circuit breaker, and until when (``None``: not paused)."""
        if not self.shares_rate_limits:
            return self._local_circuits.get(crm)
        # Reading never creates the table: `crmsync status` may run with a read-only role.
        table = (
            self._circuits
            if self._circuits is not None
            else circuit_table(schema=self.layout.schema)
        )
        statement = sa.select(table.c.opened_at, table.c.probe_at, table.c.cooldown_seconds).where(
            table.c.crm == crm
        )
        try:
            async with self._transaction(None) as conn:
                row = (await conn.execute(statement)).one_or_none()
        except sa_exc.ProgrammingError:
            return None  # no table yet: no CRM was ever paused
        if row is None:
            return None
        opened, probe = _aware(row[0]), _aware(row[1])
        assert opened is not None
        assert probe is not None
        return CircuitState(crm, opened, probe, float(row[2]))

    async def open_circuit(
        self, crm: str, *, now: datetime, cooldown: float, max_cooldown: float
    ) -> CircuitState:
        """Pause ``crm``: first for ``cooldown`` seconds; again while paused, for twice the last
        cool-down (at most ``max_cooldown``). Every worker sharing the database sees it."""
        if not self.shares_rate_limits:
            last = self._local_circuits.get(crm)
            seconds = min(last.cooldown_seconds * 2, max_cooldown) if last else cooldown
            state = CircuitState(
                crm, last.opened_at if last else now, now + timedelta(seconds=seconds), seconds
            )
            self._local_circuits[crm] = state
            return state
        table = await self._circuit_table()
        grown = sa.func.least(table.c.cooldown_seconds * 2, max_cooldown)
        statement = (
            postgresql.insert(table)
            .values(
                crm=crm,
                opened_at=now,
                probe_at=now + timedelta(seconds=cooldown),
                cooldown_seconds=cooldown,
            )
            .on_conflict_do_update(
                index_elements=[table.c.crm],
                set_={
                    "cooldown_seconds": grown,
                    "probe_at": sa.literal(now, sa.DateTime(timezone=True))
                    + sa.func.make_interval(0, 0, 0, 0, 0, 0, grown),
                },
            )
            .returning(table.c.opened_at, table.c.probe_at, table.c.cooldown_seconds)
        )
        async with self._transaction(None) as conn:
            row = (await conn.execute(statement)).one()
        opened, probe = _aware(row[0]), _aware(row[1])
        assert opened is not None
        assert probe is not None
        return CircuitState(crm, opened, probe, float(row[2]))

    async def close_circuit(self, crm: str) -> None:
        """The CRM answers again: resume it for every worker."""
        if not self.shares_rate_limits:
            self._local_circuits.pop(crm, None)
            return
        table = await self._circuit_table()
        async with self._transaction(None) as conn:
            await conn.execute(sa.delete(table).where(table.c.crm == crm))

    async def _circuit_table(self) -> sa.Table:
        if self._circuits is None:
            table = circuit_table(schema=self.layout.schema)
            try:
                async with self._transaction(None) as conn:
                    await conn.run_sync(table.create, checkfirst=True)
            except (sa_exc.IntegrityError, sa_exc.ProgrammingError):
                # Another worker created it between our check and our CREATE.
                pass
            self._circuits = table
        return self._circuits

    # -- change detection (fingerprints of delivered payloads) ---------------------------------------

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
        for start in range(0, len(delivered), RECORD_CHUNK):
            insert = (
                postgresql.insert(table) if self.dialect == "postgresql" else sqlite_insert(table)
            )
            statement = insert.on_conflict_do_update(
                index_elements=[table.c.crm, table.c.contact_id],
                set_={
                    "fingerprint": insert.excluded.fingerprint,
                    "delivered_at": insert.excluded.delivered_at,
                    "checked_at": insert.excluded.checked_at,
                    "reselected": False,
                },
            )
            await conn.execute(statement, delivered[start : start + RECORD_CHUNK])
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
        or check where the table has ``updated_at``, else every one with a fingerprint. One streamed
        query; nothing is loaded whole."""
        c = self._crm(crm)
        table = await self._fingerprint_table()
        if table is None:
            raise ConfigurationError(
                f"there is no {FINGERPRINT_TABLE} table, so crmsync does not know what it delivered; "
                f"{_schema_hint(self.layout)}"
            )
        fields = [self.table.c[self.layout.fields[f]] for f in CONTACT_FIELDS]
        statement = (
            sa.select(self._id_column, *fields, self._attempts(c), table.c.fingerprint)
            .select_from(self._delivered_join(c, table))
            .where(c.sync == SyncStatus.COMPLETE.value, self._changed_since_checked(table))
            .execution_options(yield_per=chunk)
        )
        try:
            async with self.engine.connect() as conn:
                result = await conn.stream(statement)
                async for rows in result.partitions(chunk):
                    yield [(_contact(row), str(row[-1])) for row in rows]
        except (OSError, sa_exc.InterfaceError) as exc:
            raise DatabaseUnavailableError(f"lost the database: {exc}") from exc
        except sa_exc.OperationalError as exc:
            raise StoreError(
                f"database error: {str(exc.orig or exc).splitlines()[0][:300]}"
            ) from exc

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
        return [_contact(row) for row in rows]

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

    def _record_statement(
        self, c: _Crm, event: Event, claim: Claim, group: Sequence[Resolution], now: datetime
    ) -> Any:
        """One ``UPDATE ... FROM (VALUES ...)`` for a group of contacts that met the same event: one
        statement and one exact row count, whatever the driver."""
        condition, values = self._transition(c, event)
        columns = [sa.column("contact_id", self._id_column.type), sa.column("error", c.error.type)]
        rows: list[tuple[Any, ...]] = [(r.contact_id, r.error) for r in group]
        if event is Event.SUCCEED:
            columns += [
                sa.column("remote_id", c.remote_id.type),
                sa.column("fallback_id", c.remote_id.type),
            ]
            rows = [(*row, r.remote_id, r.fallback_id) for row, r in zip(rows, group, strict=True)]
        if event in (Event.RETRY, Event.FAIL):
            columns += [
                sa.column("attempts", c.attempts.type),
                sa.column("next_attempt_at", c.next_attempt_at.type),
            ]
            rows = [
                (*row, r.attempts, self._at(c.next_attempt_at, r.next_attempt_at))
                for row, r in zip(rows, group, strict=True)
            ]
        outcome = self._outcome_rows(columns, rows)
        where = [self._id_column == outcome.c.contact_id, condition]
        if c.names.claim_is_token:
            where.append(c.claimed_at == self._at(c.claimed_at, claim.claimed_at))
            values[c.names.claimed_at] = None
        values[c.names.error] = self._typed(outcome.c.error, c.error)
        if event is Event.SUCCEED:
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
                values[c.names.last_attempt_at] = self._at(c.last_attempt_at, now)
            if c.failed_crm is not None and c.names.failed_crm:
                values[c.names.failed_crm] = c.names.crm
        values |= self._touch(now)
        return sa.update(self.table).where(*where).values(values).returning(self._id_column)

    def _outcome_rows(
        self, columns: list[sa.ColumnClause[Any]], rows: list[tuple[Any, ...]]
    ) -> Any:
        """The outcomes as a table to join in an UPDATE.

        On PostgreSQL, ``unnest`` of one array per column: the statement is the same for every batch, so
        SQLAlchemy compiles it once (a VALUES list of literal rows costs a compilation per batch, which
        was most of the engine's CPU). SQLite has no arrays: a VALUES CTE there.
        """
        if self.dialect == "postgresql":
            arrays = [
                sa.bindparam(
                    f"outcome_{column.name}", list(values), type_=postgresql.ARRAY(column.type)
                )
                for column, values in zip(columns, zip(*rows, strict=True), strict=True)
            ]
            return sa.func.unnest(*arrays).table_valued(*columns, name="outcome").render_derived()
        # A CTE rather than FROM (VALUES ...) AS alias (columns): SQLite only knows the former. Written
        # as text because SQLAlchemy 2.0 has no VALUES CTE (Values.cte() came in 2.1), and RECURSIVE
        # because 2.0 names a CTE's columns only then; SQLite accepts it on a plain VALUES list.
        params = [
            sa.bindparam(f"outcome_{r}_{k}", value, type_=column.type)
            for r, row in enumerate(rows)
            for k, (column, value) in enumerate(zip(columns, row, strict=True))
        ]
        values = ", ".join(
            "(" + ", ".join(f":outcome_{r}_{k}" for k in range(len(columns))) + ")"
            for r in range(len(rows))
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

    def _filter_clause(self, crm: str, f: ContactFilter) -> sa.ColumnElement[bool]:
        c = self._crm(crm)
        col = self.table.c
        fields = self.layout.fields
        conditions: list[sa.ColumnElement[bool]] = []
        if f.curation_status is not None:
            if not self.layout.curation_status:
                raise InvalidRequestError("this contacts table has no curation status to filter on")
            conditions.append(col[self.layout.curation_status] == f.curation_status)
        if f.processing_status is not None:
            conditions.append(
                c.processing.is_(None)
                if f.processing_status == "none"
                else c.processing == f.processing_status
            )
        if f.sync_status is not None:
            conditions.append(c.sync == f.sync_status.value)
        if f.email_type is not None:
            conditions.append(col[fields["email_type"]] == f.email_type.value)
        for name in ("domain_id", "page_id"):
            value = getattr(f, name)
            if value is not None:
                column = col[fields[name]]
                conditions.append(column == _coerce_id(value, _python_type(column), name))
        if f.email_contains is not None:
            conditions.append(col[fields["email"]].icontains(f.email_contains, autoescape=True))
        if f.name_contains is not None:
            conditions.append(col[fields["name"]].icontains(f.name_contains, autoescape=True))
        if f.has_gmail is not None:
            conditions.append(col[fields["has_gmail"]] == f.has_gmail)
        return sa.and_(sa.true(), *conditions)

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


def _contact(row: Any) -> Contact:
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


def _reflect(sync_conn: sa.Connection, layout: Layout) -> sa.Table:
    metadata = sa.MetaData()
    try:
        table = sa.Table(layout.table, metadata, autoload_with=sync_conn, schema=layout.schema)
    except sa_exc.NoSuchTableError:
        raise ConfigurationError(
            f"there is no table {layout.table!r} in this database; {_schema_hint(layout)}"
        ) from None
    _check_columns(sync_conn, table, layout)
    return table


def _check_columns(sync_conn: sa.Connection, table: sa.Table, layout: Layout) -> None:
    inspector = sa.inspect(sync_conn)
    if not inspector.has_table(table.name, schema=table.schema):
        raise ConfigurationError(
            f"there is no table {table.name!r} in this database; {_schema_hint(layout)}"
        )
    present = {column["name"] for column in inspector.get_columns(table.name, schema=table.schema)}
    needed = {layout.id_column, *layout.fields.values()}
    for names in layout.crms.values():
        needed |= {
            names.sync_status,
            names.processing_status,
            names.error,
            names.remote_id,
            names.attempts,
            names.next_attempt_at,
            names.claimed_at,
        }
        needed |= {n for n in (names.last_attempt_at, names.failed_crm) if n}
    if layout.updated_at:
        needed.add(layout.updated_at)
    missing = sorted(needed - present)
    if missing:
        raise ConfigurationError(
            f"table {table.name!r} lacks the columns {', '.join(missing)}; {_schema_hint(layout)}"
        )


def _schema_hint(layout: Layout) -> str:
    if layout.managed:
        return "`crmsync schema` prints the SQL that creates or completes it (`--apply` runs it)"
    return "`crmsync schema --scrapersky` prints the additive SQL for ScraperSky's table"


def missing_columns_sql(sync_conn: sa.Connection, table: sa.Table) -> list[str]:
    """``ALTER TABLE ... ADD COLUMN`` and ``CREATE INDEX`` statements that complete an existing default
    table, e.g. after an adapter for another CRM was installed (additive only)."""
    inspector = sa.inspect(sync_conn)
    present = {column["name"] for column in inspector.get_columns(table.name, schema=table.schema)}
    indexes = {index["name"] for index in inspector.get_indexes(table.name, schema=table.schema)}
    preparer = sync_conn.dialect.identifier_preparer
    statements = []
    for column in table.columns:
        if column.name not in present:
            ddl = sa.schema.CreateColumn(column).compile(dialect=sync_conn.dialect)
            statements.append(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {ddl}")
    for index in sorted(table.indexes, key=lambda i: str(i.name)):
        if index.name not in indexes:
            statements.append(
                str(sa.schema.CreateIndex(index).compile(dialect=sync_conn.dialect)).strip()
            )
    return statements


def _add_missing_columns(sync_conn: sa.Connection, table: sa.Table) -> None:
    """Add the columns of CRMs added to a default layout after its table was created (additive only)."""
    for statement in missing_columns_sql(sync_conn, table):
        sync_conn.execute(sa.text(statement))


# -- inspection for ``crmsync check`` (reads only) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class DatabaseInspection:
    """What :func:`inspect_database` found: read-only facts for the preflight checks."""

    dialect: str
    table_exists: bool
    #: the contacts table's column names (empty when it does not exist)
    columns: frozenset[str]
    rate_limit_table: str
    rate_limit_table_exists: bool
    #: the DDL that creates the shared rate-limit table, for users who apply schema changes by hand
    rate_limit_table_sql: str


async def inspect_database(database: str | AsyncEngine, layout: Layout) -> DatabaseInspection:
    """The contacts table's columns and whether the shared rate-limit table exists; changes nothing."""
    engine = database_engine(database) if isinstance(database, str) else database
    rate_limits = rate_limit_table(schema=layout.schema)

    def look(sync_conn: sa.Connection) -> tuple[bool, frozenset[str], bool]:
        inspector = sa.inspect(sync_conn)
        exists = inspector.has_table(layout.table, schema=layout.schema)
        columns = (
            frozenset(c["name"] for c in inspector.get_columns(layout.table, schema=layout.schema))
            if exists
            else frozenset()
        )
        return exists, columns, inspector.has_table(RATE_LIMIT_TABLE, schema=layout.schema)

    try:
        async with engine.connect() as conn:
            exists, columns, shared = await conn.run_sync(look)
    except (OSError, sa_exc.OperationalError, sa_exc.InterfaceError) as exc:
        url = engine.url.render_as_string(hide_password=True)
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise DatabaseUnavailableError(f"cannot reach the database {url}: {reason}") from None
    finally:
        if isinstance(database, str):
            await engine.dispose()
    # The shared table exists only on PostgreSQL (its slots are an array); elsewhere there is no DDL.
    ddl = (
        " ".join(str(sa.schema.CreateTable(rate_limits).compile(dialect=engine.dialect)).split())
        + ";"
        if engine.dialect.name == "postgresql"
        else ""
    )
    return DatabaseInspection(
        dialect=engine.dialect.name,
        table_exists=exists,
        columns=columns,
        rate_limit_table=RATE_LIMIT_TABLE,
        rate_limit_table_exists=shared,
        rate_limit_table_sql=ddl,
    )
