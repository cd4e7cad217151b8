"""The status machine: the transition table of design.md section 2, and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmsync_core.errors import IllegalTransitionError
from crmsync_core.status import (
    AWAITING,
    TRANSITIONS,
    Event,
    ProcessingStatus,
    State,
    SyncStatus,
    allows,
    apply,
)

S, P = SyncStatus, ProcessingStatus

# (event, from, to) straight from design.md section 2.
DESIGN_TABLE = [
    (Event.SELECT, State(S.NEW, None), State(S.SELECTED, P.QUEUED)),
    (Event.SELECT, State(S.COMPLETE, P.COMPLETE), State(S.SELECTED, P.QUEUED)),
    (Event.SELECT, State(S.ERROR, P.ERROR), State(S.SELECTED, P.QUEUED)),
    (Event.SELECT, State(S.SKIPPED, None), State(S.SELECTED, P.QUEUED)),
    (Event.QUEUE, State(S.NEW, None), State(S.QUEUED, P.QUEUED)),
    (Event.UNSELECT, State(S.SELECTED, P.QUEUED), State(S.NEW, None)),
    (Event.UNSELECT, State(S.QUEUED, P.QUEUED), State(S.NEW, None)),
    (Event.SKIP, State(S.NEW, None), State(S.SKIPPED, None)),
    (Event.SKIP, State(S.COMPLETE, P.COMPLETE), State(S.SKIPPED, None)),
    (Event.CLAIM, State(S.SELECTED, P.QUEUED), State(S.PROCESSING, P.PROCESSING)),
    (Event.CLAIM, State(S.QUEUED, P.QUEUED), State(S.PROCESSING, P.PROCESSING)),
    (Event.SUCCEED, State(S.PROCESSING, P.PROCESSING), State(S.COMPLETE, P.COMPLETE)),
    (Event.RETRY, State(S.PROCESSING, P.PROCESSING), State(S.QUEUED, P.QUEUED)),
    (Event.FAIL, State(S.PROCESSING, P.PROCESSING), State(S.ERROR, P.ERROR)),
    (Event.SKIP_BY_ADAPTER, State(S.PROCESSING, P.PROCESSING), State(S.SKIPPED, None)),
    (Event.RELEASE, State(S.PROCESSING, P.PROCESSING), State(S.QUEUED, P.QUEUED)),
    # confirmed delivery: accepted, then the destination's callback (or its absence) decides
    (Event.AWAIT, State(S.PROCESSING, P.PROCESSING), AWAITING),
    (Event.CONFIRM, AWAITING, State(S.COMPLETE, P.COMPLETE)),
    (Event.CONFIRM_RETRY, AWAITING, State(S.QUEUED, P.QUEUED)),
    (Event.CONFIRM_FAIL, AWAITING, State(S.ERROR, P.ERROR)),
]

ILLEGAL = [
    (Event.SELECT, State(S.PROCESSING, P.PROCESSING)),
    (Event.SELECT, State(S.QUEUED, P.QUEUED)),
    (Event.UNSELECT, State(S.PROCESSING, P.PROCESSING)),
    (Event.UNSELECT, State(S.COMPLETE, P.COMPLETE)),
    (Event.SKIP, State(S.PROCESSING, P.PROCESSING)),
    (Event.CLAIM, State(S.NEW, None)),
    (Event.CLAIM, State(S.ERROR, P.ERROR)),
    (Event.SUCCEED, State(S.QUEUED, P.QUEUED)),
    (Event.FAIL, State(S.COMPLETE, P.COMPLETE)),
    (Event.RELEASE, State(S.QUEUED, P.QUEUED)),
    # an awaiting contact is neither claimed again, nor taken back as a dead worker's, nor re-queued
    (Event.CLAIM, AWAITING),
    (Event.RELEASE, AWAITING),
    (Event.SELECT, AWAITING),
    (Event.UNSELECT, AWAITING),
    (Event.SKIP, AWAITING),
    (Event.SUCCEED, AWAITING),
    # a callback before the acceptance is recorded changes nothing by itself
    (Event.CONFIRM, State(S.PROCESSING, P.PROCESSING)),
    (Event.CONFIRM_FAIL, State(S.COMPLETE, P.COMPLETE)),
]


@pytest.mark.parametrize(("event", "before", "after"), DESIGN_TABLE)
def test_design_transitions(event: Event, before: State, after: State) -> None:
    assert apply(event, before) == after


@pytest.mark.parametrize(("event", "before"), ILLEGAL)
def test_illegal_transitions_are_refused(event: Event, before: State) -> None:
    with pytest.raises(IllegalTransitionError, match=event.value):
        apply(event, before)


def test_status_values_are_scrapersky_enum_labels() -> None:
    # contacts.sql: crm_sync_status and crm_processing_status
    assert [s.value for s in SyncStatus] == [
        "New", "Selected", "Queued", "Processing", "Complete", "Error", "Skipped",
    ]  # fmt: skip
    assert [p.value for p in ProcessingStatus] == ["Queued", "Processing", "Complete", "Error"]


def test_scrapersky_enum_types_hold_the_same_values(scrapersky_sql: str) -> None:
    for type_name in ("crm_sync_status", "hubspot_sync_status"):
        line = next(x for x in scrapersky_sql.splitlines() if f"TYPE {type_name} AS ENUM" in x)
        assert [v.strip(" '") for v in line.split("(")[1].split(")")[0].split(",")] == [
            s.value for s in SyncStatus
        ]


def test_every_event_has_a_rule() -> None:
    assert set(TRANSITIONS) == set(Event)


states = st.builds(State, st.sampled_from(SyncStatus), st.sampled_from([None, *ProcessingStatus]))


@given(
    start=st.sampled_from([State(S.NEW, None)]),
    events=st.lists(st.sampled_from(Event), max_size=40),
)
def test_random_event_sequences_stay_in_known_states(start: State, events: list[Event]) -> None:
    reachable = {after for _, _, after in DESIGN_TABLE} | {State(S.NEW, None)}
    state = start
    for event in events:
        if allows(event, state):
            state = apply(event, state)
            assert state in reachable
            # Processing is always both or neither (the claim is the only way in), but for a contact
            # awaiting its confirmation, which only an acceptance leads to.
            assert (state.sync is S.PROCESSING) == (state.processing is P.PROCESSING) or (
                state == AWAITING
            )
        else:
            with pytest.raises(IllegalTransitionError):
                apply(event, state)


@given(state=states, event=st.sampled_from(Event))
def test_apply_agrees_with_allows(state: State, event: Event) -> None:
    if allows(event, state):
        assert apply(event, state) == State(
            TRANSITIONS[event].to_sync, TRANSITIONS[event].to_processing
        )
    else:
        with pytest.raises(IllegalTransitionError):
            apply(event, state)
