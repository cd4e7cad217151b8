"""Change scan on PostgreSQL (issue 14): `Engine.queue_changed` over N Complete contacts of which a share
changed a field the CRM receives since their delivery. Prints one markdown table row.

    .venv/bin/python -m bench.change_scan --contacts 1000000 --changed 0.01

Seeding (not timed) writes N contacts as delivered an hour ago, each with the fingerprint of what the
sandbox CRM received (e-mail and name; computed in SQL exactly as crmsync computes it in Python), then
renames the given share of them and gives as many others a new phone number (which the sandbox CRM does
not receive), moving their ``updated_at``. The first scan compares the contacts updated since their
delivery, re-queues the renamed ones and marks the others checked; the second finds nothing to compare.
Each run creates its own database on the local server (CRMSYNC_BENCH_POSTGRES_URL) and drops it.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

import psycopg
import sqlalchemy as sa

from crmsync_core import Engine, Layout, Registry, Store, hookimpl
from crmsync_core.changes import FINGERPRINT_LENGTH
from crmsync_core.testing import SandboxCrm, SandboxSettings, sandbox_adapter_spec
from crmsync_core.testing.sandbox import sandbox_payload

from .core import ADMIN_URL

CRM = "sandbox"


class _Plugin:
    def __init__(self) -> None:
        self.spec = sandbox_adapter_spec(SandboxCrm(), payload=sandbox_payload)

    @hookimpl
    def register_adapters(self, register: Any) -> None:
        register(self.spec)


def _seed(url: str, contacts: int, changed: float) -> tuple[int, int]:
    every = max(1, round(1 / changed)) if changed > 0 else 0
    with psycopg.connect(
        sa.make_url(url).set(drivername="postgresql").render_as_string(False)
    ) as conn:
        conn.execute(
            f"""
            INSERT INTO contacts (id, email, name, email_type, has_gmail, updated_at,
                                  {CRM}_sync_status, {CRM}_processing_status)
            SELECT gen_random_uuid(), 'person' || g || '@example' || (g %% 10) || '.com',
                   'Person ' || g, 'CORPORATE', false, now() - interval '1 hour',
                   'Complete', 'Complete'
            FROM generate_series(1, %s) AS g
            """,
            (contacts,),
        )
        # The canonical JSON crmsync hashes: sorted keys, no spaces (the values need no escaping).
        conn.execute(
            f"""
            INSERT INTO crmsync_fingerprints (crm, contact_id, fingerprint, delivered_at, checked_at,
                                              reselected)
            SELECT %s, id::text,
                   left(encode(sha256(convert_to(
                       '{{"email":"' || email || '","name":"' || name || '"}}', 'UTF8')), 'hex'),
                       {FINGERPRINT_LENGTH}),
                   updated_at, updated_at, false
            FROM contacts
            """,
            (CRM,),
        )
        renamed = touched = 0
        if every:
            renamed = conn.execute(
                "UPDATE contacts SET name = name || ' Jr', updated_at = now() - interval '30 minutes' "
                "WHERE substring(name from 8)::int %% %s = 0",
                (every,),
            ).rowcount
            touched = conn.execute(
                "UPDATE contacts SET phone_number = '+4915112345678', "
                "updated_at = now() - interval '30 minutes' "
                "WHERE CASE WHEN name LIKE %s THEN false "
                "ELSE substring(name from 8)::int %% %s = 1 END",
                ("%Jr", every),
            ).rowcount
        conn.execute("ANALYZE contacts")
        conn.execute("ANALYZE crmsync_fingerprints")
    return renamed, touched


async def run(contacts: int, changed: float) -> None:
    name = f"crmsync_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        store = await Store.connect(url, layout=Layout.default([CRM]), create=True)
        try:
            renamed, touched = _seed(url, contacts, changed)
            engine = Engine(
                store,
                registry=Registry(load_entry_points=False, plugins=[_Plugin()]),
                settings={CRM: SandboxSettings()},
            )
            started = time.perf_counter()
            first = await engine.queue_changed(CRM)
            first_seconds = time.perf_counter() - started
            started = time.perf_counter()
            second = await engine.queue_changed(CRM)
            second_seconds = time.perf_counter() - started
            # Only the renamed ones differ: the SQL-made fingerprints equal crmsync's for the others.
            assert (first.requeued, first.unchanged) == (renamed, touched), first
            assert second.scanned == 0, second
            print(
                f"| {contacts:,} | {renamed:,} | {touched:,} | {first.scanned:,} | {first.requeued:,} "
                f"| {first_seconds:.2f} s | {second_seconds:.2f} s |"
            )
        finally:
            await store.close()
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--changed", type=float, default=0.01, help="share renamed (0.01: 1 %%)")
    arguments = parser.parse_args()
    print(
        "| contacts | changed (name) | touched (phone, not sent) | compared | re-queued "
        "| first scan | second scan |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    asyncio.run(run(arguments.contacts, arguments.changed))


if __name__ == "__main__":
    main()
