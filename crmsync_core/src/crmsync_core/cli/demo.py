"""``crmsync demo``: seed a database and sync it into every installed adapter's sandbox CRM.

The one command that loads the adapters' sandboxes (their fakes): that is what it demonstrates.
"""

from __future__ import annotations

import click

from ._options import Options, pass_options, redact, run_async, shared_options


@click.command()
@click.option(
    "--contacts",
    type=click.IntRange(min=1, max=1_000_000),
    default=3_000,
    show_default=True,
    help="How many contacts to seed.",
)
@click.option(
    "--failure-rate",
    type=click.FloatRange(min=0, max=1),
    default=0.1,
    show_default=True,
    help="Share of requests that fail (0 to 1).",
)
@click.option("--seed", type=int, default=2026, show_default=True)
@shared_options
@pass_options
@run_async
async def demo(options: Options, contacts: int, failure_rate: float, seed: int) -> None:
    """Seed the database and sync it into every installed adapter's sandbox CRM."""
    from ..demo import demo_layout, demo_registry, run_demo
    from ..report import RunReport
    from ..store import Store
    from ._output import RunProgress, report_line, status_tables, stdout

    registry, crms = demo_registry(options.registry)
    options.require_database_folder()
    url = options.database_url
    path = options.sqlite_file()
    if path is not None:
        # The demo owns its SQLite file: start from an empty one every time.
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
    store = await Store.connect(url, demo_layout(registry, crms), create=True)
    console = stdout()
    console.print(
        f"Seeding {contacts:,} contacts into [bold]{redact(url)}[/] and syncing them into "
        f"{', '.join(crms)} (sandbox CRMs, {failure_rate:.0%} of requests fail)…"
    )
    current: list[RunProgress] = []

    def on_report(report: RunReport) -> None:
        # run_demo syncs one CRM after the other: one progress display at a time.
        if not current or current[-1].crm != report.crm:
            if current:
                current[-1].stop()
            current.append(RunProgress(report.crm, contacts))
            current[-1].start()
        current[-1].update(report)

    try:
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
        if current:
            current[-1].stop()
        await store.close()
    for table in status_tables([result.summary for result in results]):
        console.print(table)
    for result in results:
        report = result.report
        console.print(
            f"{report_line(report)}; retried {report.errors_by_kind['transient']:,}, "
            f"rate-limited {report.rate_limited_seconds:.1f} s",
            highlight=False,
            soft_wrap=True,
        )
        for reason in result.examples:
            console.print(f"   • {reason}", highlight=False, soft_wrap=True)
    console.print(f"\nInspect it: crmsync status --database-url {redact(url)}", soft_wrap=True)
