"""ScraperSky's backend, reduced to what crmsync touches: run with ``uvicorn --factory app:create_app``.

It wires crmsync the way ScraperSky does: an asyncpg engine configured for the Supavisor transaction
pooler, its own session dependency and auth dependency, the ``contacts`` table as it is
(``Layout.scrapersky()``), and APScheduler jobs for every configured CRM. Settings come from the
environment: ``DATABASE_URL``, ``API_TOKEN``, and each CRM's ``{CRM}_*`` variables.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from crmsync_core import Engine, Layout, Registry, Store
from crmsync_core.scheduler import schedule_sync_jobs
from crmsync_core.web import sync_router


def pooler_engine(url: str) -> AsyncEngine:
    """An engine that works behind a transaction pooler (Supavisor, PgBouncer in transaction mode).

    The pooler hands each transaction to any server connection, so nothing may outlive a transaction:
    asyncpg's statement cache and SQLAlchemy's prepared statement cache are off, and the statements
    asyncpg still prepares get unique names so that two clients never collide on one server
    connection. The pooler pools, so SQLAlchemy does not (``NullPool``).
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    if parsed.drivername == "postgresql+psycopg":
        # psycopg 3 prepares nothing on the server with prepare_threshold=None.
        return create_async_engine(
            parsed, poolclass=NullPool, connect_args={"prepare_threshold": None}
        )
    return create_async_engine(
        parsed,
        poolclass=NullPool,
        connect_args={
            "statement_cache_size": 0,
            "prepared_statement_cache_size": 0,
            "prepared_statement_name_func": lambda: f"__asyncpg_{uuid.uuid4()}__",
        },
    )


# A security scheme rather than a plain header parameter: the schema says how to authenticate, and
# fuzzers do not take the token for an input to vary. (Module level: annotations are resolved here.)
bearer = HTTPBearer(auto_error=False)


def create_app(database_url: str | None = None, *, registry: Registry | None = None) -> FastAPI:
    """The app. ``registry`` replaces the installed adapters (tests pass sandboxes)."""
    engine = pooler_engine(database_url or os.environ["DATABASE_URL"])
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    layout = Layout.scrapersky()
    api_token = os.environ.get("API_TOKEN", "")

    async def get_db_session() -> AsyncIterator[AsyncSession]:
        async with sessions() as session:
            yield session

    async def get_current_user(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> str:
        # ScraperSky checks a Supabase JWT here; any dependency that raises 401 works the same way.
        if not api_token or credentials is None or credentials.credentials != api_token:
            raise HTTPException(401, "not authenticated", headers={"WWW-Authenticate": "Bearer"})
        return "user"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = await Store.connect(engine, layout)
        app.state.crmsync = Engine(store, registry=registry)
        app.state.scheduler = AsyncIOScheduler()
        await schedule_sync_jobs(app.state.scheduler, app.state.crmsync)
        app.state.scheduler.start()
        try:
            yield
        finally:
            app.state.scheduler.shutdown(wait=False)
            await store.close()  # stops listening for queued contacts (the engine is the app's)
            await engine.dispose()

    app = FastAPI(title="ScraperSky (crmsync example)", lifespan=lifespan)
    app.include_router(
        sync_router(
            engine,
            layout=layout,
            session=get_db_session,
            dependencies=[Depends(get_current_user)],
            registry=registry,
        ),
        # the host's auth dependency answers 401: the schema says so
        responses={401: {"description": "not authenticated"}},
    )
    return app
