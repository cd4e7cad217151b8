"""``crmsync sync``: drain what is due, once or forever."""

from __future__ import annotations

import click

from ._options import Options, pass_options, run_async, shared_options
from ._output import PROGRESS_EVERY, RunProgress, print_dry_run, print_report, print_scan


@click.command()
@click.option("--crm", "crms", multiple=True, required=True, help="CRM to sync (repeatable).")
@click.option("--forever", is_flag=True, help="Keep running on each CRM's interval until stopped.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds between runs (default: the CRM's setting).",
)
@click.option(
    "--limit", type=click.IntRange(min=1), help="Sync at most this many contacts per CRM."
)
@click.option("--json", "as_json", is_flag=True, help="Print run reports as JSON lines.")
@click.option(
    "--changed",
    is_flag=True,
    help="First re-queue Complete contacts whose data for the CRM changed since their delivery.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the requests that would be sent for the due contacts; send and change nothing.",
)
@click.option(
    "--progress-every",
    type=click.FloatRange(min=0),
    default=PROGRESS_EVERY,
    show_default=True,
    metavar="SECONDS",
    help="When stderr is not a terminal: a progress line this often (0: after every batch).",
)
@shared_options
@pass_options
@run_async
async def sync(
    options: Options,
    crms: tuple[str, ...],
    forever: bool,
    interval: float | None,
    limit: int | None,
    as_json: bool,
    changed: bool,
    dry_run: bool,
    progress_every: float,
) -> None:
    """Sync what is due, once (default) or forever.

    Exits 1 when a CRM was stopped (a bad key, a missing setting) or paused, after saying why.
    --changed first re-queues (as the system) the Complete contacts whose payload for the CRM differs
    from the one last delivered. --dry-run prints, per CRM, the requests a sync would send now
    (secrets redacted) and the due contacts it would complete unchanged, and changes nothing.
    """
    from ..engine import Engine
    from ..report import RunReport
    from ..worker import Worker

    if dry_run and (forever or changed):
        raise click.UsageError("--dry-run changes nothing: give it without --forever and --changed")
    for crm in crms:
        options.adapter(crm)
    failed = False
    async with options.open_store(read_only=dry_run) as store:
        engine = Engine(store, registry=options.registry)
        if dry_run:
            for crm in crms:
                print_dry_run(await engine.dry_run(crm, limit=limit), as_json)
            return
        for crm in crms if changed else ():
            print_scan(await engine.queue_changed(crm), as_json)
        if forever:

            def on_report(report: RunReport) -> None:
                print_report(report, as_json)

            worker = Worker(engine, crms, interval=interval, on_report=on_report)
            await worker.run()
            if worker.abandoned:
                click.echo(
                    "stopped: batches in flight abandoned; unanswered contacts are back in the queue",
                    err=True,
                )
            return
        for crm in crms:
            due = (await store.summary(crm)).due
            total = min(due, limit) if limit else due
            async with RunProgress(crm, total, every=progress_every, bar=not as_json) as progress:
                report = await engine.run_once(crm, limit=limit, progress=progress.update)
            failed = print_report(report, as_json) or failed
    if failed:
        raise SystemExit(1)
