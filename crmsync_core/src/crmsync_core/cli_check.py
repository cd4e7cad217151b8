"""``crmsync check`` and the ``crmsync <crm> setup`` commands adapters add (install ``crmsync-core[cli]``).

Kept apart from :mod:`crmsync_core.cli` and light to import: the checks and the HTTP they need are
imported inside the commands. An adapter adds its set-up command from its ``register_commands`` hook::

    @hookimpl
    def register_commands(cli):
        from crmsync_core.cli_check import add_setup_command

        add_setup_command(cli, "brevo", run_setup, help="Create the Brevo attributes crmsync writes.")

where ``run_setup(dry_run)`` returns an awaitable of :class:`~crmsync_core.check.SetupAction`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from .check import CheckResult, SetupAction

RunSetup = Callable[[bool], Awaitable["Sequence[SetupAction]"]]

_MARK = {"ok": "ok", "info": "info", "problem": "PROBLEM"}


def format_results(results: dict[str, list[CheckResult]]) -> list[str]:
    """One line per check: ``crm  status  name: detail — fix``."""
    width = max((len(crm) for crm in results), default=0)
    return [
        f"{crm:<{width}}  {_MARK[r.status]:<7}  {r.line()}"
        for crm, lines in results.items()
        for r in lines
    ]


@click.command("check")
@click.option(
    "--crm", "crms", multiple=True, help="CRM to check (repeatable; default: every configured CRM)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_context
def check_command(ctx: click.Context, crms: tuple[str, ...], as_json: bool) -> None:
    """Say whether each CRM account and the table are ready to sync, changing nothing.

    One line per check (credentials, list, each mapped field, rate-limit headroom, table columns,
    shared rate-limit table); exit code 1 when anything is a problem.
    """
    from .check import configured_crms, run_checks
    from .errors import CrmsyncError

    options = ctx.obj
    registry = options.registry
    chosen = list(crms) or configured_crms(registry)
    if not chosen:
        installed = ", ".join(sorted(registry.adapters())) or "none"
        raise click.ClickException(
            "no CRM is configured (no BREVO_*, HUBSPOT_*, ... variable is set): set its variables "
            f"or name one with --crm (installed: {installed})"
        )
    import asyncio

    try:
        layout = options.layout()
        results = asyncio.run(
            run_checks(chosen, registry=registry, database=options.database_url, layout=layout)
        )
    except CrmsyncError as exc:
        raise click.ClickException(exc.message) from None
    problems = sum(not r.ok for lines in results.values() for r in lines)
    if as_json:
        click.echo(
            json.dumps({crm: [r.as_dict() for r in lines] for crm, lines in results.items()})
        )
    else:
        for line in format_results(results):
            click.echo(line)
        click.echo(
            f"{problems} problem{'s' if problems != 1 else ''} found"
            if problems
            else "everything is ready"
        )
    if problems:
        ctx.exit(1)


def add_setup_command(
    cli: click.Group, crm: str, run_setup: RunSetup, *, help: str, aliases: Sequence[str] = ()
) -> click.Group:
    """Add ``crmsync <crm> setup [--dry-run]`` (and ``aliases`` of it) to ``crmsync <crm>``, creating
    the group when the adapter has none yet; returns the group."""
    group = cli.commands.get(crm)
    if not isinstance(group, click.Group):
        group = click.Group(crm, help=f"{crm} account set-up.")
        cli.add_command(group)

    def setup(dry_run: bool) -> None:
        import asyncio

        from .errors import CrmsyncError

        try:
            actions = asyncio.run(_collect(run_setup, dry_run))
        except CrmsyncError as exc:
            raise click.ClickException(exc.message) from None
        for action in actions:
            click.echo(action.line())
        created = sum(a.status == "created" for a in actions)
        planned = sum(a.status == "would create" for a in actions)
        if dry_run:
            click.echo(f"dry run: {planned} to create, nothing was changed")
        else:
            click.echo(f"{created} created, {len(actions) - created} left as they were")

    for name in ["setup", *aliases]:
        command = click.Command(
            name,
            callback=setup,
            params=[
                click.Option(
                    ["--dry-run"],
                    is_flag=True,
                    help="Print the requests that would create what is missing; change nothing.",
                )
            ],
            help=help if name == "setup" else f"Same as `crmsync {crm} setup`. {help}",
        )
        group.add_command(command)
    return group


async def _collect(run_setup: RunSetup, dry_run: bool) -> list[Any]:
    return list(await run_setup(dry_run))
