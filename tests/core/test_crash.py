"""Crash safety and graceful shutdown, with real worker processes on a real PostgreSQL database."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from crmsync_core import Layout, ProcessingStatus, Store, SyncStatus
from crmsync_core.testing import SandboxCrm

from .conftest import Clock, make_engine, rows

WORKER = Path(__file__).with_name("worker_process.py")
S, P = SyncStatus, ProcessingStatus


def start_worker(url: str, mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), url, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


async def wait_for(
    store: Store, ids: list[object], predicate: object, seconds: float = 30
) -> Counter[S]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        counts = Counter(s.sync_status for s in (await store.states("sandbox", ids)).values())
        if predicate(counts):  # type: ignore[operator]
            return counts
        assert asyncio.get_running_loop().time() < deadline, f"gave up waiting: {counts}"
        await asyncio.sleep(0.05)


async def test_a_killed_worker_loses_nothing_and_uses_no_attempt(postgres_url: str) -> None:
    store = await Store.connect(
        postgres_url, layout=Layout.default(["sandbox", "other"]), create=True
    )
    try:
        people = rows(50) + rows(2, email="bad-address")
        ids = [r["id"] for r in people]
        await store.add_contacts(people)
        await store.queue("sandbox", ids)

        worker = start_worker(postgres_url, "hang")
        counts = await wait_for(
            store, ids, lambda c: c[S.PROCESSING] == 20
        )  # two lanes of 10, mid-call
        worker.kill()
        worker.communicate(timeout=10)
        assert worker.returncode == -signal.SIGKILL
        assert counts[S.PROCESSING] == 20

        # Before the claim timeout the contacts stay with the dead worker; after it, another takes them.
        clock = Clock()
        clock.now = datetime.now(UTC) + timedelta(minutes=5)
        survivor = make_engine(store, SandboxCrm(), clock, sync_claim_timeout_minutes=10)
        early = await survivor.run_once("sandbox")
        assert early.recovered == 0
        assert early.claimed == 32
        clock.advance(minutes=6)
        late = await survivor.run_once("sandbox")
        assert late.recovered == 20
        assert late.synced == 20

        states = await store.states("sandbox", ids)
        assert len(states) == 52, "no contact left the table"
        assert Counter(s.sync_status for s in states.values()) == {S.COMPLETE: 50, S.SKIPPED: 2}
        assert {s.attempts for s in states.values()} == {0}, "the crash was not a failed attempt"
    finally:
        await store.close()


async def test_sigterm_finishes_the_batches_in_flight_and_leaves_nothing_processing(
    postgres_url: str,
) -> None:
    store = await Store.connect(
        postgres_url, layout=Layout.default(["sandbox", "other"]), create=True
    )
    try:
        people = rows(200)
        ids = [r["id"] for r in people]
        await store.add_contacts(people)
        await store.queue("sandbox", ids)

        worker = start_worker(postgres_url, "slow")
        await wait_for(store, ids, lambda c: c[S.COMPLETE] >= 20 and c[S.PROCESSING] > 0)
        worker.send_signal(signal.SIGTERM)
        out, err = worker.communicate(timeout=30)
        assert worker.returncode == 0, err
        assert "stopped cleanly" in out

        states = await store.states("sandbox", ids)
        counts = Counter(s.sync_status for s in states.values())
        assert counts[S.PROCESSING] == 0
        assert counts[S.COMPLETE] + counts[S.SELECTED] == 200
        assert 20 <= counts[S.COMPLETE] < 200
        assert {s.processing_status for s in states.values()} <= {P.COMPLETE, P.QUEUED}
    finally:
        await store.close()
