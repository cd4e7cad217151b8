"""Fault injection: real worker processes on PostgreSQL against a loopback CRM that misbehaves.

The invariant: what the CRM said about a contact is what the table records. For every scenario, from the
server's log and the table: every contact the server accepted is ``Complete`` (and nothing else is), none
it accepted is ``Error``, no attempt is burned by a database fault or a paused circuit, nothing is left
``Processing``, and a fatal answer causes no second delivery. Settings are scaled down (a 2 s request
deadline where answers stall, a 3 s claim timeout, retry delays of a fraction of a second) to keep the
suite short. ``pytest tests/faults`` prints each scenario's figures (docs/benchmarks.md keeps a run).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from crmsync_core import Layout, Store

from .crm_server import CrmServer, Fault

WORKER = Path(__file__).with_name("fault_worker.py")
CLI = "from crmsync_core.cli import main; main()"
BATCH, LANES = 10, 4


def scaled_env(crm: str, server: CrmServer, **overrides: object) -> dict[str, str]:
    prefix = crm.upper() + "_"
    settings: dict[str, object] = {
        "SYNC_SCHEDULER_BATCH_SIZE": BATCH,
        "SYNC_CONCURRENCY": LANES,
        "SYNC_MAX_RETRIES": 3,
        "SYNC_RETRY_DELAY_MINUTES": 0.002,
        "SYNC_RETRY_JITTER": 0,
        "SYNC_CLAIM_TIMEOUT_MINUTES": 0.05,
        "SYNC_REQUEST_DEADLINE_SECONDS": 1,
        "SYNC_CIRCUIT_FAILURES": 5,
        "SYNC_CIRCUIT_COOLDOWN_SECONDS": 0.5,
        "SYNC_CIRCUIT_MAX_COOLDOWN_SECONDS": 2,
        # A shared budget: every request reserves a token in PostgreSQL.
        "SYNC_RATE_LIMIT_REQUESTS": 1000,
        "SYNC_RATE_LIMIT_PERIOD_SECONDS": 1,
        "SYNC_DATABASE_RETRY_SECONDS": 5,
        **overrides,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BREVO_", "N8N_"))}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    env.update({prefix + k: str(v) for k, v in settings.items()})
    if crm == "brevo":
        env["BREVO_API_KEY"] = "fault-test-key"
        env["BREVO_API_BASE_URL"] = server.url + "/v3"
    else:
        env["N8N_WEBHOOK_URL"] = server.url + "/webhook/faults"
    return env


def dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def seed(url: str, crm: str, count: int) -> None:
    async def go() -> None:
        store = await Store.connect(url, layout=Layout.default(), create=True)
        try:
            rows = [
                {"id": uuid.uuid4(), "email": f"c{n}@example.com", "name": f"Contact {n}"}
                for n in range(count)
            ]
            await store.add_contacts(rows)
            await store.queue(crm, [r["id"] for r in rows], by_system=True)
        finally:
            await store.close()

    asyncio.run(go())


def table(url: str, crm: str) -> list[tuple[str, str, int]]:
    with psycopg.connect(dsn(url)) as conn:
        return conn.execute(
            f"SELECT lower(email), {crm}_sync_status, {crm}_attempts FROM contacts"
        ).fetchall()


def terminate_backends(url: str) -> int:
    """pg_terminate_backend on every other connection to this test's own database (the workers')."""
    with psycopg.connect(dsn(url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def start(url: str, crm: str, mode: str, env: dict[str, str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, str(WORKER), url, crm, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    return process


def wait_until(predicate: Callable[[], bool], seconds: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def settled(url: str, crm: str) -> Callable[[], bool]:
    return lambda: all(status in ("Complete", "Error") for _, status, _ in table(url, crm))


def stop(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    return out, err


def check(
    url: str,
    crm: str,
    server: CrmServer,
    figures: list[dict[str, Any]],
    scenario: str,
    *,
    no_attempts: bool = True,
    no_duplicates: bool = True,
) -> dict[str, Any]:
    rows = table(url, crm)
    accepted = {email for email, n in server.accepted.items() if n}
    complete = {email for email, status, _ in rows if status == "Complete"}
    errors = {email for email, status, _ in rows if status == "Error"}
    counts = Counter(status for _, status, _ in rows)
    row = {
        "scenario": scenario,
        "contacts": len(rows),
        "accepted": len(accepted),
        "complete": len(complete),
        "error": len(errors),
        "attempts": sum(attempts for _, _, attempts in rows),
        "duplicates": sum(n - 1 for n in server.accepted.values() if n > 1),
        "stuck": counts["Processing"],
    }
    figures.append(row)
    assert complete == accepted, "accepted by the CRM = Complete in the table"
    assert not errors & accepted, "no contact the CRM accepted is Error"
    assert row["stuck"] == 0, "nothing left Processing"
    if no_attempts:
        assert row["attempts"] == 0, "no attempt burned by a database fault or a paused CRM"
    if no_duplicates:
        assert row["duplicates"] == 0, "no second delivery"
    return row


@pytest.fixture
def server() -> Iterator[CrmServer]:
    crm = CrmServer()
    yield crm
    crm.stop()


def test_database_backends_terminated_mid_run(
    postgres_url: str, server: CrmServer, figures: list[dict[str, Any]]
) -> None:
    seed(postgres_url, "brevo", 300)
    # A generous deadline: no answer is late here, so any second delivery would be the database's.
    env = scaled_env("brevo", server, SYNC_MAX_RETRIES=0, SYNC_REQUEST_DEADLINE_SECONDS=15)
    worker = start(postgres_url, "brevo", "forever", env)
    wait_until(lambda: server.accepted_total() >= 60, what="60 accepted")
    assert terminate_backends(postgres_url) > 0
    wait_until(lambda: server.accepted_total() >= 180, what="180 accepted")
    assert terminate_backends(postgres_url) > 0
    wait_until(settled(postgres_url, "brevo"), what="every contact settled")
    stop(worker)
    row = check(postgres_url, "brevo", server, figures, "pg_terminate_backend x2")
    assert row["complete"] == 300


@pytest.mark.parametrize("status", [401, 403])
def test_credentials_refused_mid_batch(
    postgres_url: str, server: CrmServer, figures: list[dict[str, Any]], status: int
) -> None:
    seed(postgres_url, "brevo", 200)
    server.set_fault(Fault("status", status=status, after=55))
    env = scaled_env("brevo", server, SYNC_REQUEST_DEADLINE_SECONDS=15)
    worker = start(postgres_url, "brevo", "once", env)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 1, err
    report = json.loads(out.splitlines()[-1])
    assert f"HTTP {status}" in report["stopped"]
    row = check(postgres_url, "brevo", server, figures, f"HTTP {status} mid-batch")
    assert 55 <= row["complete"] < 200
    # The rest wait, untouched, for the key to be fixed.
    assert Counter(s for _, s, _ in table(postgres_url, "brevo"))["Queued"] == 200 - row["complete"]


def test_webhook_answers_404_mid_run(
    postgres_url: str, server: CrmServer, figures: list[dict[str, Any]]
) -> None:
    seed(postgres_url, "n8n", 200)
    server.set_fault(Fault("status", status=404, after=55))
    env = scaled_env("n8n", server, SYNC_REQUEST_DEADLINE_SECONDS=15)
    worker = start(postgres_url, "n8n", "once", env)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 1, err
    assert "HTTP 404" in json.loads(out.splitlines()[-1])["stopped"]
    row = check(postgres_url, "n8n", server, figures, "n8n webhook 404")
    assert 55 <= row["complete"] < 200


@pytest.mark.parametrize(
    ("scenario", "fault"),
    [
        ("slow-loris 3 s", Fault("slowloris", after=30, lasts=3.0)),
        ("hang 3 s", Fault("hang", after=30, lasts=3.0)),
        ("HTTP 503 3 s", Fault("status", status=503, after=30, lasts=3.0)),
    ],
)
def test_a_crm_that_stalls_or_fails_for_a_while(
    postgres_url: str,
    server: CrmServer,
    figures: list[dict[str, Any]],
    scenario: str,
    fault: Fault,
) -> None:
    seed(postgres_url, "brevo", 150)
    server.set_fault(fault)
    # Only a deadline cuts a stalled answer short: 2 s here, 15 s where nothing stalls.
    deadline = 15 if fault.kind == "status" else 2
    env = scaled_env("brevo", server, SYNC_REQUEST_DEADLINE_SECONDS=deadline)
    worker = start(postgres_url, "brevo", "forever", env)
    wait_until(settled(postgres_url, "brevo"), what="every contact settled")
    out, _ = stop(worker)
    # A slow-loris answer arrives after the CRM took the contact: sent again, harmlessly (a 204). (On
    # a loaded machine a healthy answer can miss a 2 s deadline too, so duplicates are only counted.)
    row = check(
        postgres_url,
        "brevo",
        server,
        figures,
        scenario,
        no_attempts=fault.kind != "slowloris",
        no_duplicates=fault.kind == "status",
    )
    assert row["complete"] == 150
    if fault.kind != "slowloris":
        reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        assert any(r["paused_since"] for r in reports), "the circuit breaker paused the CRM"


def test_connection_refused_longer_than_the_retry_schedule(
    postgres_url: str, server: CrmServer, figures: list[dict[str, Any]]
) -> None:
    seed(postgres_url, "brevo", 150)
    env = scaled_env("brevo", server, SYNC_REQUEST_DEADLINE_SECONDS=15)
    worker = start(postgres_url, "brevo", "forever", env)
    wait_until(lambda: server.accepted_total() >= 30, what="30 accepted")
    server.refuse()
    # Four retry schedules long (0.12 + 0.24 + 0.48 s, scaled): without a breaker, all would be Error.
    time.sleep(4.0)
    rows = table(postgres_url, "brevo")
    assert {a for _, s, a in rows if s != "Complete"} == {0}, "an outage uses no attempt"
    server.listen_again()
    wait_until(settled(postgres_url, "brevo"), what="every contact settled")
    out, _ = stop(worker)
    reports = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert any(r["paused_since"] for r in reports)
    row = check(postgres_url, "brevo", server, figures, "connection refused 4 s")
    assert row["complete"] == 150


def test_one_shot_sync_against_an_unreachable_crm_exits_non_zero(
    postgres_url: str, server: CrmServer, figures: list[dict[str, Any]]
) -> None:
    seed(postgres_url, "brevo", 50)
    server.refuse()
    env = scaled_env("brevo", server, SYNC_CIRCUIT_COOLDOWN_SECONDS=300)
    command = [sys.executable, "-c", CLI, "--database-url", postgres_url]
    first = subprocess.run(
        [*command, "sync", "--crm", "brevo"], capture_output=True, text=True, env=env, timeout=120
    )
    assert first.returncode != 0
    assert "paused" in first.stderr
    assert "Traceback" not in first.stderr
    # The next run does not even try until the cool-down is over, and says since when.
    second = subprocess.run(
        [*command, "sync", "--crm", "brevo"], capture_output=True, text=True, env=env, timeout=120
    )
    assert second.returncode != 0
    assert "paused since" in second.stderr
    status = subprocess.run(
        [*command, "status", "--crm", "brevo"], capture_output=True, text=True, env=env, timeout=120
    )
    assert "paused since" in status.stdout
    row = check(postgres_url, "brevo", server, figures, "unreachable, one-shot")
    assert row["complete"] == 0
    assert Counter(s for _, s, _ in table(postgres_url, "brevo")) == {"Queued": 50}


def test_sigkill_mid_run(
    postgres_url: str, server: CrmServer, figures: list[dict[str, Any]]
) -> None:
    seed(postgres_url, "brevo", 200)
    env = scaled_env("brevo", server)
    worker = start(postgres_url, "brevo", "forever", env)
    wait_until(lambda: server.accepted_total() >= 60, what="60 accepted")
    worker.kill()
    worker.communicate(timeout=30)
    # Another worker takes the dead one's claim back once it expires (3 s) and finishes the queue.
    survivor = start(postgres_url, "brevo", "forever", env)
    wait_until(settled(postgres_url, "brevo"), what="every contact settled")
    stop(survivor)
    # Requests in flight at the kill may be sent again (Brevo answers 204 and the id is kept).
    row = check(postgres_url, "brevo", server, figures, "SIGKILL", no_duplicates=False)
    assert row["complete"] == 200
    assert row["duplicates"] <= BATCH * LANES


def test_double_sigint_against_a_hanging_crm(
    postgres_url: str, server: CrmServer, figures: list[dict[str, Any]]
) -> None:
    seed(postgres_url, "brevo", 200)
    server.set_fault(Fault("hang", after=40))
    env = scaled_env("brevo", server, SYNC_REQUEST_DEADLINE_SECONDS=30)
    worker = start(postgres_url, "brevo", "forever", env)
    wait_until(lambda: server.requests > 44, what="requests hanging")
    worker.send_signal(signal.SIGINT)
    time.sleep(0.3)
    worker.send_signal(signal.SIGINT)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    assert "abandoned" in out
    row = check(postgres_url, "brevo", server, figures, "double SIGINT")
    assert row["complete"] >= 40
