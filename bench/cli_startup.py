"""How fast the ``crmsync`` command answers, and what ``import crmsync_core`` loads (issue 10, item 2).

    .venv/bin/python -m bench.cli_startup [--runs 10]

Wall time of ``crmsync --help`` and of a mistyped command (``crmsync stauts``) over ``--runs`` runs each
(median and max, and the median CPU time; target ≤ 0.3 s), next to a bare ``python -c pass`` on the same machine at the same time;
then how many modules ``import crmsync_core`` and ``crmsync --help`` load, whether any of SQLAlchemy,
httpx, pydantic, rich or pytest is among them, and the slowest imports of ``crmsync --help`` from
``python -X importtime``. Prints markdown.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHON = sys.executable
CRMSYNC = str(Path(sys.executable).with_name("crmsync"))
HEAVY = ("sqlalchemy", "httpx", "pydantic", "rich", "pytest", "psycopg", "aiosqlite")
LOADED = (
    "import sys\n{code}\nprint(len(sys.modules), ','.join(sorted(sys.modules)), file=sys.stderr)"
)
HELP = "from crmsync_core.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass"


#: as installed by pip, which compiles bytecode: a process that may not write it (PYTHONDONTWRITEBYTECODE)
#: compiles every module from source on every run, and measures the compiler
ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}


def wall_and_cpu_times(command: list[str], runs: int) -> tuple[list[float], list[float]]:
    """Wall time of each run, and its CPU time (user + system): on a shared machine the wall time
    includes waiting for a core, the CPU time does not. One unmeasured run first writes the bytecode."""
    subprocess.run(command, capture_output=True, check=False, env=ENV)
    walls, cpus = [], []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, capture_output=True, check=False, env=ENV)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return walls, cpus


def loaded_modules(code: str) -> tuple[int, list[str]]:
    result = subprocess.run(
        [PYTHON, "-c", LOADED.format(code=code)], capture_output=True, text=True, check=True
    )
    count, names = result.stderr.splitlines()[-1].split(" ", 1)
    heavy = sorted({name.split(".")[0] for name in names.split(",")} & set(HEAVY))
    return int(count), heavy


def slowest_imports(code: str, top: int) -> list[tuple[int, str]]:
    result = subprocess.run(
        [PYTHON, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    rows = []
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        if not name.startswith("  "):  # top-level imports only: their cumulative time adds up
            rows.append((int(cumulative), name.strip()))
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()

    load = os.getloadavg()[0]
    print(f"{args.runs} runs each; load average {load:.1f} on {os.cpu_count()} cores\n")
    print("| command | wall median s | wall max s | CPU median s |")
    print("|---|---:|---:|---:|")
    for label, command in (
        ("`python -c pass` (the floor)", [PYTHON, "-c", "pass"]),
        ("`crmsync --help`", [CRMSYNC, "--help"]),
        ("`crmsync stauts` (a typo)", [CRMSYNC, "stauts"]),
        ("`python -c 'import crmsync_core'`", [PYTHON, "-c", "import crmsync_core"]),
    ):
        walls, cpus = wall_and_cpu_times(command, args.runs)
        print(
            f"| {label} | {statistics.median(walls):.3f} | {max(walls):.3f} "
            f"| {statistics.median(cpus):.3f} |"
        )

    print("\n| what runs | modules loaded | of " + ", ".join(HEAVY) + " |")
    print("|---|---:|---|")
    for label, code in (
        ("`python -c pass`", "pass"),
        ("`import crmsync_core`", "import crmsync_core"),
        ("`crmsync --help`", HELP),
        ("`from crmsync_core import Store` (uses the database)", "from crmsync_core import Store"),
    ):
        count, heavy = loaded_modules(code)
        print(f"| {label} | {count} | {', '.join(heavy) or 'none'} |")

    print("\nslowest top-level imports of `crmsync --help` (`python -X importtime`, cumulative):\n")
    print("| module | ms |")
    print("|---|---:|")
    for microseconds, name in slowest_imports(HELP, 8):
        print(f"| {name} | {microseconds / 1000:.1f} |")


if __name__ == "__main__":
    main()
