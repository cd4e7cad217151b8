"""What every command shares: the database and layout options, and opening the store safely.

Imports only click at module level; SQLAlchemy and the store are imported when a command opens them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

    from ..adapter import AdapterSpec
    from ..layout import Layout
    from ..plugins import Registry
    from ..store import Store

DEFAULT_DATABASE_URL = "sqlite:///crmsync.sqlite3"
LAYOUTS = ("default", "scrapersky", "scrapersky-per-crm")
#: the URL forms crmsync can open (SQLAlchemy driver names)
SUPPORTED_DRIVERS = {
    "sqlite": "sqlite",
    "sqlite+aiosqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg": "postgresql",
    "postgresql+asyncpg": "postgresql",
}
SUPPORTED_FORMS = (
    "sqlite:///FILE, postgresql://USER@HOST/DB (psycopg) or postgresql+asyncpg://USER@HOST/DB"
)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def one_line(message: str) -> str:
    """``message`` with its lines joined: an error is one line on stderr."""
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def redact(url: str) -> str:
    """``url`` without the password between ``user:`` and ``@``."""
    return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


class Options:
    """The database, layout and verbosity a command runs with (the group's or its own options)."""

    def __init__(
        self,
        database_url: str = DEFAULT_DATABASE_URL,
        layout: str = "default",
        *,
        database_given: bool = False,
        verbose: int = 0,
    ) -> None:
        self.database_url = database_url
        self.database_given = database_given
        self.layout_name = layout
        self.verbose = verbose
        self._registry: Registry | None = None

    @property
    def registry(self) -> Registry:
        from ..plugins import default_registry

        if self._registry is None:
            self._registry = default_registry()
        return self._registry

    def configure_logging(self) -> None:
        level = (
            logging.WARNING
            if self.verbose == 0
            else logging.INFO
            if self.verbose == 1
            else logging.DEBUG
        )
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        if self.verbose == 0:
            for handler in logging.getLogger().handlers:
                handler.addFilter(_said_by_the_command)

    def layout(self) -> Layout:
        from ..layout import Layout

        if self.layout_name == "scrapersky":
            return Layout.scrapersky()
        if self.layout_name == "scrapersky-per-crm":
            return Layout.scrapersky(per_crm_retry=True)
        return Layout.default(list(self.registry.adapters().values()) or ["sandbox"])

    def url(self) -> URL:
        """The database URL, parsed and checked: a bad one is a usage error that names the forms."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        shown = redact(self.database_url)
        try:
            parsed = make_url(self.database_url)
        except (ArgumentError, ValueError):
            raise click.UsageError(
                f"--database-url {shown!r} is not a database URL; give {SUPPORTED_FORMS}"
            ) from None
        if parsed.drivername not in SUPPORTED_DRIVERS:
            raise click.UsageError(
                f"--database-url: crmsync cannot use {parsed.drivername!r} databases; "
                f"give {SUPPORTED_FORMS}"
            )
        if parsed.drivername == "postgresql+asyncpg":
            import importlib.util

            if importlib.util.find_spec("asyncpg") is None:
                raise click.UsageError(
                    "--database-url: postgresql+asyncpg needs asyncpg: pip install 'crmsync-core[asyncpg]'"
                )
        return parsed

    def sqlite_file(self) -> Path | None:
        """The SQLite file the URL names (None for PostgreSQL and in-memory SQLite)."""
        parsed = self.url()
        if SUPPORTED_DRIVERS[parsed.drivername] != "sqlite":
            return None
        if parsed.database in (None, "", ":memory:") or str(parsed.database).startswith("file:"):
            return None
        return Path(str(parsed.database))

    def require_database_file(self) -> None:
        """Refuse a SQLite file that does not exist, rather than create an empty one by reading it."""
        path = self.sqlite_file()
        if path is not None and not path.exists():
            where = "" if self.database_given else " (no --database-url given)"
            raise click.ClickException(
                f"there is no database file {str(path)!r}{where}; give --database-url, or create "
                "the table with `crmsync schema --apply` (or try `crmsync demo`)"
            )

    def require_database_folder(self) -> None:
        """For commands that create a SQLite file: its folder must exist (SQLite would fail to open it
        with a bare "unable to open database file")."""
        path = self.sqlite_file()
        if path is not None and not path.parent.is_dir():
            raise click.ClickException(
                f"the folder {str(path.parent)!r} of the database file does not exist; create it, or "
                "give another --database-url"
            )

    @asynccontextmanager
    async def open_store(
        self, *, read_only: bool = False, layout: Layout | None = None
    ) -> AsyncIterator[Store]:
        """The store on this database, closed afterwards. ``read_only`` opens a SQLite file read-only,
        so that a read never writes (no WAL switch, no file, no table); every command but ``demo`` and
        ``schema --apply`` refuses a SQLite file that does not exist."""
        from ..store import Store

        self.require_database_file()
        layout = layout or self.layout()
        engine = self.read_only_engine() if read_only else None
        try:
            store = await Store.connect(engine or self.database_url, layout)
            try:
                yield store
            finally:
                await store.close()
        finally:
            if engine is not None:
                await engine.dispose()

    def read_only_engine(self) -> Any:
        """A SQLite engine that cannot write (``mode=ro``); None for PostgreSQL, where reads never
        create anything."""
        path = self.sqlite_file()
        if path is None:
            return None
        from sqlalchemy.ext.asyncio import create_async_engine

        # A read-only connection to a WAL database creates its -wal and -shm files when they are
        # missing, and cannot remove them. They exist while a writer has the file open; when they do
        # not, nothing is waiting in a WAL, and the file can be read as immutable (no side files). A
        # writer that starts meanwhile writes to its WAL first, not to the file being read.
        immutable = "" if path.with_name(path.name + "-wal").exists() else "&immutable=1"
        return create_async_engine(
            f"sqlite+aiosqlite:///file:{path.resolve()}?mode=ro{immutable}&uri=true",
            connect_args={"timeout": 30},
        )

    def adapter(self, crm: str) -> AdapterSpec[Any]:
        """The installed adapter for ``crm``, or one line: the closest installed name, or what to
        install."""
        return self.registry.get(crm)

    def check_crm(self, crm: str, layout: Layout) -> None:
        """``crm`` must have columns in ``layout``; a name no adapter has is an unknown CRM, never a
        reason to add columns."""
        if crm in layout.crms:
            return
        self.adapter(crm)  # raises: did you mean, or pip install
        layout.columns_for(crm)  # an installed adapter whose columns are missing: `crmsync schema`


def _said_by_the_command(record: logging.LogRecord) -> bool:
    # The command prints why a run stopped as its own one line; the engine's log of it would repeat it.
    return not (record.name == "crmsync.engine" and record.msg == "%s: run stopped: %s")


def database_url_option(**kwargs: Any) -> Callable[[F], F]:
    return click.option(
        "--database-url",
        metavar="URL",
        help="sqlite:///FILE or postgresql://USER@HOST/DB (also CRMSYNC_DATABASE_URL); "
        f"default {DEFAULT_DATABASE_URL}.",
        **kwargs,
    )


def layout_option(**kwargs: Any) -> Callable[[F], F]:
    return click.option(
        "--layout",
        type=click.Choice(LAYOUTS),
        help="The table's layout (default: default).",
        **kwargs,
    )


def shared_options(function: Callable[..., Any]) -> Callable[..., Any]:
    """``--database-url``, ``--layout`` and ``-v`` after the command too: they override the group's."""

    def store(attribute: str) -> Callable[[click.Context, click.Parameter, Any], None]:
        def callback(ctx: click.Context, _: click.Parameter, value: Any) -> None:
            if value is None:
                return
            options = ctx.ensure_object(Options)
            setattr(options, attribute, value)
            if attribute == "database_url":
                options.database_given = True

        return callback

    def more_verbose(ctx: click.Context, _: click.Parameter, value: int) -> None:
        ctx.ensure_object(Options).verbose += value

    function = click.option(
        "-v",
        "--verbose",
        count=True,
        expose_value=False,
        callback=more_verbose,
        help="-v for progress logs, -vv for every request.",
    )(function)
    function = layout_option(expose_value=False, callback=store("layout_name"))(function)
    return database_url_option(expose_value=False, callback=store("database_url"))(function)


def run_async(function: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command (its errors reach the group, which prints each as one line)."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        import asyncio  # not at module level: `crmsync --help` does not need an event loop

        ctx = click.get_current_context()
        options = ctx.find_object(Options)
        if options is not None:
            options.configure_logging()
        return asyncio.run(function(*args, **kwargs))

    return wrapper


pass_options = click.make_pass_decorator(Options, ensure=True)
