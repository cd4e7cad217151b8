"""The dual-status machine of every contact and CRM (design.md section 2).

A contact carries, per CRM, a *sync status* (what the user decided and sees) and a *processing status*
(what the system is doing). :data:`TRANSITIONS` is the whole table; :func:`apply` is the one function
that moves a contact from one state to the next, and the store derives the ``WHERE`` and ``SET`` of
every state-changing statement from the same table, so no code path can make a change the table lacks.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import IllegalTransitionError


class SyncStatus(enum.StrEnum):
    """What the user sees. The values are ScraperSky's PostgreSQL enum labels."""

    NEW = "New"
    SELECTED = "Selected"
    QUEUED = "Queued"
    PROCESSING = "Processing"
    COMPLETE = "Complete"
    ERROR = "Error"
    SKIPPED = "Skipped"


class ProcessingStatus(enum.StrEnum):
    """What the system is doing. ``None`` (SQL NULL) means nothing."""

    QUEUED = "Queued"
    PROCESSING = "Processing"
    COMPLETE = "Complete"
    ERROR = "Error"


class Event(enum.Enum):
    """Everything that can happen to a contact's status for one CRM."""

    SELECT = "select"  # a user queues the contact
    QUEUE = "queue"  # the system queues the contact (sync status goes straight to Queued)
    UNSELECT = "unselect"
    SKIP = "skip"  # refused at queue time, e.g. no e-mail address
    CLAIM = "claim"
    SUCCEED = "succeed"
    RETRY = "retry"  # transient failure with attempts left
    FAIL = "fail"  # permanent failure, or attempts used up
    SKIP_BY_ADAPTER = "skip_by_adapter"
    RELEASE = "release"  # the claim is handed back untouched (fatal error, shutdown, dead worker)
    # Confirmed delivery ({CRM}_SYNC_CONFIRM): the CRM accepted the contact, and only its callback
    # completes it. While awaiting, the sync status stays Processing and the processing status is
    # Complete (the request is done), which no claim, claim expiry or queue operation touches.
    AWAIT = "await_confirmation"  # accepted: waiting for the destination's callback
    CONFIRM = "confirm"  # a success callback
    CONFIRM_RETRY = "confirm_retry"  # a failure callback, or none in time, with attempts left
    CONFIRM_FAIL = "confirm_fail"  # a failure callback, or none in time, with attempts used up


@dataclass(frozen=True, slots=True)
class State:
    sync: SyncStatus
    processing: ProcessingStatus | None


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: where an event may happen and what it leaves behind.

    ``from_processing`` of ``None`` means any processing status.
    """

    from_sync: frozenset[SyncStatus]
    from_processing: frozenset[ProcessingStatus | None] | None
    to_sync: SyncStatus
    to_processing: ProcessingStatus | None
    clears_error: bool = False
    resets_retry: bool = False
    counts_attempt: bool = False


S = SyncStatus
P = ProcessingStatus
_ALL_BUT_PROCESSING = frozenset(S) - {S.PROCESSING}

#: Where a contact can be queued from; contacts already Selected/Queued/Processing count as "already queued".
SELECTABLE: frozenset[SyncStatus] = frozenset({S.NEW, S.COMPLETE, S.ERROR, S.SKIPPED})
ALREADY_QUEUED: frozenset[SyncStatus] = frozenset({S.SELECTED, S.QUEUED, S.PROCESSING})

TRANSITIONS: Mapping[Event, Rule] = {
    Event.SELECT: Rule(
        SELECTABLE, None, S.SELECTED, P.QUEUED, clears_error=True, resets_retry=True
    ),
    Event.QUEUE: Rule(SELECTABLE, None, S.QUEUED, P.QUEUED, clears_error=True, resets_retry=True),
    Event.UNSELECT: Rule(
        frozenset({S.SELECTED, S.QUEUED}),
        frozenset({P.QUEUED, None}),
        S.NEW,
        None,
        clears_error=True,
    ),
    Event.SKIP: Rule(_ALL_BUT_PROCESSING, None, S.SKIPPED, None),
    Event.CLAIM: Rule(
        frozenset({S.SELECTED, S.QUEUED}), frozenset({P.QUEUED}), S.PROCESSING, P.PROCESSING
    ),
    Event.SUCCEED: Rule(
        frozenset({S.PROCESSING}),
        frozenset({P.PROCESSING}),
        S.COMPLETE,
        P.COMPLETE,
        clears_error=True,
        resets_retry=True,
    ),
    Event.RETRY: Rule(
        frozenset({S.PROCESSING}),
        frozenset({P.PROCESSING}),
        S.QUEUED,
        P.QUEUED,
        counts_attempt=True,
    ),
    Event.FAIL: Rule(
        frozenset({S.PROCESSING}), frozenset({P.PROCESSING}), S.ERROR, P.ERROR, counts_attempt=True
    ),
    Event.SKIP_BY_ADAPTER: Rule(
        frozenset({S.PROCESSING}), frozenset({P.PROCESSING}), S.SKIPPED, None
    ),
    Event.RELEASE: Rule(frozenset({S.PROCESSING}), frozenset({P.PROCESSING}), S.QUEUED, P.QUEUED),
    Event.AWAIT: Rule(
        frozenset({S.PROCESSING}),
        frozenset({P.PROCESSING}),
        S.PROCESSING,
        P.COMPLETE,
        clears_error=True,
    ),
    Event.CONFIRM: Rule(
        frozenset({S.PROCESSING}),
        frozenset({P.COMPLETE}),
        S.COMPLETE,
        P.COMPLETE,
        clears_error=True,
        resets_retry=True,
    ),
    Event.CONFIRM_RETRY: Rule(
        frozenset({S.PROCESSING}),
        frozenset({P.COMPLETE}),
        S.QUEUED,
        P.QUEUED,
        counts_attempt=True,
    ),
    Event.CONFIRM_FAIL: Rule(
        frozenset({S.PROCESSING}), frozenset({P.COMPLETE}), S.ERROR, P.ERROR, counts_attempt=True
    ),
}

#: the state of a contact the destination accepted and has not yet confirmed (confirmed delivery)
AWAITING = State(S.PROCESSING, P.COMPLETE)


def allows(event: Event, state: State) -> bool:
    """Whether ``event`` may happen to a contact in ``state``."""
    rule = TRANSITIONS[event]
    if state.sync not in rule.from_sync:
        return False
    return rule.from_processing is None or state.processing in rule.from_processing


def apply(event: Event, state: State) -> State:
    """The state after ``event``; raises :class:`IllegalTransitionError` if the table forbids it."""
    if not allows(event, state):
        raise IllegalTransitionError(
            f"cannot {event.value} a contact whose sync status is {state.sync.value!r} "
            f"and processing status is {state.processing.value if state.processing else None!r}"
        )
    rule = TRANSITIONS[event]
    return State(rule.to_sync, rule.to_processing)
