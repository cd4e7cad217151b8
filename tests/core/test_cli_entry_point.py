"""The ``crmsync`` script as a newcomer meets it: the real console entry point, run as a process in an
empty working folder, with the installed adapters and no credentials.

Every bad input answers with exactly one line on stderr and a non-zero exit, and leaves the database and
the working folder as they were. Read-only commands never create a file.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from crmsync_core import Layout, Registry, Store

CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/crmsync"
STATUSES = ("New", "Selected", "Queued", "Processing", "Complete", "Error", "Skipped")


def environment(**extra: str) -> dict[str, str]:
    """The user's environment without crmsync or CRM settings, on an 80-column terminal."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("BREVO_", "HUBSPOT_", "MAUTIC_", "N8N_", "CRMSYNC_"))
    }
    return {**env, "COLUMNS": "80", **extra}


def crmsync(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CRMSYNC, *args],
        cwd=cwd,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def folder_state(folder: Path) -> dict[str, object]:
    """Every file's name, and each file's content (a SQLite file's as SQL), to compare before/after."""
    names = sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
    contents: dict[str, object] = {"files": names}
    for name in names:
        path = folder / name
        if path.suffix == ".sqlite3":
            # immutable: a read-only connection would leave -wal and -shm files behind
            with sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True) as conn:
                contents[name] = list(conn.iterdump())
            conn.close()
        elif path.is_file():
            contents[name] = path.read_bytes()
    return contents


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """An empty working folder."""
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A ``crmsync.sqlite3`` with the default table of the installed adapters and three contacts, the
    first queued for brevo (made once: each test copies it); and their ids."""
    path = tmp_path_factory.mktemp("template") / "crmsync.sqlite3"
    rows = [
        {"id": uuid.uuid4(), "email": f"{name.lower()}@acme.test", "name": name}
        for name in ("Ada", "Grace", "Alan")
    ]

    async def seed() -> None:
        layout = Layout.default(list(Registry().adapters().values()))
        store = await Store.connect(f"sqlite:///{path}", layout, create=True)
        try:
            await store.add_contacts(rows)
            await store.queue("brevo", [rows[0]["id"]])
        finally:
            await store.close()

    asyncio.run(seed())
    assert sorted(p.name for p in path.parent.iterdir()) == ["crmsync.sqlite3"]
    return path, [str(row["id"]) for row in rows]


@pytest.fixture
def ids(folder: Path, template: tuple[Path, list[str]]) -> list[str]:
    """``crmsync.sqlite3`` in the working folder (three contacts, the first queued for brevo); their
    ids."""
    shutil.copyfile(template[0], folder / "crmsync.sqlite3")
    return template[1]


def assert_one_error_line(result: subprocess.CompletedProcess[str], code: int, message: str) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert message in lines[0], lines[0]
    return lines[0]


UNKNOWN_ID = "0f0f0f0f-0000-4000-8000-000000000000"

BAD_INPUTS = [
    pytest.param(
        ["--database-url", "mysql://u@h/db", "status"],
        2,
        "crmsync cannot use 'mysql' databases; give sqlite:///FILE, postgresql://USER@HOST/DB",
        id="unknown-scheme",
    ),
    pytest.param(
        ["status", "--database-url", "garbage"],
        2,
        "--database-url 'garbage' is not a database URL; give sqlite:///FILE",
        id="unparseable-url",
    ),
    pytest.param(
        ["status", "--database-url", "postgresql://u:s3cret@h:port/db"],
        2,
        "'postgresql://u:***@h:port/db' is not a database URL",
        id="unparseable-url-hides-password",
    ),
    *[
        pytest.param(
            [*command, "--database-url", UNREACHABLE],
            1,
            "cannot reach the database postgresql+psycopg://postgres@127.0.0.1:1/crmsync",
            id=f"unreachable-{'-'.join(c.strip('-') for c in command[:2])}",
        )
        for command in (
            ["status"],
            ["schema"],
            ["schema", "--apply"],
            ["queue", "--crm", "brevo", "--ids", UNKNOWN_ID],
            ["unselect", "--crm", "brevo", "--ids", UNKNOWN_ID],
            ["sync", "--crm", "brevo"],
            ["demo", "--contacts", "10"],
        )
    ],
    pytest.param(
        ["queue", "--crm", "brevoo", "--ids", "{0}"],
        1,
        "no adapter is called 'brevoo'; did you mean 'brevo'? "
        "(installed adapters: brevo, hubspot, mautic, n8n)",
        id="unknown-crm-close",
    ),
    pytest.param(
        ["status", "--crm", "pipedrive"],
        1,
        "no adapter for CRM 'pipedrive' is installed (pip install crmsync-pipedrive)",
        id="unknown-crm-status",
    ),
    pytest.param(
        ["sync", "--crm", "nope"],
        1,
        "no adapter for CRM 'nope' is installed",
        id="unknown-crm-sync",
    ),
    pytest.param(
        ["schema", "--crm", "bogus"],
        1,
        "no adapter for CRM 'bogus' is installed",
        id="schema-refuses-unknown-crm",
    ),
    pytest.param(
        ["queue", "--crm", "brevo", "--where", "colour=red"],
        2,
        "there is no field 'colour'; the fields are: curation_status, processing_status, "
        "sync_status, email_type, domain_id, page_id, email_contains, name_contains, has_gmail",
        id="unknown-where-field",
    ),
    pytest.param(
        ["queue", "--crm", "brevo", "--ids", f"{{1}},{UNKNOWN_ID}"],
        1,
        f"1 of 2 contact ids are not in table 'contacts' ({UNKNOWN_ID}); nothing was queued",
        id="nonexistent-ids-queue",
    ),
    pytest.param(
        ["unselect", "--crm", "brevo", "--ids", f"{{0}},{UNKNOWN_ID}"],
        1,
        f"1 of 2 contact ids are not in table 'contacts' ({UNKNOWN_ID}); nothing was unselected",
        id="nonexistent-ids-unselect",
    ),
    pytest.param(
        ["sync", "--crm", "brevo", "--limit", "-5"],
        2,
        "Invalid value for '--limit': -5 is not in the range x>=1.",
        id="negative-limit",
    ),
    pytest.param(
        ["sync", "--crm", "brevo", "--interval", "0", "--forever"],
        2,
        "Invalid value for '--interval': 0.0 is not in the range x>0.",
        id="zero-interval",
    ),
    pytest.param(
        ["demo", "--contacts", "-1"],
        2,
        "Invalid value for '--contacts': -1 is not in the range 1<=x<=1000000.",
        id="negative-demo-contacts",
    ),
    pytest.param(
        ["queue", "--crm", "brevo"],
        2,
        "say which contacts to queue: --ids ID,ID, --ids-file FILE or --where FIELD=VALUE",
        id="queue-neither-ids-nor-filter",
    ),
    pytest.param(
        ["queue", "--crm", "brevo", "--ids", "{1}", "--where", "has_gmail=true"],
        2,
        "give --ids/--ids-file or --where, not both",
        id="queue-both",
    ),
    pytest.param(
        ["sync", "--crm", "brevo"],
        1,
        "brevo stopped: BREVO_API_KEY is not set",
        id="missing-api-key",
    ),
    pytest.param(["stauts"], 2, "No such command 'stauts'. Did you mean 'status'?", id="typo"),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUTS)
def test_bad_input_is_one_line_and_changes_nothing(
    folder: Path, ids: list[str], args: list[str], code: int, message: str
) -> None:
    before = folder_state(folder)
    result = crmsync(folder, *(arg.format(*ids) for arg in args))
    assert_one_error_line(result, code, message)
    assert folder_state(folder) == before


def test_the_missing_key_line_names_the_variable_and_the_run_says_what_it_did(
    folder: Path, ids: list[str]
) -> None:
    result = crmsync(folder, "sync", "--crm", "brevo")
    line = assert_one_error_line(result, 1, "BREVO_API_KEY")
    assert line.startswith("error: brevo stopped: BREVO_API_KEY is not set: create a v3 API key")
    # The run's one line of counts; its duration depends on the machine.
    assert re.fullmatch(
        r"brevo: synced 0, skipped 0, retrying 0, failed 0 in \d+\.\d s\n", result.stdout
    )


@pytest.mark.parametrize(
    "args",
    [
        ["status"],
        ["status", "--json"],
        ["queue", "--crm", "brevo", "--ids", "x"],
        ["sync", "--crm", "brevo"],
        ["schema", "--apply", "--database-url", "sqlite:///sub/dir/x.sqlite3"],
        ["demo", "--database-url", "sqlite:///sub/dir/x.sqlite3"],
    ],
    ids=lambda args: "-".join(a.strip("-") for a in args[:2]),
)
def test_no_database_file_is_one_line_and_creates_nothing(folder: Path, args: list[str]) -> None:
    result = crmsync(folder, *args)
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: "), line
    assert list(folder.iterdir()) == []


def test_read_only_commands_write_nothing(folder: Path, ids: list[str]) -> None:
    before = folder_state(folder)
    for args in (
        ["status"],
        ["status", "--json", "--crm", "brevo"],
        ["adapters"],
        ["schema"],
        ["schema", "--database-url", "sqlite:///crmsync.sqlite3"],
        ["schema", "--database-url", "sqlite:///other.sqlite3"],
    ):
        result = crmsync(folder, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stderr == "", (args, result.stderr)
        assert folder_state(folder) == before, args


def test_schema_for_a_missing_file_prints_the_whole_table(folder: Path) -> None:
    result = crmsync(folder, "schema", "--database-url", "sqlite:///new.sqlite3")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("CREATE TABLE contacts (")
    assert list(folder.iterdir()) == []


def test_database_and_layout_options_go_before_or_after_the_command(
    folder: Path, ids: list[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{folder / 'crmsync.sqlite3'}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for args in (
        ["--database-url", url, "status", "--json"],
        ["status", "--json", "--database-url", url],
        ["status", "--database-url", url, "--layout", "default", "--json"],
        ["--layout", "default", "status", "--json", "--database-url", url],
    ):
        result = crmsync(elsewhere, *args)
        assert result.returncode == 0, (args, result.stderr)
        summaries = {s["crm"]: s for s in json.loads(result.stdout)}
        assert summaries["brevo"]["selected"] == 1, args
        assert summaries["brevo"]["total"] == 3, args
    # The option after the command wins over the one before it and over the environment.
    result = crmsync(
        elsewhere,
        "--database-url",
        "sqlite:///missing.sqlite3",
        "status",
        "--json",
        "--database-url",
        url,
        CRMSYNC_DATABASE_URL="garbage",
    )
    assert result.returncode == 0, result.stderr
    wrong_layout = crmsync(elsewhere, "status", "--database-url", url, "--layout", "scrapersky")
    assert_one_error_line(wrong_layout, 1, "table 'contacts' lacks the columns")
    assert list(elsewhere.iterdir()) == []


def test_the_status_table_fits_80_columns_and_json_stays_complete(
    folder: Path, ids: list[str]
) -> None:
    table = crmsync(folder, "status")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, table.stdout
    header = next(line.split() for line in lines if line.split()[:1] == ["status"])
    assert header == ["status", "brevo", "hubspot", "mautic", "n8n"]
    rows = {line.split()[0]: line.split()[1:] for line in lines if line.split()[:1]}
    for status in STATUSES:
        assert len(rows[status]) == 4, (status, table.stdout)  # nothing cut ("Select…")
    assert rows["Selected"] == ["1", "0", "0", "0"]
    assert rows["New"] == ["2", "3", "3", "3"]

    summaries = json.loads(crmsync(folder, "status", "--json").stdout)
    assert set(summaries[0]) == {
        "crm",
        *(status.lower() for status in STATUSES),
        "total",
        "due",
        "retrying",
        "out_of_date",
        "oldest_due_seconds",
        "paused_since",
        "probe_at",
    }


class _Webhook(http.server.BaseHTTPRequestHandler):
    """An n8n Webhook node that accepts everything."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"message": "Workflow was started"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def webhook() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Webhook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/webhook/contacts"
    finally:
        server.shutdown()
        server.server_close()


