"""The database: every SQL statement crmsync runs is built in this package.

:class:`Store` works on the host's own contacts table through SQLAlchemy Core (async): PostgreSQL through
psycopg 3 by default or a host-supplied engine (asyncpg in ScraperSky), SQLite through aiosqlite. Every
state change is derived from :data:`crmsync_core.status.TRANSITIONS`: the table's ``from`` states become
the ``WHERE`` and its ``to`` states the ``SET`` of one set-based statement, so rows in any other state are
left alone and no code path can make a change the table lacks.

One module per concept: :mod:`.schema` (the contacts table's DDL, migrations, reflection, inspection),
:mod:`.tables` (crmsync's own tables), :mod:`.base` (engine, transactions, the status machine's
statements), :mod:`.host` (the host's queue API), :mod:`.filters`, :mod:`.leases` (the worker's claims),
:mod:`.budget` (shared request budgets), :mod:`.circuits` (paused CRMs), :mod:`.notify` (wake on queue),
:mod:`.confirmations` (confirmed delivery), :mod:`.fingerprints` (change detection), :mod:`.history`
(run history) and :mod:`.overview` (the status page's reads and retries). The result types live in
the SQL-free :mod:`crmsync_core.queue`.
"""

from __future__ import annotations

from ..queue import (
    CircuitState,
    Claim,
    ContactState,
    QueueResult,
    RecordResult,
    Resolution,
    StatusSummary,
)
from .budget import BudgetMixin, SlotLedger
from .confirmations import CONFIRMATION_TABLE, ConfirmationsMixin, confirmation_table
from .fingerprints import FingerprintsMixin
from .history_reads import HistoryReadsMixin
from .host import HostQueueMixin
from .leases import LeasesMixin
from .notify import QueueListener
from .overview import OverviewMixin
from .schema import (
    DatabaseInspection,
    database_engine,
    default_table,
    inspect_database,
    missing_columns_sql,
    schema_sql,
    schema_sql_for,
    scrapersky_migration_sql,
)
from .tables import (
    ATTEMPTS_TABLE,
    CIRCUIT_TABLE,
    FINGERPRINT_TABLE,
    RATE_LIMIT_TABLE,
    RUNS_TABLE,
    circuit_table,
    fingerprint_table,
    history_sql,
    history_tables,
    rate_limit_table,
)

__all__ = [
    "ATTEMPTS_TABLE",
    "CIRCUIT_TABLE",
    "CONFIRMATION_TABLE",
    "FINGERPRINT_TABLE",
    "RATE_LIMIT_TABLE",
    "RUNS_TABLE",
    "CircuitState",
    "Claim",
    "ContactState",
    "DatabaseInspection",
    "QueueListener",
    "QueueResult",
    "RecordResult",
    "Resolution",
    "SlotLedger",
    "StatusSummary",
    "Store",
    "circuit_table",
    "confirmation_table",
    "database_engine",
    "default_table",
    "fingerprint_table",
    "history_sql",
    "history_tables",
    "inspect_database",
    "missing_columns_sql",
    "rate_limit_table",
    "schema_sql",
    "schema_sql_for",
    "scrapersky_migration_sql",
]


class Store(
    OverviewMixin,
    HostQueueMixin,
    LeasesMixin,
    BudgetMixin,
    ConfirmationsMixin,
    FingerprintsMixin,
    HistoryReadsMixin,
):
    """The contacts table, as crmsync reads and writes it. Create with :meth:`connect`."""
