"""Fixtures shared by every test folder: real databases, one fresh database per test."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import httpx
import hypothesis
import psycopg
import pytest
from sqlalchemy.engine import make_url

from crmsync_core import Layout, Registry, Store
from crmsync_core.testing.server import serve_in_thread

# CI runs the same examples every time (a seed per test, no example database), so that a red CI run
# can be replayed and a green one does not depend on the draw; elsewhere every run draws anew.
hypothesis.settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
if os.environ.get("CI") == "true":
    hypothesis.settings.load_profile("ci")

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: ScraperSky's real table, kept in the repository beside the example app that uses it
SCRAPERSKY_SQL = Path(__file__).resolve().parents[1] / "examples" / "scrapersky" / "contacts.sql"


def libpq_dsn(url: str) -> str:
    """A SQLAlchemy URL (any PostgreSQL driver) as the plain DSN psycopg.connect takes, password kept."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A new SQLite file (the embedded default), through aiosqlite."""
    return f"sqlite+aiosqlite:///{tmp_path / 'crmsync.sqlite3'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty PostgreSQL database (psycopg 3), dropped after the test.

    The server is not optional: when it cannot be reached the test fails, it is never skipped.
    """
    base = os.environ.get("CRMSYNC_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)
    name = f"crmsync_test_{uuid.uuid4().hex[:12]}"
    admin = libpq_dsn(base)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        # A connection the test left checked out is found here, in the test that leaked it, rather
        # than whenever the garbage collector next runs, in whichever test runs then.
        gc.collect()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each test that takes this runs twice: on a SQLite file and on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def scrapersky_sql() -> str:
    """ScraperSky's real contacts table (``examples/scrapersky/contacts.sql``)."""
    return SCRAPERSKY_SQL.read_text()


#: how a CLI test serves a fake CRM: ``with cli_environment(fake.handle) as (origin, environment)``
CliEnvironment = Callable[
    [Callable[[httpx.Request], Awaitable[httpx.Response]]],
    contextlib.AbstractContextManager[tuple[str, dict[str, str]]],
]


@pytest.fixture
def cli_database(tmp_path: Path) -> str:
    """A SQLite file holding the default layout's table, as `crmsync schema --apply` creates it."""
    url = f"sqlite:///{tmp_path / 'crmsync.sqlite3'}"

    async def create() -> None:
        layout = Layout.default(list(Registry().adapters().values()))
        await (await Store.connect(url, layout, create=True)).close()

    asyncio.run(create())
    return url


@pytest.fixture
def cli_environment(cli_database: str) -> CliEnvironment:
    """Serve a fake CRM's handler on a loopback port for a `crmsync` subprocess.

    Yields the server's origin and an environment for the subprocess: this process's, without any CRM's
    or crmsync's settings (the test adds the CRM's, pointing at the origin), with the database of
    :func:`cli_database`.
    """

    @contextlib.contextmanager
    def serve(
        handle: Callable[[httpx.Request], Awaitable[httpx.Response]],
    ) -> Iterator[tuple[str, dict[str, str]]]:
        with serve_in_thread(handle) as origin:
            environment = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("BREVO_", "HUBSPOT_", "MAUTIC_", "N8N_", "CRMSYNC_"))
            }
            environment.update(CRMSYNC_DATABASE_URL=cli_database, COLUMNS="200")
            yield origin, environment

    return serve


#: the ``use_registry`` fixture's type
UseRegistry = Callable[[Registry | None], None]


@pytest.fixture
def use_registry() -> Iterator[UseRegistry]:
    """Replace the process-wide plugin registry for one test (``None``: load the installed plugins
    afresh), through the public :func:`crmsync_core.plugins.set_default_registry`; restored after."""
    from crmsync_core.plugins import set_default_registry

    saved: list[Registry | None] = []

    def use(registry: Registry | None) -> None:
        previous = set_default_registry(registry)
        if not saved:
            saved.append(previous)

    yield use
    if saved:
        set_default_registry(saved[0])
