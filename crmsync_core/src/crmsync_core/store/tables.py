"""crmsync's own tables beside the host's contacts table: shared rate-limit slots, paused CRMs,
delivered payloads (change detection) and run history. Each is created on first use or by ``crmsync schema``."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

RATE_LIMIT_TABLE = "crmsync_rate_slots"
CIRCUIT_TABLE = "crmsync_circuits"
FINGERPRINT_TABLE = "crmsync_fingerprints"


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
    """crmsync's own table of paused CRMs, one row per paused CRM.

    The circuit breaker's pauses live here on PostgreSQL (in-process on SQLite); pauses by a user (the
    status page) live here on both, with ``paused_by_user`` set to their reason.
    """
    return sa.Table(
        CIRCUIT_TABLE,
        metadata or sa.MetaData(),
        sa.Column("crm", sa.String(64), primary_key=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("probe_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cooldown_seconds", sa.Float, nullable=False),
        sa.Column("paused_by_user", sa.Text, nullable=True),
        schema=schema,
    )


RUNS_TABLE = "crmsync_runs"
ATTEMPTS_TABLE = "crmsync_attempts"


def history_tables(
    metadata: sa.MetaData | None = None, schema: str | None = None
) -> tuple[sa.Table, sa.Table]:
    """crmsync's own run history: one row per run (``crmsync_runs``) and one per contact attempt
    (``crmsync_attempts``). Attempts keep the contact id as text (ids may be integers or UUIDs) and no
    foreign key, so that recording them is one cheap insert and pruning one delete per table."""
    metadata = metadata or sa.MetaData()
    run_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's rowid autoincrements
    runs = sa.Table(
        RUNS_TABLE,
        metadata,
        sa.Column("id", run_id, primary_key=True, autoincrement=True),
        sa.Column("crm", sa.String(64), nullable=False),
        sa.Column("worker", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("claimed", sa.Integer, nullable=False, default=0),
        sa.Column("synced", sa.Integer, nullable=False, default=0),
        sa.Column("skipped", sa.Integer, nullable=False, default=0),
        sa.Column("retrying", sa.Integer, nullable=False, default=0),
        sa.Column("failed", sa.Integer, nullable=False, default=0),
        sa.Column("released", sa.Integer, nullable=False, default=0),
        sa.Column("contacts_per_second", sa.Float, nullable=False, default=0.0),
        sa.Column("rate_limited_seconds", sa.Float, nullable=False, default=0.0),
        sa.Column("stopped_reason", sa.Text),
        sa.Column("paused_reason", sa.Text),
        sa.Index(f"ix_{RUNS_TABLE}_started_at", "started_at"),
        schema=schema,
    )
    attempts = sa.Table(
        ATTEMPTS_TABLE,
        metadata,
        sa.Column("run_id", sa.BigInteger),
        sa.Column("contact_id", sa.String(64), nullable=False),
        sa.Column("crm", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("reason", sa.Text),
        sa.Column("request", sa.Text),
        sa.Column("response", sa.Text),
        # A contact's attempts are only ever looked up by equality: on PostgreSQL a hash index, whose
        # insert is a hash and one bucket page, where a B-tree compares each random id text about 16
        # times (measured: 500 inserts of 100 attempts took 0.13 s more with a B-tree, 0.015 s more
        # with a hash index, than with none).
        sa.Index(f"ix_{ATTEMPTS_TABLE}_contact_id", "contact_id", postgresql_using="hash"),
        # Run ids and times only grow as rows are appended: on PostgreSQL a BRIN index (a few pages,
        # next to free to maintain) finds a run's attempts and the rows past the retention; a B-tree
        # updated for every attempt was most of what recording cost.
        sa.Index(f"ix_{ATTEMPTS_TABLE}_run_id", "run_id", postgresql_using="brin"),
        sa.Index(f"ix_{ATTEMPTS_TABLE}_at", "at", postgresql_using="brin"),
        schema=schema,
    )
    return runs, attempts


def history_sql(dialect: str = "postgresql", schema: str | None = None) -> str:
    """The DDL of the run-history tables (created on first use; for users who apply DDL by hand)."""
    from sqlalchemy.dialects import sqlite

    target = postgresql.dialect() if dialect == "postgresql" else sqlite.dialect()  # type: ignore[no-untyped-call]
    statements: list[str] = []
    for table in history_tables(schema=schema):
        statements.append(
            str(sa.schema.CreateTable(table, if_not_exists=True).compile(dialect=target)).strip()
            + ";"
        )
        statements += [
            str(sa.schema.CreateIndex(index, if_not_exists=True).compile(dialect=target)).strip()
            + ";"
            for index in sorted(table.indexes, key=lambda i: str(i.name))
        ]
    return "\n\n".join(statements) + "\n"


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
