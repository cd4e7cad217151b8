"""Fixtures shared by every test folder: real databases, one fresh database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: ScraperSky's real table, kept in the repository beside the example app that uses it
SCRAPERSKY_SQL = Path(__file__).resolve().parents[1] / "examples" / "scrapersky" / "contacts.sql"


def _admin_dsn(url: str) -> str:
    parsed = make_url(url).set(drivername="postgresql")
    return parsed.render_as_string(hide_password=False)


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
    admin = _admin_dsn(base)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(base).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
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
