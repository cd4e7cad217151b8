"""The tables: the default layout's DDL, crmsync's own tables, reflection of a host's table, additive
migrations, and read-only inspection for ``crmsync check``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from ..errors import ConfigurationError, DatabaseUnavailableError
from ..layout import CrmColumns, Layout
from ..status import ProcessingStatus, SyncStatus
from .tables import (
    FINGERPRINT_TABLE,
    RATE_LIMIT_TABLE,
    _missing_fingerprint_table_sql,
    _qualified,
    fingerprint_table,
    rate_limit_table,
)

_STATUS_LENGTH = 16


#: what a driver raises when the database cannot be reached
CONNECTION_ERRORS = (OSError, sa_exc.OperationalError, sa_exc.InterfaceError)


def unreachable(engine: AsyncEngine, exc: BaseException) -> DatabaseUnavailableError:
    """The one-line error for a database that cannot be reached: the URL without its password, and the
    driver's first line."""
    url = engine.url.render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    return DatabaseUnavailableError(f"cannot reach the database {url}: {reason}")


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
    except CONNECTION_ERRORS as exc:
        raise unreachable(engine, exc) from None
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
    # crmsync's own table of delivered payloads (change detection): the contacts table gains nothing.
    create = sa.schema.CreateTable(fingerprint_table(), if_not_exists=True)
    lines.append(str(create.compile(dialect=dialect)).strip() + ";")
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


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
    except CONNECTION_ERRORS as exc:
        raise unreachable(engine, exc) from None
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
