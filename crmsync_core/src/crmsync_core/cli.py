"""The ``crmsync`` command line (install ``crmsync-core[cli]``).

Every command takes ``--database-url`` (or ``CRMSYNC_DATABASE_URL``); the default is the embedded SQLite
file ``crmsync.sqlite3`` in the current folder. ``--layout scrapersky`` works on ScraperSky's table as it
is. Adapter packages add commands through the ``register_commands`` hook.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

try:
    import click
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table
except ImportError as exc:  # pragma: no cover - only without the extra
    raise SystemExit(
        "the crmsync command needs the cli extra: pip install 'crmsync-core[cli]'"
    ) from exc

from pydantic import ValidationError

from .engine import Engine, RunReport
from .errors import CrmsyncError
from .filters import ContactFilter
from .layout import Layout
from .plugins import Registry, default_registry
from .status import SyncStatus
from .store import Store, schema_sql, schema_sql_for, scrapersky_migration_sql
from .worker import Worker

DEFAULT_DATABASE_URL = "sqlite:///crmsync.sqlite3"
LAYOUTS = ("default", "scrapersky", "scrapersky-per-crm")
T = TypeVar("T")

console = Console()
errors = Console(stderr=True)


class Options:
    """What the group's options give every command."""

    def __init__(
        self, database_url: str, layout: str, registry: Registry, *, database_given: bool = False
    ) -> None:
        self.database_url = database_url
        self.database_given = database_given
        self.layout_name = layout
        self.registry = registry

    def layout(self) -> Layout:
        if self.layout_name == "scrapersky":
            return Layout.scrapersky()
        if self.layout_name == "scrapersky-per-crm":
            return Layout.scrapersky(per_crm_retry=True)
        return Layout.default(list(self.registry.adapters().values()) or ["sandbox"])

    async def store(self, *, create: bool = False) -> Store:
        return await Store.connect(
            self.database_url, self.layout(), create=create and self.layout_name == "default"
        )


