"""``crmsync test``: send one contact now, show the CRM's answer, record the outcome."""

from __future__ import annotations

import json

import click

from ._options import Options, pass_options, run_async, shared_options


@click.command()
@click.option("--crm", required=True, help="The CRM to send the contact to.")
@click.option("--id", "contact_id", required=True, help="The contact's id.")
@click.option("--json", "as_json", is_flag=True, help="Print the exchange and the outcome as JSON.")
@shared_options
@pass_options
@run_async
async def test_one(options: Options, crm: str, contact_id: str, as_json: bool) -> None:
    """Send exactly one contact to a CRM now, whatever its status, and print the CRM's answer.

    The outcome is recorded as a sync records it (Complete, Error or a retry). Secrets are redacted.
    Exits 1 when the contact did not end Complete.
    """
    from ..engine import Engine
    from ..status import SyncStatus

    layout = options.layout()
    options.check_crm(crm, layout)
    async with options.open_store(layout=layout) as store:
        engine = Engine(store, registry=options.registry)
        result = await engine.test_one(crm, contact_id)
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        for exchange in result.exchanges:
            request = exchange.request
            click.echo(f"{request.method} {request.url}")
            if request.body is not None:
                click.echo(_text(request.body))
            click.echo(f"-> HTTP {exchange.status if exchange.status is not None else 'no answer'}")
            if exchange.body is not None:
                click.echo(_text(exchange.body))
            click.echo("")
        state = result.state
        if state is not None:
            detail = f" ({state.error})" if state.error else ""
            remote = f", {crm} id {state.remote_id}" if state.remote_id else ""
            click.echo(
                f"{crm}: contact {result.contact_id} is {state.sync_status.value}{remote}{detail}"
            )
    if result.report.stopped:
        click.echo(f"error: {crm} stopped: {result.report.stopped}", err=True)
    if result.state is None or result.state.sync_status is not SyncStatus.COMPLETE:
        raise SystemExit(1)


def _text(body: object) -> str:
    return body if isinstance(body, str) else json.dumps(body, indent=2, default=str)
