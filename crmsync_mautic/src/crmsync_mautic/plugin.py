"""Registers the Mautic adapter with crmsync (entry point ``mautic`` in the ``crmsync`` group)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crmsync_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from crmsync_core.adapter import AdapterSpec


@hookimpl
def register_adapters(register: Callable[[AdapterSpec[Any]], None]) -> None:
    from .adapter import SPEC  # imported here: loading the plugin must stay cheap

    register(SPEC)


@hookimpl
def register_commands(cli: Any) -> None:
    """``crmsync mautic setup``: create the custom fields MAUTIC_FIELD_ALIASES names."""
    from crmsync_core.cli_check import add_setup_command

    async def run_setup(dry_run: bool) -> Any:
        from crmsync_core.check import settings_from_environment

        from .account import setup
        from .settings import MauticSettings

        return await setup(settings_from_environment(MauticSettings), dry_run=dry_run)

    add_setup_command(
        cli,
        "mautic",
        run_setup,
        help="Create the custom contact fields crmsync writes (MAUTIC_FIELD_ALIASES) where Mautic "
        "lacks them; never changes or deletes existing ones.",
    )