def run_async(function: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """Run an async command; crmsync errors become one clear line and exit code 1."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return asyncio.run(function(*args, **kwargs))
        except CrmsyncError as exc:
            errors.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise SystemExit(1) from None

    return wrapper


pass_options = click.make_pass_decorator(Options)


@click.group()
@click.option(
    "--database-url",
    envvar="CRMSYNC_DATABASE_URL",
    default=DEFAULT_DATABASE_URL,
    show_default=True,
    help="SQLAlchemy URL: sqlite:///file or postgresql://user@host/db.",
)
@click.option("--layout", type=click.Choice(LAYOUTS), default="default", show_default=True)
@click.option("-v", "--verbose", count=True, help="-v for progress logs, -vv for every request.")
@click.pass_context
def cli(ctx: click.Context, database_url: str, layout: str, verbose: int) -> None:
    """Push contacts from a SQL table into CRMs."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    source = ctx.get_parameter_source("database_url")
    given = source not in (None, click.core.ParameterSource.DEFAULT)
    ctx.obj = Options(database_url, layout, default_registry(), database_given=given)


@cli.command()
@click.option("--contacts", default=3_000, show_default=True, help="How many contacts to seed.")
@click.option("--failure-rate", default=0.1, show_default=True, help="Share of requests that fail.")
@click.option("--seed", default=2026, show_default=True)
@pass_options
@run_async
async def demo(options: Options, contacts: int, failure_rate: float, seed: int) -> None:
    """Seed the database and sync it into every installed adapter's sandbox CRM."""
    from .demo import demo_layout, demo_registry, run_demo

    registry, crms = demo_registry(options.registry)
    url = options.database_url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        # The demo owns its SQLite file: start from an empty one every time.
        path = Path(url.removeprefix("sqlite:///"))
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
    store = await Store.connect(url, demo_layout(registry, crms), create=True)
    console.print(
        f"Seeding {contacts:,} contacts into [bold]{url}[/] and syncing them into "
        f"{', '.join(crms)} (sandbox CRMs, {failure_rate:.0%} of requests fail)…"
    )
    try:
        with _progress() as progress:
            tasks = {crm: progress.add_task(crm, total=None) for crm in crms}

            def on_report(report: RunReport) -> None:
                progress.update(tasks[report.crm], completed=report.processed)

            results = await run_demo(
                store,
                registry,
                crms,
                contacts=contacts,
                failure_rate=failure_rate,
                seed=seed,
                on_report=on_report,
            )
    finally:
        await store.close()
    for result in results:
        console.print(_summary_table(result.summary, result.report))
        if result.examples:
            console.print("  example reasons:", style="bold")
            for reason in result.examples:
                console.print(f"   • {reason}", highlight=False)
    console.print(f"\nInspect it: crmsync --database-url {url} status")


@cli.command()
@click.option("--crm", "crms", multiple=True, required=True, help="CRM to sync (repeatable).")
@click.option("--forever", is_flag=True, help="Keep running on each CRM's interval until stopped.")
@click.option("--interval", type=float, help="Seconds between runs (default: the CRM's setting).")
@click.option("--limit", type=int, help="Sync at most this many contacts per CRM.")
@click.option("--json", "as_json", is_flag=True, help="Print run reports as JSON lines.")
@pass_options
@run_async
async def sync(
    options: Options,
    crms: tuple[str, ...],
    forever: bool,
    interval: float | None,
    limit: int | None,
    as_json: bool,
) -> None:
    """Sync what is due, once (default) or forever."""
    for crm in crms:
        options.registry.get(crm)
    store = await options.store()
    engine = Engine(store, registry=options.registry)
    failed = False
    try:
        if forever:

            def report_line(report: RunReport) -> None:
                _print_report(report, as_json)

            worker = Worker(engine, crms, interval=interval, on_report=report_line)
            await worker.run()
            if worker.abandoned:
                errors.print(
                    "stopped: batches in flight abandoned; unanswered contacts are back in the queue",
                    highlight=False,
                )
            return
        for crm in crms:
            due = (await store.summary(crm)).due
            with _progress(disable=as_json) as progress:
                task = progress.add_task(crm, total=min(due, limit) if limit else due)

                def on_progress(report: RunReport, task: Any = task) -> None:
                    progress.update(task, completed=report.processed)

                report = await engine.run_once(crm, limit=limit, progress=on_progress)
            _print_report(report, as_json)
            failed = failed or report.stopped is not None
    finally:
        await store.close()
    if failed:
        raise SystemExit(1)


@cli.command()
@click.option("--crm", required=True)
@click.option("--ids", help="Comma-separated contact ids.")
@click.option(
    "--ids-file", type=click.File(), help="A file with one contact id per line ('-' for stdin)."
)
@click.option(
    "--where",
    "filters",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Queue by filter instead of ids (repeatable): " + ", ".join(ContactFilter.model_fields),
)
@click.option("--system", is_flag=True, help="Queue as the system (status Queued, not Selected).")
@pass_options
@run_async
async def queue(
    options: Options,
    crm: str,
    ids: str | None,
    ids_file: Any,
    filters: tuple[str, ...],
    system: bool,
) -> None:
    """Queue contacts for a CRM, by id or by filter."""
    chosen = _ids(ids, ids_file)
    if (chosen is None) == (not filters):
        raise click.UsageError("give --ids/--ids-file or --where, not both")
    store = await options.store()
    try:
        if chosen is not None:
            result = await store.queue(crm, chosen, by_system=system)
        else:
            result = await store.queue_where(crm, _parse_filter(filters), by_system=system)
    finally:
        await store.close()
    console.print_json(
        data={
            "queued": result.queued,
            "already_queued": result.already_queued,
            "skipped": result.skipped,
            "not_found": result.not_found,
        }
    )


@cli.command()
@click.option("--crm", required=True)
@click.option("--ids", help="Comma-separated contact ids.")
@click.option(
    "--ids-file", type=click.File(), help="A file with one contact id per line ('-' for stdin)."
)
@pass_options
@run_async
async def unselect(options: Options, crm: str, ids: str | None, ids_file: Any) -> None:
    """Take contacts out of a CRM's queue (those in flight stay)."""
    chosen = _ids(ids, ids_file)
    if chosen is None:
        raise click.UsageError("give --ids or --ids-file")
    store = await options.store()
    try:
        count = await store.unselect(crm, chosen)
    finally:
        await store.close()
    console.print_json(data={"unselected": count})


@cli.command()
@click.option(
    "--crm", "crms", multiple=True, help="Only these CRMs (default: every CRM of the layout)."
)
@click.option("--json", "as_json", is_flag=True)
@pass_options
@run_async
async def status(options: Options, crms: tuple[str, ...], as_json: bool) -> None:
    """Counts per sync status, due and retrying contacts, per CRM."""
    store = await options.store()
    try:
        summaries = [await store.summary(crm) for crm in (crms or tuple(store.layout.crms))]
    finally:
        await store.close()
    if as_json:
        console.print_json(
            data=[
                {
                    "crm": s.crm,
                    **{status.value.lower(): s.counts[status] for status in SyncStatus},
                    "total": s.total,
                    "due": s.due,
                    "retrying": s.retrying,
                    "oldest_due_seconds": s.oldest_due_seconds,
                    "paused_since": s.paused_since.isoformat() if s.paused_since else None,
                }
                for s in summaries
            ]
        )
        return
    for summary in summaries:
        console.print(_summary_table(summary))
        if summary.paused_since is not None:
            console.print(
                f"{summary.crm} is paused since {summary.paused_since:%Y-%m-%d %H:%M:%S} UTC "
                f"(circuit breaker); next probe at {summary.probe_at:%Y-%m-%d %H:%M:%S} UTC",
                highlight=False,
            )


@cli.command()
@pass_options
def adapters(options: Options) -> None:
    """Installed adapters as JSON: distribution, version, capabilities; and plugins that failed."""
    registry = options.registry
    installed = []
    for name, spec in sorted(registry.adapters().items()):
        distribution, version = registry.distribution_of(name)
        installed.append({"distribution": distribution, "version": version, **spec.capabilities()})
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "hooks": list(p.hooks),
        }
        for p in registry.plugins()
    ]
    failures = [
        {"plugin": f.plugin, "distribution": f.distribution, "error": f.error}
        for f in registry.failures()
    ]
    click.echo(
        json.dumps({"adapters": installed, "plugins": plugins, "failures": failures}, indent=2)
    )


