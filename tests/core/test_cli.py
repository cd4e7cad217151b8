"""Every ``crmsync`` command, as a user runs it, against a real SQLite file and a real PostgreSQL.

The table is created the way the documentation tells users to: with the SQL ``crmsync schema`` prints.
The adapters are the four installed packages, found through their entry points, with no credentials in
the environment: ``sync`` must then stop with what to set and leave every contact queued.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from crmsync_core import Layout, Registry, Store, hookimpl
from crmsync_core.cli import _register_plugin_commands, cli, main

from ..conftest import UseRegistry, libpq_dsn

CRMS = ("brevo", "hubspot", "mautic", "n8n")
STATUSES = ("new", "selected", "queued", "processing", "complete", "error", "skipped")


@pytest.fixture(autouse=True)
def _user_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, use_registry: UseRegistry
) -> None:
    """The installed adapters, no credentials, a wide terminal, and a scratch working folder."""
    for name in list(os.environ):
        if name.startswith(("BREVO_", "HUBSPOT_", "MAUTIC_", "N8N_", "CRMSYNC_")):
            monkeypatch.delenv(name)
    use_registry(None)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)


# click 8.2 keeps stderr apart from stdout by default and dropped `mix_stderr`; 8.1 needs it, or
# `result.stderr` raises. Either way `stdout` and `stderr` are then the two streams.
_SEPARATE_STDERR: dict[str, Any] = (
    {"mix_stderr": False}
    if tuple(map(int, importlib.metadata.version("click").split(".")[:2])) < (8, 2)
    else {}
)


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner(**_SEPARATE_STDERR).invoke(cli, list(args), input=input)


def execute_sql(url: str, sql: str) -> None:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split(":///", 1)[1]) as conn:
            conn.executescript(sql)
    else:
        with psycopg.connect(libpq_dsn(url), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]


def statuses_by_id(url: str, crm: str) -> dict[str, str]:
    query = f"SELECT id, {crm}_sync_status FROM contacts"
    if url.startswith("sqlite"):
        with sqlite3.connect(url.split(":///", 1)[1]) as conn:
            return {str(uuid.UUID(str(i))): s for i, s in conn.execute(query)}
    with psycopg.connect(libpq_dsn(url)) as conn:
        return {str(i): s for i, s in conn.execute(query)}  # type: ignore[arg-type]


CONTACTS = [
    {"email": "ada@acme.test", "name": "Ada Lovelace"},
    {"email": "grace@acme.test", "name": "Grace Hopper"},
    {"email": "alan@acme.test", "name": "Alan Turing"},
    {"email": "edsger@other.test", "name": "Edsger Dijkstra"},
    {"email": "barbara@other.test", "name": "Barbara Liskov"},
    {"email": None, "name": "No Address"},
]


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL as a user types it: ``sqlite:///file`` or ``postgresql+psycopg://...``."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'x.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def ids(url: str) -> list[str]:
    """The contacts table created from ``crmsync schema``, holding CONTACTS; their ids in order."""
    dialect = "sqlite" if url.startswith("sqlite") else "postgresql"
    schema = run("--database-url", url, "schema", "--dialect", dialect)
    assert schema.exit_code == 0, schema.output
    execute_sql(url, schema.stdout)
    rows = [{"id": uuid.uuid4(), **contact} for contact in CONTACTS]

    async def seed() -> None:
        store = await Store.connect(url, Layout.default(list(Registry().adapters().values())))
        try:
            await store.add_contacts(rows)
        finally:
            await store.close()

    asyncio.run(seed())
    return [str(row["id"]) for row in rows]


def status_of(url: str, crm: str) -> dict[str, Any]:
    result = run("--database-url", url, "status", "--crm", crm, "--json")
    assert result.exit_code == 0, result.output
    [summary] = json.loads(result.stdout)
    return summary


def counts(summary: dict[str, Any]) -> dict[str, int]:
    return {status: summary[status] for status in STATUSES if summary[status]}


def assert_one_line_error(result: Result, code: int, message: str) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.stdout + result.stderr
    # One message (rich may wrap it to the terminal's width), after click's usage lines if any.
    assert result.stderr.count("rror:") == 1, result.stderr
    assert message in " ".join(result.stderr.split("rror:")[1].split()), result.stderr


# -- queue, unselect, status -------------------------------------------------------------------------


def test_queue_by_ids_then_status(url: str, ids: list[str]) -> None:
    unknown = str(uuid.uuid4())
    result = run("--database-url", url, "queue", "--crm", "brevo", "--ids", f"{ids[0]},{ids[1]}")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "queued": 2,
        "already_queued": 0,
        "skipped": 0,
        "not_found": 0,
    }

    again = run(
        "--database-url", url, "queue", "--crm", "brevo", "--ids-file", "-",
        input=f"{ids[1]}\n{ids[2]}\n{ids[5]}\n",
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout) == {
        "queued": 1,
        "already_queued": 1,
        "skipped": 1,
        "not_found": 0,
    }

    # An id that is not in the table refuses the whole request: the others are not queued either.
    refused = run("--database-url", url, "queue", "--crm", "brevo", "--ids", f"{ids[3]},{unknown}")
    assert_one_line_error(refused, 1, "1 of 2 contact ids are not in table 'contacts'")

    summary = status_of(url, "brevo")
    assert counts(summary) == {"new": 2, "selected": 3, "skipped": 1}
    assert (summary["total"], summary["due"], summary["retrying"]) == (6, 3, 0)
    assert status_of(url, "hubspot")["new"] == 6, "queueing for brevo leaves hubspot alone"


def test_queue_by_filter(url: str, ids: list[str]) -> None:
    result = run(
        "--database-url", url, "queue", "--crm", "n8n", "--where", "email_contains=ACME.test"
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["queued"] == 3
    both = run(
        "--database-url", url, "queue", "--crm", "n8n", "--system",
        "--where", "email_contains=.test", "--where", "name_contains=liskov",
    )  # fmt: skip
    assert both.exit_code == 0, both.output
    assert json.loads(both.stdout)["queued"] == 1
    assert counts(status_of(url, "n8n")) == {"new": 2, "selected": 3, "queued": 1}
    assert statuses_by_id(url, "n8n")[ids[4]] == "Queued", "--system queues as the system"


def test_unselect(url: str, ids: list[str]) -> None:
    queued = run("--database-url", url, "queue", "--crm", "mautic", "--ids", ",".join(ids[:3]))
    assert queued.exit_code == 0, queued.output
    result = run("--database-url", url, "unselect", "--crm", "mautic", "--ids", ",".join(ids[:2]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"unselected": 2}
    assert counts(status_of(url, "mautic")) == {"new": 5, "selected": 1}
    again = run("--database-url", url, "unselect", "--crm", "mautic", "--ids", ids[0])
    assert json.loads(again.stdout) == {"unselected": 0}


def test_status_lists_every_crm_of_the_table(url: str, ids: list[str]) -> None:
    result = run("--database-url", url, "status", "--json")
    assert result.exit_code == 0, result.output
    summaries = json.loads(result.stdout)
    assert sorted(s["crm"] for s in summaries) == list(CRMS)
    for summary in summaries:
        assert summary["total"] == summary["new"] == 6
        assert summary["oldest_due_seconds"] is None
    table = run("--database-url", url, "status")
    assert table.exit_code == 0, table.output
    for crm in CRMS:
        assert crm in table.stdout.split()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["queue", "--crm", "brevo", "--ids", "{0},12"], 1, "contact id '12' is not a valid UUID"),
        (["queue", "--crm", "brevo", "--where", "email_contains"], 2, "is not FIELD=VALUE"),
        (
            ["queue", "--crm", "brevo", "--where", "colour=blue"],
            2,
            "there is no field 'colour'; the fields are: curation_status, processing_status",
        ),
        (
            ["queue", "--crm", "brevo", "--where", "has_gmail=maybe"],
            2,
            "has_gmail='maybe': Input should be a valid boolean",
        ),
        (["queue", "--crm", "brevo", "--ids", "{0}", "--where", "has_gmail=true"], 2, "not both"),
        (["queue", "--crm", "brevo"], 2, "say which contacts to queue: --ids ID,ID"),
        (
            ["queue", "--crm", "pipedrive", "--ids", "{0}"],
            1,
            "no adapter for CRM 'pipedrive' is installed (pip install crmsync-pipedrive)",
        ),
        (["queue", "--crm", "brevoo", "--ids", "{0}"], 1, "did you mean 'brevo'?"),
        (["unselect", "--crm", "brevo", "--ids", "{0},not-an-id"], 1, "'not-an-id' is not a valid"),
        (
            ["sync", "--crm", "pipedrive"],
            1,
            "no adapter for CRM 'pipedrive' is installed (pip install crmsync-pipedrive); "
            "installed adapters: brevo, hubspot, mautic, n8n",
        ),
    ],
    # Explicit ids: pytest versions differ in how they shorten long string parameters, and CI
    # compares test ids across the dependency environments.
    ids=[
        "bad-uuid",
        "where-without-equals",
        "where-unknown-field",
        "where-bad-boolean",
        "ids-and-where",
        "neither-ids-nor-where",
        "queue-unknown-adapter",
        "queue-typo-in-crm",
        "unselect-bad-id",
        "sync-unknown-adapter",
    ],
)
def test_bad_input_is_one_clear_line_and_writes_nothing(
    url: str, ids: list[str], args: list[str], code: int, message: str
) -> None:
    queued = run("--database-url", url, "queue", "--crm", "brevo", "--ids", ids[3])
    assert queued.exit_code == 0, queued.output
    before = statuses_by_id(url, "brevo")
    result = run("--database-url", url, *(arg.format(ids[0]) for arg in args))
    assert_one_line_error(result, code, message)
    assert statuses_by_id(url, "brevo") == before


def test_a_database_without_the_table_is_one_clear_line(url: str) -> None:
    result = run("--database-url", url, "status")
    assert_one_line_error(result, 1, "crmsync schema")


def test_the_fix_for_a_newly_installed_adapter_can_be_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, use_registry: UseRegistry
) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    execute_sql(url, run("schema", "--dialect", "sqlite").stdout)

    class NewAdapterPackage:
        @hookimpl
        def register_adapters(self, register: Any) -> None:
            from crmsync_core.testing import sandbox_adapter_spec

            register(sandbox_adapter_spec(name="acme"))

    use_registry(Registry(plugins=[NewAdapterPackage()]))
    assert_one_line_error(run("--database-url", url, "status"), 1, "`crmsync schema`")
    execute_sql(url, run("--database-url", url, "schema", "--dialect", "sqlite").stdout)
    assert run("--database-url", url, "status", "--crm", "acme").exit_code == 0


# -- sync ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("crm", "setting"),
    [
        ("n8n", "N8N_WEBHOOK_URL"),
        ("brevo", "BREVO_API_KEY"),
        ("hubspot", "HUBSPOT_API_KEY"),
        ("mautic", "MAUTIC_BASE_URL"),
    ],
)
def test_sync_without_credentials_stops_and_keeps_contacts_queued(
    url: str, ids: list[str], crm: str, setting: str
) -> None:
    queued = run("--database-url", url, "queue", "--crm", crm, "--ids", ",".join(ids[:3]))
    assert queued.exit_code == 0, queued.output

    result = run("--database-url", url, "sync", "--crm", crm)

    assert result.exit_code == 1, result.output
    stopped = [line for line in result.stderr.splitlines() if f"{crm} stopped:" in line]
    assert len(stopped) == 1, result.stderr
    assert setting in stopped[0]
    assert f"{crm}: synced 0, skipped 0, retrying 0, failed 0" in result.stdout
    summary = status_of(url, crm)
    assert counts(summary) == {"new": 3, "selected": 3}
    assert summary["due"] == 3, "the contacts wait in the queue for the key"


def test_sync_json_reports_what_stopped_the_run(url: str, ids: list[str]) -> None:
    run("--database-url", url, "queue", "--crm", "n8n", "--ids", ids[0])
    result = run("--database-url", url, "sync", "--crm", "n8n", "--crm", "brevo", "--json")
    assert result.exit_code == 1, result.output
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["crm"] for r in reports] == ["n8n", "brevo"]
    assert "N8N_WEBHOOK_URL" in reports[0]["stopped"]
    assert "BREVO_API_KEY" in reports[1]["stopped"]
    assert all(r["errors_by_kind"] == {"fatal": 1} and r["claimed"] == 0 for r in reports)
    assert status_of(url, "n8n")["due"] == 1


# -- demo ---------------------------------------------------------------------------------------------


def summary_tables(output: str) -> dict[str, dict[str, int]]:
    """The status table the demo prints (a row per status, a column per CRM): {crm: {row: count}}."""
    tables: dict[str, dict[str, int]] = {}
    crms: list[str] = []
    for line in output.splitlines():
        cells = line.split()
        if cells[:1] == ["status"]:
            crms = cells[1:]
            for crm in crms:
                tables[crm] = {}
        elif crms and len(cells) >= len(crms) + 1 and cells[-1].replace(",", "").isdigit():
            label = " ".join(cells[: -len(crms)])
            for crm, value in zip(crms, cells[-len(crms) :], strict=True):
                tables[crm][label] = int(value.replace(",", ""))
        elif not cells or not cells[-1].replace(",", "").isdigit():
            crms = [] if cells and not set(line.strip()) <= {"─"} else crms
    return tables


def test_demo_syncs_every_contact_to_an_end_state(tmp_path: Path) -> None:
    path = tmp_path / "x.sqlite3"
    path.write_text("a stale file that is not a database")
    url = f"sqlite:///{path}"

    result = run("--database-url", url, "demo", "--contacts", "300")

    assert result.exit_code == 0, result.output
    tables = summary_tables(result.stdout)
    assert set(tables) == set(CRMS), result.stdout
    for crm, table in tables.items():
        assert table["Complete"] + table["Skipped"] + table["Error"] == 300, (crm, table)
        assert table["Complete"] > 250, (crm, table)
        for unfinished in ("New", "Selected", "Queued", "Processing", "due now", "retrying"):
            assert table[unfinished] == 0, (crm, unfinished, table)
    for crm in CRMS:
        assert result.stdout.count(f"\n{crm}: synced ") == 1, result.stdout
    assert "Skipped: no e-mail address" in result.stdout
    assert "Skipped: invalid e-mail address" in result.stdout
    assert f"crmsync status --database-url {url}" in result.stdout

    # What the demo says it left is what is in the file.
    for crm in CRMS:
        summary = status_of(url, crm)
        assert summary["total"] == 300
        assert (summary["complete"], summary["skipped"], summary["error"]) == (
            tables[crm]["Complete"],
            tables[crm]["Skipped"],
            tables[crm]["Error"],
        )

    again = run("--database-url", url, "demo", "--contacts", "300")
    assert again.exit_code == 0, again.output
    assert status_of(url, "brevo")["total"] == 300, "the demo starts from an empty file each time"


def test_demo_on_postgresql(postgres_url: str) -> None:
    result = run(
        "--database-url", postgres_url, "demo", "--contacts", "300", "--failure-rate", "0.2"
    )
    assert result.exit_code == 0, result.output
    for crm in CRMS:
        summary = status_of(postgres_url, crm)
        assert summary["total"] == 300
        assert summary["complete"] + summary["skipped"] + summary["error"] == 300, summary
    assert "retried:" in result.stdout, "with 20% failures some requests are retried"


# -- adapters -----------------------------------------------------------------------------------------


def test_adapters_prints_distributions_versions_and_capabilities() -> None:
    import importlib.metadata

    result = run("adapters")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    adapters = {a["name"]: a for a in report["adapters"]}
    assert list(adapters) == list(CRMS)
    for crm, adapter in adapters.items():
        assert adapter["distribution"] == f"crmsync-{crm}"
        assert adapter["version"] == importlib.metadata.version(f"crmsync-{crm}")
        assert adapter["settings_env_prefix"] == f"{crm.upper()}_"
        assert adapter["sandbox"] is True
        assert adapter["check"] is True
        assert adapter["max_batch_size"] >= 1
        assert isinstance(adapter["partial_success"], bool)
    assert adapters["n8n"]["remote_id_column"] == "n8n_workflow_id"
    assert adapters["brevo"]["remote_id_column"] == "brevo_contact_id"
    assert {p["name"]: p["hooks"] for p in report["plugins"]} == {
        "brevo": ["register_adapters", "register_commands"],
        "hubspot": ["register_adapters", "register_commands"],
        "mautic": ["register_adapters", "register_commands"],
        "n8n": ["register_adapters"],
    }
    assert report["failures"] == []


def test_adapters_honours_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRMSYNC_ADAPTERS", "brevo,n8n")
    report = json.loads(run("adapters").stdout)
    assert [a["name"] for a in report["adapters"]] == ["brevo", "n8n"]


# -- schema -------------------------------------------------------------------------------------------


def test_schema_is_valid_postgresql(postgres_url: str) -> None:
    result = run("schema")
    assert result.exit_code == 0, result.output
    execute_sql(postgres_url, result.stdout)

    status = run("--database-url", postgres_url, "status", "--json")
    assert status.exit_code == 0, status.output
    assert sorted(s["crm"] for s in json.loads(status.stdout)) == list(CRMS)
    with (
        psycopg.connect(libpq_dsn(postgres_url)) as conn,
        pytest.raises(psycopg.errors.CheckViolation),
    ):
        conn.execute(
            "INSERT INTO contacts (id, brevo_sync_status) VALUES (gen_random_uuid(), 'Done')"
        )


def test_schema_for_chosen_crms() -> None:
    result = run("schema", "--crm", "hubspot")
    assert result.exit_code == 0, result.output
    assert "hubspot_sync_status" in result.stdout
    assert "brevo_sync_status" not in result.stdout


def test_schema_refuses_a_crm_no_adapter_has() -> None:
    # Columns for a name no adapter has would never be used: the closest installed name instead.
    assert_one_line_error(run("schema", "--crm", "bogus"), 1, "no adapter for CRM 'bogus'")
    assert_one_line_error(run("schema", "--crm", "hubspo"), 1, "did you mean 'hubspot'?")


def test_schema_scrapersky_is_additive_and_repeatable(
    postgres_url: str, scrapersky_sql: str
) -> None:
    execute_sql(postgres_url, scrapersky_sql)
    before = run("--database-url", postgres_url, "--layout", "scrapersky-per-crm", "status")
    assert_one_line_error(before, 1, "table 'contacts' lacks the columns brevo_attempts")

    migration = run("schema", "--scrapersky")
    assert migration.exit_code == 0, migration.output
    assert migration.stdout.startswith("BEGIN;") and migration.stdout.endswith("COMMIT;\n")
    execute_sql(postgres_url, migration.stdout)
    execute_sql(postgres_url, migration.stdout)  # IF NOT EXISTS: applying it twice is harmless

    after = run(
        "--database-url", postgres_url, "--layout", "scrapersky-per-crm", "status", "--json"
    )
    assert after.exit_code == 0, after.output
    assert sorted(s["crm"] for s in json.loads(after.stdout)) == list(CRMS)
    plain = run("--database-url", postgres_url, "--layout", "scrapersky", "status", "--json")
    assert plain.exit_code == 0, plain.output


def test_the_scrapersky_layout_points_at_its_migration(
    postgres_url: str, scrapersky_sql: str
) -> None:
    execute_sql(postgres_url, scrapersky_sql)
    result = run("--database-url", postgres_url, "--layout", "scrapersky-per-crm", "status")
    assert_one_line_error(result, 1, "`crmsync schema --scrapersky`")


# -- commands from plugins ----------------------------------------------------------------------------


def test_hubspot_adds_its_command_through_the_hook(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["hubspot", "create-properties", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert "Usage: crmsync hubspot create-properties" in out
    assert "HUBSPOT_CUSTOM_PROPERTY_" in out

    _register_plugin_commands()
    listed = run("--help")
    assert "hubspot" in listed.stdout


def test_a_plugin_whose_commands_break_does_not_take_the_cli_down(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], use_registry: UseRegistry
) -> None:
    class Broken:
        @hookimpl
        def register_commands(self, cli: Any) -> None:
            raise RuntimeError("bad plugin")

    use_registry(Registry(plugins=[Broken()]))
    with pytest.raises(SystemExit) as exited:
        main(["schema", "--crm", "brevo"])
    assert exited.value.code == 0
    assert "CREATE TABLE contacts" in capsys.readouterr().out