def test_a_sync_off_a_terminal_logs_progress_and_a_final_line(
    folder: Path, ids: list[str], webhook: str
) -> None:
    queued = crmsync(folder, "queue", "--crm", "n8n", "--ids", ",".join(ids))
    assert queued.returncode == 0, queued.stderr

    result = crmsync(
        folder,
        "sync",
        "--crm",
        "n8n",
        "--progress-every",
        "0",
        N8N_WEBHOOK_URL=webhook,
        N8N_SYNC_SCHEDULER_BATCH_SIZE="1",
        N8N_SYNC_CONCURRENCY="1",
    )

    assert result.returncode == 0, result.stderr
    progress = result.stderr.splitlines()
    assert len(progress) == 3, result.stderr  # one line per batch of one
    assert progress[0].startswith("n8n: 1/3 done (synced 1, skipped 0, retrying 0, failed 0), ")
    assert progress[-1].startswith("n8n: 3/3 done (synced 3, skipped 0, retrying 0, failed 0), ")
    assert "/s, ETA " in progress[0]
    assert result.stdout.startswith("n8n: synced 3, skipped 0, retrying 0, failed 0 in ")


def test_help_and_a_typo_answer_without_loading_the_database_http_or_test_code() -> None:
    heavy = ("sqlalchemy", "httpx", "pytest", "rich", "pydantic", "psycopg", "aiosqlite")
    for argv in (["--help"], ["stauts"], ["sync", "--help"], ["hubspot", "--help"]):
        script = (
            "import sys\n"
            "from crmsync_core.cli import main\n"
            "try:\n"
            f"    main({argv!r})\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(sys.modules), file=sys.stderr)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            env=environment(),
            check=True,
        )
        loaded = json.loads(result.stderr.splitlines()[-1].replace("'", '"'))
        roots = {name.split(".")[0] for name in loaded}
        assert roots.isdisjoint(heavy), (argv, sorted(roots & set(heavy)))
        assert not [name for name in loaded if "fake" in name.split(".")[-1]], argv
        assert not [name for name in loaded if name.startswith("crmsync_core.testing")], argv
    listed = crmsync(Path.cwd(), "--help")
    assert "hubspot" in listed.stdout.split(), "plugin commands are listed"


def test_importing_the_core_loads_no_database_http_or_test_code() -> None:
    script = "import sys, crmsync_core\nprint(sorted(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    loaded = json.loads(result.stdout.replace("'", '"'))
    roots = {name.split(".")[0] for name in loaded}
    assert roots.isdisjoint({"sqlalchemy", "httpx", "pytest", "pydantic", "psycopg"}), roots
    assert not [name for name in loaded if "fake" in name.split(".")[-1]]


def test_no_command_shows_the_help_not_an_error(folder: Path) -> None:
    result = crmsync(folder)
    assert result.returncode == 2
    assert "Usage: crmsync [OPTIONS] COMMAND" in result.stderr
    assert "error:" not in result.stderr
