"""Compare the test runs of CI's environments (JUnit XML files written by pytest).

Usage: python ci/matrix_report.py NAME=REPORT.xml NAME=REQUIREMENTS ...

Prints, per environment, the resolved versions of the packages crmsync's supported-versions promise is
about, and the tests passed, failed, errored and skipped. Exits 1 when a test failed, errored or was
skipped, when no test ran, or when one environment ran a test another did not: every environment runs
the whole suite.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

PACKAGES = (
    "python",
    "sqlalchemy",
    "pydantic",
    "pydantic-settings",
    "fastapi",
    "starlette",
    "anyio",
    "click",
    "apscheduler",
    "asyncpg",
    "psycopg",
    "typing-extensions",
    "httpx",
    "postgresql",
)


def outcomes(report: Path) -> dict[str, str]:
    """Each test's outcome, keyed by its id; a test that errors in teardown counts as an error."""
    result: dict[str, str] = {}
    # our own pytest run's report, not untrusted input
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314
        test_id = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case} & {"failure", "error", "skipped"}
        outcome = "failed" if "failure" in kinds else "error" if "error" in kinds else None
        outcome = outcome or ("skipped" if "skipped" in kinds else "passed")
        if result.get(test_id, "passed") == "passed":
            result[test_id] = outcome
    return result


def versions(lines: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lines:
        name, _, version = line.strip().partition("==")
        if version:
            found[name.lower().replace("_", "-")] = version
    return found


def main(argv: list[str]) -> int:
    runs: dict[str, dict[str, str]] = {}
    resolved: dict[str, dict[str, str]] = {}
    for arg in argv:
        name, _, path = arg.partition("=")
        if path.endswith(".xml"):
            runs[name] = outcomes(Path(path))
        else:
            resolved[name] = versions(Path(path).read_text().splitlines())
    ok = True
    width = max(len(p) for p in PACKAGES)
    print(f"{'':{width}}  " + "  ".join(f"{name:>12}" for name in resolved))
    for package in PACKAGES:
        row = [resolved[name].get(package, "-") for name in resolved]
        print(f"{package:{width}}  " + "  ".join(f"{v:>12}" for v in row))
    for name, run in runs.items():
        counts = {
            k: sum(1 for v in run.values() if v == k)
            for k in ("passed", "failed", "error", "skipped")
        }
        print(f"{name}: " + ", ".join(f"{count} {kind}" for kind, count in counts.items()))
        if not run or counts["passed"] != len(run):
            ok = False
    every = set().union(*runs.values()) if runs else set()
    for name, run in runs.items():
        missing = sorted(every - run.keys())
        if missing:
            ok = False
            print(f"{name} did not run {len(missing)} tests the others ran, e.g. {missing[:3]}")
    if not ok:
        print("FAILED: every environment must pass the whole suite, nothing skipped")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