@cli.command()
@click.option(
    "--scrapersky", is_flag=True, help="The additive SQL for ScraperSky's existing table."
)
@click.option(
    "--crm", "crms", multiple=True, help="CRMs of the default layout (default: installed)."
)
@click.option("--dialect", type=click.Choice(["postgresql", "sqlite"]), default="postgresql")
@click.option(
    "--apply", is_flag=True, help="Run it in the --database-url database instead of printing it."
)
@pass_options
@run_async
async def schema(
    options: Options, scrapersky: bool, crms: tuple[str, ...], dialect: str, apply: bool
) -> None:
    """Print the SQL of the default layout (or the ScraperSky migration) for applying by hand.

    Given a database (--database-url or CRMSYNC_DATABASE_URL) whose table exists, it prints only what
    that table lacks: the columns and indexes of newly installed CRMs. Everything it prints is additive.
    """
    if apply and scrapersky:
        raise click.UsageError(
            "--apply runs the default layout's SQL; apply --scrapersky's SQL yourself"
        )
    if scrapersky:
        sql = scrapersky_migration_sql()
    else:
        layout = Layout.default(crms) if crms else options.layout()
        if options.database_given or apply:
            sql = await schema_sql_for(options.database_url, layout)
        else:
            sql = schema_sql(layout, dialect)
    if not apply:
        click.echo(sql, nl=False)
        return
    store = await Store.connect(options.database_url, layout, create=True)
    await store.close()
    click.echo(f"applied:\n{sql}" if sql else "nothing to do: the table is complete\n", nl=False)


def _ids(ids: str | None, ids_file: Any) -> list[str] | None:
    if ids is None and ids_file is None:
        return None
    chosen = [part.strip() for part in (ids or "").split(",") if part.strip()]
    if ids_file is not None:
        chosen += [line.strip() for line in ids_file if line.strip()]
    return chosen


def _parse_filter(filters: tuple[str, ...]) -> ContactFilter:
    values: dict[str, str] = {}
    for item in filters:
        field, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not FIELD=VALUE", param_hint="--where")
        values[field.strip()] = value.strip()
    try:
        return ContactFilter.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise click.BadParameter(problems, param_hint="--where") from None


def _progress(*, disable: bool = False) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        transient=True,
        disable=disable or not errors.is_terminal,
    )


def _summary_table(summary: Any, report: RunReport | None = None) -> Table:
    table = Table(title=f"{summary.crm}", title_justify="left", show_header=True)
    for status in SyncStatus:
        table.add_column(status.value, justify="right")
    table.add_column("due", justify="right")
    table.add_column("retrying", justify="right")
    table.add_row(
        *(f"{summary.counts[status]:,}" for status in SyncStatus),
        f"{summary.due:,}",
        f"{summary.retrying:,}",
    )
    if report is not None:
        table.caption = (
            f"synced {report.synced:,} · skipped {report.skipped:,} · failed {report.failed:,} · "
            f"retried {report.errors_by_kind['transient']:,} · rate-limited "
            f"{report.rate_limited_seconds:.1f} s · {report.duration_seconds:.1f} s"
        )
    return table


def _print_report(report: RunReport, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    line = (
        f"{report.crm}: synced {report.synced:,}, skipped {report.skipped:,}, "
        f"retrying {report.retrying:,}, failed {report.failed:,} in {report.duration_seconds:.1f} s"
    )
    console.print(line, highlight=False)
    if report.stopped:
        label = "paused" if report.paused_since else "stopped"
        errors.print(f"[bold red]{report.crm} {label}:[/] {report.stopped}", highlight=False)


def _register_plugin_commands() -> None:
    try:
        default_registry().hook.register_commands(cli=cli)
    except Exception as exc:  # a broken plugin must not take the command line down
        logging.getLogger("crmsync.cli").error("a plugin's register_commands failed: %s", exc)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``crmsync`` script."""
    _register_plugin_commands()
    cli.main(args=argv if argv is not None else sys.argv[1:], prog_name="crmsync")
