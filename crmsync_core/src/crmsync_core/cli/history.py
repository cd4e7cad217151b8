"""``crmsync history``: the recent runs, or one contact's attempts across CRMs. Read-only: it never
creates a file or a table."""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING

import click

from ._options import Options, one_line, pass_options, run_async, shared_options

if TYPE_CHECKING:
    from ..history import AttemptRecord, RunRecord


@click.command()
@click.option("--crm", help="Only this CRM's runs (or, with --contact, attempts).")
@click.option(
    "--limit",
    type=click.IntRange(1, 10_000),
    default=20,
    show_default=True,
    help="How many runs to list.",
)
@click.option("--contact", "contact", metavar="ID", help="One contact's attempts across CRMs.")
@click.option("--json", "as_json", is_flag=True, help="Every field as JSON.")
@shared_options
@pass_options
@run_async
async def history(
    options: Options, crm: str | None, limit: int, contact: str | None, as_json: bool
) -> None:
    """The recent runs (newest first), or with --contact ID one contact's attempts across CRMs.

    Runs and attempts are kept for CRMSYNC_HISTORY_RETENTION_DAYS (30) while CRMSYNC_HISTORY is on.
    """
    layout = options.layout()
    if crm is not None:
        options.check_crm(crm, layout)
    async with options.open_store(read_only=True, layout=layout) as store:
        if contact is None:
            runs = await store.recent_runs(crm, limit)
            if as_json:
                click.echo(json.dumps([r.as_dict() for r in runs], indent=2))
            elif not runs:
                click.echo("no runs kept yet" + (f" for {crm}" if crm else ""))
            for run in [] if as_json else runs:
                click.echo(run_line(run))
                if run.stopped_reason:
                    click.echo(f"    stopped: {one_line(run.stopped_reason)}")
                elif run.paused_reason:
                    click.echo(f"    paused: {one_line(run.paused_reason)}")
            return
        attempts = [
            a for a in await store.contact_attempts(contact.strip()) if crm is None or a.crm == crm
        ]
    if as_json:
        click.echo(json.dumps([a.as_dict() for a in attempts], indent=2))
    elif not attempts:
        click.echo(f"no attempts kept for contact {one_line(contact.strip())}")
    for attempt in [] if as_json else attempts:
        click.echo(attempt_line(attempt))


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def run_line(run: RunRecord) -> str:
    """One run on one line: when, how long, what it did, how fast, who ran it."""
    took = "running" if run.duration_seconds is None else f"{run.duration_seconds:.1f} s"
    return (
        f"#{run.id} {run.crm} {_when(run.started_at)} {took}: synced {run.synced:,}, "
        f"skipped {run.skipped:,}, retrying {run.retrying:,}, failed {run.failed:,}, "
        f"released {run.released:,}; {run.contacts_per_second:,.1f}/s, rate-limited "
        f"{run.rate_limited_seconds:.1f} s; worker {run.worker}"
    )


def attempt_line(attempt: AttemptRecord) -> str:
    """One attempt on one line; the reason is untrusted text made one line."""
    status = f"HTTP {attempt.status_code}" if attempt.status_code is not None else "HTTP -"
    run = f"run #{attempt.run_id}" if attempt.run_id is not None else "no run"
    reason = f": {one_line(attempt.reason)}" if attempt.reason else ""
    return f"{_when(attempt.at)} {attempt.crm} {attempt.outcome.value} ({status}, {run}){reason}"
