"""Confirmed delivery for asynchronous destinations (``{CRM}_SYNC_CONFIRM=true``; n8n first).

By default a contact is ``Complete`` when the CRM accepts it. An n8n Webhook node in ``onReceived`` mode
accepts before its workflow runs, so a workflow killed mid-run left contacts ``Complete`` that never
ran. With confirmation on, an accepted contact stays ``Processing`` (processing status ``Complete``:
the request is done) until the destination calls ``POST {prefix}/{crm}/sync/confirm`` (mounted by
:func:`crmsync_core.web.sync_router`) with the contact id and the idempotency key it was sent with:

* ``"status": "ok"``: the contact becomes ``Complete``; the ``data`` the callback carries goes to the
  ``contact_confirmed`` hook first (a host writes enrichment results into its own columns there);
* ``"status": "error"``: a failure, through the retry policy (queued again while attempts are left, else
  ``Error``), or ``Error`` at once with ``"retry": false``;
* no callback within ``{CRM}_SYNC_CONFIRM_TIMEOUT_SECONDS``: the next run puts the contact back in the
  queue as a transient failure (one attempt) and it is sent again; n8n's key is a hash of the payload
  without its timestamp, so the same data goes with the same ``Idempotency-Key``.

A callback for a contact that is not awaiting (a duplicate, a late one, a stale key) changes nothing.
One that arrives before the acceptance is recorded (a fast workflow) is kept and applied when it is.
This module holds no SQL: the store's confirmation operations do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from .contacts import ContactId
from .errors import InvalidRequestError

# Defined beside the Queue protocol that takes them; this module is where users find them.
from .queue import Callback as Callback
from .queue import ConfirmResolution as ConfirmResolution
from .queue import Pending as Pending
from .status import Event

if TYPE_CHECKING:
    from .plugins import Registry
    from .queue import Queue as Store
    from .settings import SyncSettings

logger = logging.getLogger("crmsync.confirm")

#: longest error text kept from a callback
MAX_REASON = 1_000

#: what a callback did
CallbackResult = Literal["confirmed", "retrying", "failed", "early", "ignored"]


def _now() -> datetime:
    return datetime.now(UTC)


def resolution(
    pending: Pending,
    settings: SyncSettings,
    *,
    failure: str | None,
    retry: bool = True,
    now: datetime,
    rng: random.Random | None = None,
) -> ConfirmResolution:
    """``CONFIRM`` when ``failure`` is ``None``; else a failed attempt through the retry policy."""
    if failure is None:
        return ConfirmResolution(pending.contact_id, Event.CONFIRM)
    attempts = pending.attempts + 1
    reason = failure if len(failure) <= MAX_REASON else failure[: MAX_REASON - 1] + "…"
    delay = settings.retry_policy().delay_after(attempts, rng=rng) if retry else None
    if delay is None:
        if retry:
            reason = f"{reason} (gave up after {attempts} attempts)"
        return ConfirmResolution(pending.contact_id, Event.CONFIRM_FAIL, reason, attempts)
    return ConfirmResolution(
        pending.contact_id, Event.CONFIRM_RETRY, reason, attempts, next_attempt_at=now + delay
    )


def _failure(crm: str, callback: Callback) -> str | None:
    if callback.ok:
        return None
    return f"{crm}: the workflow reported a failure: {callback.error or 'no reason given'}"


async def handle_callback(
    store: Store,
    registry: Registry,
    crm: str,
    settings: SyncSettings,
    callback: Callback,
    *,
    now: datetime | None = None,
) -> CallbackResult:
    """Apply one callback: complete, retry or fail the contact it names when it awaits this key; keep
    it when the acceptance is not recorded yet; else change nothing (a duplicate or a stale key)."""
    now = now or _now()
    try:
        store.parse_id(callback.contact_id)
    except InvalidRequestError:
        return "ignored"  # not an id of this table: it matches no contact
    for _ in range(2):
        rows = await store.pending_confirmations(crm, [callback.contact_id])
        row = rows[0] if rows else None
        if row is not None and row.awaiting:
            if row.idempotency_key is not None and callback.idempotency_key != row.idempotency_key:
                return "ignored"
            return (await settle(store, registry, crm, settings, [(row, callback)], now=now))[0]
        state = await store.contact_state_for_callback(crm, callback.contact_id)
        if state == "awaiting":
            continue  # its acceptance was recorded between the two reads: read again
        if state != "claimed":
            return "ignored"
        await store.keep_early_callback(crm, callback)
        # The acceptance may have been recorded (and its early callbacks applied) before this one was
        # kept: apply it now if so. Applying twice is harmless (only an awaiting contact changes).
        applied = await apply_early(
            store, registry, crm, settings, [row_id(store, callback)], now=now
        )
        # "ignored" here: the worker applied it first.
        return applied[0] if applied and applied[0] != "ignored" else "early"
    return "ignored"


def row_id(store: Store, callback: Callback) -> ContactId:
    """The contact id of ``callback`` as the table types it."""
    return store.parse_id(callback.contact_id)


async def settle(
    store: Store,
    registry: Registry,
    crm: str,
    settings: SyncSettings,
    pairs: Sequence[tuple[Pending, Callback | None]],
    *,
    now: datetime,
    rng: random.Random | None = None,
) -> list[CallbackResult]:
    """Resolve awaiting contacts: each with its callback, or (``None``) as unconfirmed in time.

    ``contact_confirmed`` runs before a confirmed contact becomes ``Complete``: if it raises, the
    contact keeps awaiting (the destination may call again) and the error propagates.
    """
    resolutions: list[ConfirmResolution] = []
    changed: set[ContactId] = set()
    results: list[CallbackResult] = []
    for pending, callback in pairs:
        # One application per contact at a time in this process (a callback and the worker may race
        # to apply the same one): the second finds it resolved and neither calls the hook again.
        async with _lock(crm, pending.contact_id):
            current = await store.pending_confirmations(crm, [pending.contact_id])
            row = current[0] if current else None
            if (
                row is None
                or not row.awaiting
                or (
                    callback is not None
                    and row.idempotency_key is not None
                    and callback.idempotency_key != row.idempotency_key
                )
            ):
                results.append("ignored")
                continue
            if callback is None:
                failure: str | None = (
                    f"{crm}: no confirmation within {settings.sync_confirm_timeout_seconds:g} s"
                )
                retry = True
            else:
                failure, retry = _failure(crm, callback), callback.retry
                if callback.ok:
                    await _confirmed_hook(registry, crm, row.contact_id, callback.data)
            r = resolution(row, settings, failure=failure, retry=retry, now=now, rng=rng)
            resolutions.append(r)
            done = await store.resolve_confirmations(crm, [r], now=now)
            changed |= done
            if not done:
                results.append("ignored")
            elif r.event is Event.CONFIRM:
                results.append("confirmed")
            elif r.event is Event.CONFIRM_RETRY:
                results.append("retrying")
            else:
                results.append("failed")
    await _lifecycle_hooks(store, registry, crm, settings, pairs, resolutions, changed)
    return results


#: per (CRM, contact): the lock and how many hold or wait for it
_locks: dict[tuple[str, str], tuple[asyncio.Lock, list[int]]] = {}


@contextlib.asynccontextmanager
async def _lock(crm: str, contact_id: ContactId) -> AsyncIterator[None]:
    key = (crm, str(contact_id))
    lock, users = _locks.setdefault(key, (asyncio.Lock(), [0]))
    users[0] += 1
    try:
        async with lock:
            yield
    finally:
        users[0] -= 1
        if not users[0]:
            del _locks[key]


async def expire(
    store: Store,
    registry: Registry,
    crm: str,
    settings: SyncSettings,
    *,
    now: datetime,
    rng: random.Random | None = None,
) -> int:
    """Put contacts whose confirmation did not come within the timeout back in the queue (one attempt
    each; ``Error`` once attempts are used up). Returns how many."""
    expired = await store.pending_confirmations(crm, expired_at=now)
    if expired:
        logger.warning(
            "%s: %d contacts were not confirmed within %g s; queued again",
            crm,
            len(expired),
            settings.sync_confirm_timeout_seconds,
        )
    results = await settle(
        store, registry, crm, settings, [(p, None) for p in expired], now=now, rng=rng
    )
    return sum(1 for r in results if r != "ignored")


async def apply_early(
    store: Store,
    registry: Registry,
    crm: str,
    settings: SyncSettings,
    ids: Sequence[ContactId],
    *,
    now: datetime,
    rng: random.Random | None = None,
) -> list[CallbackResult]:
    """Apply the callbacks that came before the acceptance of ``ids`` was recorded."""
    if not ids:
        return []
    early = [
        (p, p.early)
        for p in await store.pending_confirmations(crm, ids, with_outcome=True)
        if p.early is not None
        and (p.idempotency_key is None or p.early.idempotency_key == p.idempotency_key)
    ]
    if not early:
        return []
    return await settle(store, registry, crm, settings, early, now=now, rng=rng)


async def _confirmed_hook(registry: Registry, crm: str, contact_id: ContactId, data: Any) -> None:
    results = registry.hook.contact_confirmed(crm=crm, contact_id=contact_id, data=data)
    # Every implementation's awaitable is awaited, even when another fails; the first error is raised.
    answers = await asyncio.gather(
        *(r for r in results if inspect.isawaitable(r)), return_exceptions=True
    )
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer


async def _lifecycle_hooks(
    store: Store,
    registry: Registry,
    crm: str,
    settings: SyncSettings,
    pairs: Sequence[tuple[Pending, Callback | None]],
    resolutions: Sequence[ConfirmResolution],
    changed: set[ContactId],
) -> None:
    """``contact_synced`` for the confirmed, ``contact_failed`` for those now ``Error``."""
    hook = registry.hook
    synced = bool(hook.contact_synced.get_hookimpls())
    failed = bool(hook.contact_failed.get_hookimpls())
    wanted = [
        r
        for r in resolutions
        if r.contact_id in changed
        and ((synced and r.event is Event.CONFIRM) or (failed and r.event is Event.CONFIRM_FAIL))
    ]
    if not wanted:
        return
    contacts = await store.contacts([r.contact_id for r in wanted])
    remote = {p.contact_id: p.remote_id for p, _ in pairs}
    for r in wanted:
        contact = contacts.get(r.contact_id)
        if contact is None:
            continue
        try:
            if r.event is Event.CONFIRM:
                hook.contact_synced(crm=crm, contact=contact, remote_id=remote.get(r.contact_id))
            else:
                hook.contact_failed(
                    crm=crm,
                    contact=contact,
                    reason=r.error or "",
                    notification_email=settings.sync_failure_notification_email,
                )
        except Exception:
            logger.exception("a lifecycle hook failed")


def confirm_by(settings: SyncSettings, now: datetime) -> datetime:
    """When the callback of a delivery accepted at ``now`` is due."""
    return now + timedelta(seconds=settings.sync_confirm_timeout_seconds)
