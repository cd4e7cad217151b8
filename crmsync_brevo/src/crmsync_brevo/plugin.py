"""Registers the Brevo adapter with crmsync (entry point ``brevo`` in the ``crmsync`` group)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crmsync_core.hookspecs import hookimpl

if TYPE_CHECKING:
    from crmsync_core.adapter import AdapterSpec


@hookimpl
def register_adapters(register: Callable[[AdapterSpec[Any]], None]) -> None:
    from .adapter import SPEC

    register(SPEC)


@hookimpl
def register_commands(cli: Any) -> None:
    """``crmsync brevo setup``: create the attributes crmsync writes where the account lacks them."""
    from crmsync_core.cli_check import add_setup_command

    async def run_setup(dry_run: bool) -> Any:
        from crmsync_core.check import settings_from_environment

        from .account import setup
        from .settings import BrevoSettings

        return await setup(settings_from_environment(BrevoSettings), dry_run=dry_run)

    add_setup_command(
        cli,
        "brevo",
        run_setup,
        help="Create the contact attributes crmsync writes (BREVO_ATTRIBUTE_*) where the Brevo account "
        "lacks them; never changes or deletes existing ones.",
    )
