"""``crmsync schema``: the SQL of the default layout, or what a table lacks; ``--apply`` runs it."""

from __future__ import annotations

import click

from ._options import Options, pass_options, run_async, shared_options


@click.command()
@click.option(
    "--scrapersky", is_flag=True, help="The additive SQL for ScraperSky's existing table."
)
@click.option(
    "--crm", "crms", multiple=True, help="Installed CRMs to include (default: every installed one)."
)
@click.option("--dialect", type=click.Choice(["postgresql", "sqlite"]), default="postgresql")
@click.option(
    "--apply", is_flag=True, help="Run it in the --database-url database instead of printing it."
)
@shared_options
@pass_options
@run_async
async def schema(
    options: Options, scrapersky: bool, crms: tuple[str, ...], dialect: str, apply: bool
) -> None:
    """Print the SQL of the default layout and of the run-history tables (or the ScraperSky migration)
    for applying by hand.

    Given a database (--database-url or CRMSYNC_DATABASE_URL) whose table exists, it prints only what
    that table lacks: the columns and indexes of newly installed CRMs. Everything it prints is additive.
    Without --apply it never writes to the database.
    """
    from ..layout import Layout
    from ..store import Store, history_sql, schema_sql, schema_sql_for, scrapersky_migration_sql

    if apply and scrapersky:
        raise click.UsageError(
            "--apply runs the default layout's SQL; apply --scrapersky's SQL yourself"
        )
    if scrapersky:
        click.echo(scrapersky_migration_sql(), nl=False)
        return
    # Only installed adapters have columns: a mistyped name gets the closest one, never DDL.
    layout = Layout.default([options.adapter(crm) for crm in crms]) if crms else options.layout()
    if not (options.database_given or apply):
        click.echo(schema_sql(layout, dialect), nl=False)
        click.echo(_history_part(history_sql(dialect, layout.schema)), nl=False)
        return
    options.url()  # a bad URL is one line before anything is opened
    path = options.sqlite_file()
    if not apply:
        if path is not None and not path.exists():
            # No file, so no table: all of it, and no empty file left behind by looking.
            click.echo(schema_sql(layout, "sqlite"), nl=False)
            click.echo(_history_part(history_sql("sqlite", layout.schema)), nl=False)
            return
        engine = options.read_only_engine()
        try:
            sql = await schema_sql_for(engine or options.database_url, layout)
        finally:
            if engine is not None:
                await engine.dispose()
        click.echo(sql, nl=False)
        return
    options.require_database_folder()
    sql = await schema_sql_for(options.database_url, layout)
    store = await Store.connect(options.database_url, layout, create=True)
    try:
        await store.create_history_tables()
    finally:
        await store.close()
    click.echo(f"applied:\n{sql}" if sql else "nothing to do: the table is complete\n", nl=False)


def _history_part(sql: str) -> str:
    return "\n-- run history (crmsync creates these tables on first use)\n\n" + sql
