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
    import click

    from crmsync_core.errors import CrmsyncError

    # The command's own imports wait until it runs: `crmsync --help` registers it and must stay fast.
    @cli.group("hubspot")
    def hubspot() -> None:
        """HubSpot account set-up."""

    @hubspot.command("create-properties")
    def create_properties_command() -> None:
        """Create the custom contact properties crmsync writes (HUBSPOT_CUSTOM_PROPERTY_*), where
        the account lacks them. Needs the crm.schemas.contacts.write scope."""
        import asyncio

        from .properties import create_properties
        from .settings import HubspotSettings

        try:
            statuses = asyncio.run(create_properties(HubspotSettings()))
        except CrmsyncError as exc:
            raise click.ClickException(exc.message) from None
        for status in statuses:
            click.echo(f"{status.status:<8} {status.name}")
