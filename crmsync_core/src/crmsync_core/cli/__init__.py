"""The ``crmsync`` command line (install ``crmsync-core[cli]``).

``--database-url`` (or ``CRMSYNC_DATABASE_URL``) and ``--layout`` go before or after the command; the
default database is the SQLite file ``crmsync.sqlite3`` in the current folder. Adapter packages add
commands through the ``register_commands`` hook.

Each command lives in its own module, listed in :data:`COMMANDS` and imported only when it runs (or when
``--help`` lists it): a command module imports nothing heavier than click at module level, so that
``crmsync --help`` and a mistyped command answer at once. SQLAlchemy, httpx, rich and the adapters are
imported inside the commands that use them.

Every failure the user can fix is one line on stderr, ``error: what is wrong; what to do``, with exit
code 2 for a malformed command line and 1 for everything else.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

try:
    import click
except ImportError as exc:  # pragma: no cover - only without the extra
    raise SystemExit(
        "the crmsync command needs the cli extra: pip install 'crmsync-core[cli]'"
    ) from exc

from ..errors import CrmsyncError
from ._options import DEFAULT_DATABASE_URL, Options, database_url_option, layout_option, one_line

#: command name -> ``module:attribute`` of its click command, imported on first use. A new core command
#: is a module in this package and a line here.
COMMANDS: dict[str, str] = {
    "adapters": "crmsync_core.cli.adapters:adapters",
    "check": "crmsync_core.cli_check:check_command",
    "demo": "crmsync_core.cli.demo:demo",
    "history": "crmsync_core.cli.history:history",
    "queue": "crmsync_core.cli.queue:queue",
    "schema": "crmsync_core.cli.schema:schema",
    "status": "crmsync_core.cli.status:status",
    "sync": "crmsync_core.cli.sync:sync",
    "unselect": "crmsync_core.cli.queue:unselect",
}

logger = logging.getLogger("crmsync.cli")
#: what click (8.2 and later) raises for a group named without a command; older click prints the help itself
_NO_ARGS_IS_HELP: tuple[type[click.ClickException], ...] = tuple(
    getattr(click.exceptions, name)
    for name in ("NoArgsIsHelpError",)
    if hasattr(click.exceptions, name)
)


class CrmsyncGroup(click.Group):
    """A group whose commands are imported when used, plus the commands plugins register, and whose
    errors are one line each."""

    def __init__(self, *args: Any, lazy_commands: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands)
        self._plugins_from: object = None

    def list_commands(self, ctx: click.Context) -> list[str]:
        self.load_plugin_commands()
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        target = self.lazy_commands.get(cmd_name)
        if target is None:
            # Not a core command: perhaps a plugin's (loading plugins is why this is not done first).
            self.load_plugin_commands()
            return super().get_command(ctx, cmd_name)
        module, _, attribute = target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), target
        self.add_command(command, cmd_name)
        return command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else None
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            # click suggests among the commands loaded so far (and click 8.1 not at all): suggest
            # among all of them, plugins' included.
            import difflib

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"No such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def load_plugin_commands(self) -> None:
        """Let installed plugins add their commands (once per registry)."""
        from ..plugins import default_registry

        registry = default_registry()
        if self._plugins_from is registry:
            return
        self._plugins_from = registry
        try:
            registry.hook.register_commands(cli=self)
        except Exception as exc:  # a broken plugin must not take the command line down
            logger.error("a plugin's register_commands failed: %s", exc)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; in standalone mode every error the user can fix is one line."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        if args is not None and not args:
            # Named without a command: the help on stderr and exit 2, as click 8.2 does (8.1 exits 0).
            with self.make_context(prog_name or "crmsync", [], resilient_parsing=True) as ctx:
                click.echo(ctx.get_help(), err=True)
            sys.exit(2)
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except click.ClickException as exc:
            if isinstance(exc, _NO_ARGS_IS_HELP):
                exc.show()  # a group named without a command: its help, as click shows it
                sys.exit(exc.exit_code)
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            fail(exc.format_message() + hint, exc.exit_code)
        except CrmsyncError as exc:
            fail(exc.message, 1)
        except click.exceptions.Abort:
            fail("interrupted", 130)
        sys.exit(result if isinstance(result, int) else 0)


def fail(message: str, code: int) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``code``."""
    click.echo(f"error: {one_line(message)}", err=True)
    sys.exit(code)


@click.group(cls=CrmsyncGroup, lazy_commands=COMMANDS)
@database_url_option(envvar="CRMSYNC_DATABASE_URL")
@layout_option()
@click.option("-v", "--verbose", count=True, help="-v for progress logs, -vv for every request.")
@click.version_option(package_name="crmsync-core", prog_name="crmsync")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, layout: str | None, verbose: int) -> None:
    """Push contacts from a SQL table into CRMs.

    --database-url and --layout go before or after the command.
    """
    source = ctx.get_parameter_source("database_url")
    given = database_url is not None and source is not click.core.ParameterSource.DEFAULT
    ctx.obj = Options(
        database_url or DEFAULT_DATABASE_URL,
        layout or "default",
        database_given=given,
        verbose=verbose,
    )


def _register_plugin_commands() -> None:
    """Add the commands of installed plugins (the ``register_commands`` hook) to :data:`cli`."""
    assert isinstance(cli, CrmsyncGroup)
    cli.load_plugin_commands()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``crmsync`` script."""
    cli.main(args=list(argv) if argv is not None else sys.argv[1:], prog_name="crmsync")


__all__ = ["COMMANDS", "CrmsyncGroup", "cli", "fail", "main"]
