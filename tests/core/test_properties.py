"""Random sequences of queue operations, runs, crashes and time passing, on a real SQLite file.

Whatever happens, no contact ever leaves the table, every contact is in a state the status machine can
reach, attempts never exceed the policy, and outside a run nothing is left ``Processing`` except what a
crashed worker holds.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmsync_core import Layout, ProcessingStatus, Store, SyncStatus
from crmsync_core.testing import SandboxCrm

from .conftest import Clock, make_engine

S, P = SyncStatus, ProcessingStatus
MAX_RETRIES = 2
REACHABLE = {
    (S.NEW, None),
    (S.SELECTED, P.QUEUED),
    (S.QUEUED, P.QUEUED),
    (S.PROCESSING, P.PROCESSING),
    (S.COMPLETE, P.COMPLETE),
    (S.ERROR, P.ERROR),
    (S.SKIPPED, None),
}
EMAILS = ["a@example.com", "b@example.com", "c@example.com", "no@rejected.invalid", "broken", ""]

subsets = st.lists(st.booleans(), min_size=len(EMAILS), max_size=len(EMAILS))
operations = st.lists(
    st.one_of(
        st.tuples(st.just("queue"), subsets),
        st.tuples(st.just("unselect"), subsets),
        st.tuples(st.just("run"), st.sampled_from([0.0, 0.5, 1.0])),
        st.tuples(st.just("advance"), st.sampled_from([1, 5, 30, 240])),
        st.tuples(st.just("crash"), st.integers(1, 3)),
    ),
    max_size=25,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(steps=operations)
def test_random_histories_keep_every_contact(tmp_path: Path, steps: list[tuple[str, Any]]) -> None:
    asyncio.run(_history(tmp_path / f"{uuid.uuid4().hex}.sqlite3", steps))


async def _history(path: Path, steps: list[tuple[str, Any]]) -> None:
    store = await Store.connect(
        f"sqlite:///{path}", layout=Layout.default(["sandbox", "other"]), create=True
    )
    try:
        ids = [uuid.uuid4() for _ in EMAILS]
        await store.add_contacts({"id": i, "email": e} for i, e in zip(ids, EMAILS, strict=True))
        clock, crm = Clock(), SandboxCrm(seed=1)
        engine = make_engine(
            store,
            crm,
            clock,
            sync_max_retries=MAX_RETRIES,
            sync_retry_delay_minutes=5,
            sync_claim_timeout_minutes=60,
            sync_scheduler_batch_size=2,
        )
        crashed: set[uuid.UUID] = set()
        for action, argument in steps:
            chosen = (
                [i for i, pick in zip(ids, argument, strict=True) if pick]
                if action in ("queue", "unselect")
                else []
            )
            if action == "queue":
                await store.queue("sandbox", chosen, now=clock())
            elif action == "unselect":
                await store.unselect("sandbox", chosen)
            elif action == "run":
                crm.failure_rate = argument
                await engine.run_once("sandbox")
                # A run takes back only the claims that have expired; the younger ones stay held.
                after = await store.states("sandbox", list(crashed))
                crashed = {i for i in crashed if after[i].sync_status is S.PROCESSING}
            elif action == "advance":
                clock.advance(minutes=argument)
            else:
                claim = await store.claim("sandbox", argument, now=clock())
                crashed |= {c.id for c in claim.contacts}
            await _check(store, ids, crashed)
    finally:
        await store.close()


async def _check(store: Store, ids: list[uuid.UUID], crashed: set[uuid.UUID]) -> None:
    states = await store.states("sandbox", ids)
    assert set(states) == set(ids), "a contact left the table"
    for contact_id, state in states.items():
        assert (state.sync_status, state.processing_status) in REACHABLE, state
        assert 0 <= state.attempts <= MAX_RETRIES + 1, state
        if state.sync_status is S.PROCESSING:
            assert contact_id in crashed, "only a crashed worker's claim may stay Processing"
        if state.sync_status in (S.ERROR, S.SKIPPED):
            assert state.error, "Error and Skipped always say why"
        if state.sync_status is S.COMPLETE:
            assert state.remote_id and state.error is None
    other = await store.states("other", ids)
    assert {s.sync_status for s in other.values()} == {S.NEW}, "another CRM's columns were touched"
