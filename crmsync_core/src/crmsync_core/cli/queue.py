"""``crmsync queue`` and ``crmsync unselect``: put contacts in a CRM's queue, or take them out.

Both refuse the whole request when an id is not in the table: nothing is written, and the line says how
many ids were not found.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import click

from ._options import Options, pass_options, run_async, shared_options

if TYPE_CHECKING:
    from ..filters import ContactFilter
    from ..store import Store

_IDS_HELP = "Comma-separated contact ids."
_IDS_FILE_HELP = "A file with one contact id per line ('-' for stdin)."


def _filter_fields() -> str:
    # The fields of ContactFilter, named here so that --help does not import pydantic.
    return (
        "curation_status, processing_status, sync_status, email_type, domain_id, page_id, "
        "email_contains, name_contains, has_gmail"
    )


@click.command()
@click.option("--crm", required=True, help="The CRM to queue the contacts for.")
@click.option("--ids", help=_IDS_HELP)
@click.option("--ids-file", type=click.File(), help=_IDS_FILE_HELP)
@click.option(
    "--where",
    "filters",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Queue by filter instead of ids (repeatable): " + _filter_fields() + ".",
)
@click.option("--system", is_flag=True, help="Queue as the system (status Queued, not Selected).")
@click.option(
    "--force",
    is_flag=True,
    help="Send even contacts unchanged since their last delivery (default: completed unsent).",
)
@shared_options
@pass_options
@run_async
async def queue(
    options: Options,
    crm: str,
    ids: str | None,
    ids_file: Any,
    filters: tuple[str, ...],
    system: bool,
    force: bool,
) -> None:
    """Queue contacts for a CRM, by id or by filter.

    Exits 1, queueing nothing, when an id is not in the table.
    """
    chosen = _ids(ids, ids_file)
    if chosen is None and not filters:
        raise click.UsageError(
            "say which contacts to queue: --ids ID,ID, --ids-file FILE or --where FIELD=VALUE"
        )
    if chosen is not None and filters:
        raise click.UsageError("give --ids/--ids-file or --where, not both")
    if chosen is not None and not chosen:
        raise click.UsageError("--ids/--ids-file holds no contact ids")
    contact_filter = _parse_filter(filters) if filters else None
    layout = options.layout()
    options.check_crm(crm, layout)
    async with options.open_store(layout=layout) as store:
        if chosen is not None:
            await _refuse_missing(store, crm, chosen, "queued")
            result = await store.queue(crm, chosen, by_system=system, force=force)
        else:
            assert contact_filter is not None
            result = await store.queue_where(crm, contact_filter, by_system=system, force=force)
    click.echo(
        json.dumps(
            {
                "queued": result.queued,
                "already_queued": result.already_queued,
                "skipped": result.skipped,
                "not_found": result.not_found,
            },
            indent=2,
        )
    )


@click.command()
@click.option("--crm", required=True, help="The CRM whose queue to take the contacts out of.")
@click.option("--ids", help=_IDS_HELP)
@click.option("--ids-file", type=click.File(), help=_IDS_FILE_HELP)
@shared_options
@pass_options
@run_async
async def unselect(options: Options, crm: str, ids: str | None, ids_file: Any) -> None:
    """Take contacts out of a CRM's queue (those in flight stay).

    Exits 1, changing nothing, when an id is not in the table.
    """
    chosen = _ids(ids, ids_file)
    if not chosen:
        raise click.UsageError("say which contacts to unselect: --ids ID,ID or --ids-file FILE")
    layout = options.layout()
    options.check_crm(crm, layout)
    async with options.open_store(layout=layout) as store:
        await _refuse_missing(store, crm, chosen, "unselected")
        count = await store.unselect(crm, chosen)
    click.echo(json.dumps({"unselected": count}, indent=2))


async def _refuse_missing(store: Store, crm: str, ids: list[str], verb: str) -> None:
    from ..errors import InvalidRequestError

    found = await store.states(crm, ids)
    known = {str(key) for key in found}
    missing = [i for i in _unique(ids) if str(_canonical(i)) not in known]
    if missing:
        examples = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
        raise InvalidRequestError(
            f"{len(missing):,} of {len(_unique(ids)):,} contact ids are not in table "
            f"{store.layout.table!r} ({examples}); nothing was {verb}: check the ids"
        )


def _canonical(value: str) -> object:
    # The store returns ids as the column's type (UUID or int): compare in that form.
    import uuid

    try:
        return uuid.UUID(value)
    except ValueError:
        try:
            return int(value)
        except ValueError:
            return value


def _unique(ids: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(ids))


def _ids(ids: str | None, ids_file: Any) -> list[str] | None:
    if ids is None and ids_file is None:
        return None
    chosen = [part.strip() for part in (ids or "").split(",") if part.strip()]
    if ids_file is not None:
        chosen += [line.strip() for line in ids_file if line.strip()]
    return chosen


def _parse_filter(filters: tuple[str, ...]) -> ContactFilter:
    from pydantic import ValidationError

    from ..filters import ContactFilter

    values: dict[str, str] = {}
    for item in filters:
        field, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"{item!r} is not FIELD=VALUE", param_hint="--where")
        field = field.strip()
        if field not in ContactFilter.model_fields:
            raise click.BadParameter(
                f"there is no field {field!r}; the fields are: {', '.join(ContactFilter.model_fields)}",
                param_hint="--where",
            )
        values[field] = value.strip()
    try:
        return ContactFilter.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}={values.get(str(e['loc'][0]), '')!r}: {e['msg']}"
            for e in exc.errors(include_url=False)
        )
        raise click.BadParameter(problems, param_hint="--where") from None
