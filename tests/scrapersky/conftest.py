"""ScraperSky's real contacts table on PostgreSQL, through asyncpg (configured for the Supavisor pooler,
as ScraperSky configures it) and through psycopg; sandbox CRMs for every CRM of the table."""

from __future__ import annotations

import importlib.util
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from crmsync_core import AdapterSpec, Engine, Layout, Registry, Store, hookimpl
from crmsync_core.errors import ConfigurationError
from crmsync_core.layout import BUILTIN_CRMS
from crmsync_core.testing import MovableClock, SandboxCrm, SandboxSettings, sandbox_adapter_spec

from ..conftest import libpq_dsn

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "scrapersky" / "app.py"

#: columns of other workflows that crmsync must never write, with the values a test gives them
OTHER_WORKFLOWS: dict[str, Any] = {
    "contact_curation_status": "Complete",
    "contact_processing_status": "Complete",
    "contact_processing_error": "kept",
    "debounce_validation_status": "Complete",
    "debounce_processing_status": "Complete",
    "debounce_result": "valid",
    "debounce_score": 97,
    "debounce_reason": "ok",
    "debounce_suggestion": "none",
    "debounce_processing_error": "kept",
    "debounce_validated_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    "enrichment_status": "done",
    "enrichment_started_at": datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
    "enrichment_completed_at": datetime(2024, 5, 1, 12, 5, tzinfo=UTC),
    "enrichment_error": "kept",
    "last_enrichment_id": "enr-1",
    "enriched_phone": "+33 6 12 34 56 78",
    "enriched_address": {"city": "Lyon"},
    "enriched_social_profiles": {"linkedin": "x"},
    "enriched_company": {"name": "Acme"},
    "enriched_additional_emails": ["b@acme.io"],
    "enrichment_confidence_score": 80,
    "enrichment_sources": ["web"],
    "enrichment_duration_seconds": 1.5,
    "enrichment_api_calls": 3,
    "enrichment_cost_estimate": 0.02,
    "source_job_id": uuid.UUID(int=7),
    "created_at": datetime(2024, 1, 1, 9, 30),
}


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scrapersky_example_app", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_example = load_example()


@pytest.fixture
def example() -> ModuleType:
    """examples/scrapersky/app.py"""
    return _example


@pytest.fixture(params=["asyncpg", "psycopg"])
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def scrapersky_url(postgres_url: str, scrapersky_sql: str, driver: str) -> str:
    """A fresh database holding ScraperSky's table, as a URL for ``driver``."""
    with psycopg.connect(libpq_dsn(postgres_url), autocommit=True) as conn:
        conn.execute(scrapersky_sql)
    url = make_url(postgres_url).set(drivername=f"postgresql+{driver}")
    return url.render_as_string(hide_password=False)


@pytest.fixture
async def db(scrapersky_url: str) -> AsyncIterator[AsyncEngine]:
    """The engine as ScraperSky configures it behind Supavisor (see the example app)."""
    engine: AsyncEngine = _example.pooler_engine(scrapersky_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(db: AsyncEngine) -> Store:
    return await Store.connect(db, Layout.scrapersky())


@pytest.fixture
def crms() -> dict[str, SandboxCrm]:
    """One sandbox CRM per CRM of ScraperSky's table."""
    return {name: SandboxCrm() for name in BUILTIN_CRMS}


def sandbox_registry(crms: Mapping[str, SandboxCrm], *, needs_key: Sequence[str] = ()) -> Registry:
    """Adapters named after ``crms``; those in ``needs_key`` refuse to start without an API key, as
    the real adapters do."""
    specs = []
    for name, crm in crms.items():
        spec = sandbox_adapter_spec(
            crm, name=name, remote_id_column="n8n_workflow_id" if name == "n8n" else None
        )
        if name in needs_key:
            spec = _needing_key(spec)
        specs.append(spec)

    class Plugin:
        @hookimpl
        def register_adapters(self, register: Callable[[AdapterSpec[Any]], None]) -> None:
            for spec in specs:
                register(spec)

    return Registry(load_entry_points=False, plugins=[Plugin()])


def _needing_key(spec: AdapterSpec[SandboxSettings]) -> AdapterSpec[SandboxSettings]:
    inner = spec.factory

    def factory(settings: SandboxSettings, context: Any) -> Any:
        if settings.api_key is None:
            raise ConfigurationError(f"{spec.name.upper()}_API_KEY is not set")
        return inner(settings, context)

    return AdapterSpec(
        name=spec.name,
        settings_model=spec.settings_model,
        factory=factory,
        max_batch_size=spec.max_batch_size,
        rate_limit=spec.rate_limit,
        partial_success=spec.partial_success,
        remote_id_column=spec.remote_id_column,
    )


@pytest.fixture
def registry(crms: dict[str, SandboxCrm]) -> Registry:
    return sandbox_registry(crms)


@pytest.fixture
def make_registry() -> Callable[..., Registry]:
    return sandbox_registry


Clock = MovableClock


@pytest.fixture
def clock() -> Clock:
    return Clock(datetime.now(UTC))


def _settings(**overrides: Any) -> SandboxSettings:
    values: dict[str, Any] = {"sync_retry_jitter": 0.0, "sync_concurrency": 1} | overrides
    return SandboxSettings(**values)


@pytest.fixture
def sandbox_settings() -> Callable[..., SandboxSettings]:
    """Settings without jitter, so retry times are exact."""
    return _settings


@pytest.fixture
def sync_engine(store: Store, registry: Registry, clock: Clock) -> Engine:
    return Engine(
        store,
        registry=registry,
        settings={name: _settings() for name in BUILTIN_CRMS},
        clock=clock,
    )


@pytest.fixture
def insert() -> Callable[..., Any]:
    return insert_contacts


@pytest.fixture
def fetch() -> Callable[..., Any]:
    return fetch_rows


async def insert_contacts(
    engine: AsyncEngine,
    ids: Sequence[uuid.UUID],
    *,
    email: Callable[[int], str] = lambda n: f"contact{n}@acme.io",
    domain_id: uuid.UUID | None = None,
    **columns: Any,
) -> None:
    """Rows as ScraperSky writes them (every NOT NULL column, other workflows' columns filled)."""
    table = await _table(engine)
    rows = [
        {
            "id": contact_id,
            "email": email(n),
            "name": f"Contact {n}",
            "domain_id": domain_id or uuid.uuid4(),
            "page_id": uuid.uuid4(),
            "email_type": "CORPORATE",
            "has_gmail": False,
            **OTHER_WORKFLOWS,
            **columns,
        }
        for n, contact_id in enumerate(ids)
    ]
    async with engine.begin() as conn:
        await conn.execute(sa.insert(table), rows)


async def fetch_rows(
    engine: AsyncEngine, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, Any]]:
    table = await _table(engine)
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.select(table).where(table.c.id.in_(list(ids))))).mappings()
        return {row["id"]: dict(row) for row in rows}


async def _table(engine: AsyncEngine) -> sa.Table:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync: sa.Table("contacts", sa.MetaData(), autoload_with=sync)
        )
