"""``crmsync status``: counts per sync status, per CRM. Read-only: it never creates a file or a table."""

from __future__ import annotations

import json

import click

from ._options import Options, pass_options, run_async, shared_options
from ._output import paused_lines, status_tables, stdout, summary_as_dict


@click.command()
@click.option(
    "--crm", "crms", multiple=True, help="Only these CRMs (default: every CRM of the layout)."
)
@click.option("--json", "as_json", is_flag=True, help="Every count as JSON, one object per CRM.")
@shared_options
@pass_options
@run_async
async def status(options: Options, crms: tuple[str, ...], as_json: bool) -> None:
    """Counts per sync status, due and retrying contacts, per CRM."""
    layout = options.layout()
    for crm in crms:
        options.check_crm(crm, layout)
    async with options.open_store(read_only=True, layout=layout) as store:
        summaries = [await store.summary(crm) for crm in (crms or sorted(store.layout.crms))]
    if as_json:
        click.echo(json.dumps([summary_as_dict(s) for s in summaries], indent=2))
        return
    for table in status_tables(summaries):
        stdout().print(table)
    for line in paused_lines(summaries):
        click.echo(line)
