"""``crmsync adapters``: what is installed, as JSON."""

from __future__ import annotations

import json

import click

from ._options import Options, pass_options


@click.command()
@pass_options
def adapters(options: Options) -> None:
    """Installed adapters as JSON: distribution, version, capabilities; and plugins that failed."""
    registry = options.registry
    installed = []
    for name, spec in sorted(registry.adapters().items()):
        distribution, version = registry.distribution_of(name)
        installed.append({"distribution": distribution, "version": version, **spec.capabilities()})
    plugins = [
        {
            "name": p.name,
            "distribution": p.distribution,
            "version": p.version,
            "hooks": list(p.hooks),
        }
        for p in registry.plugins()
    ]
    failures = [
        {"plugin": f.plugin, "distribution": f.distribution, "error": f.error}
        for f in registry.failures()
    ]
    click.echo(
        json.dumps({"adapters": installed, "plugins": plugins, "failures": failures}, indent=2)
    )
