"""Registers the HubSpot adapter and its ``crmsync hubspot`` commands with crmsync."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crmsync_core.hookspecs import hookimpl

if TYPE_CHECKING:
    import click


@hookimpl
def register_adapters(register: Callable[[Any], None]) -> None:
    from .adapter import SPEC

    register(SPEC)


@hookimpl
def register_commands(cli: click.Group) -> None:
    """``crmsync hubspot setup`` (alias ``create-properties``): create the custom contact properties."""
    from crmsync_core.cli_check import add_setup_command

    async def run_setup(dry_run: bool) -> Any:
        from crmsync_core.check import settings_from_environment

        from .account import setup
        from .settings import HubspotSettings

        return await setup(settings_from_environment(HubspotSettings), dry_run=dry_run)

    add_setup_command(
        cli,
        "hubspot",
        run_setup,
        aliases=("create-properties",),
        help="Create the custom contact properties crmsync writes (HUBSPOT_CUSTOM_PROPERTY_*) where "
        "the account lacks them; never changes existing ones. Needs the crm.schemas.contacts.write "
        "scope.",
    )
