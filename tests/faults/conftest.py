"""The fault-injection suite prints each scenario's figures at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

#: one dict per scenario, filled by the tests
FIGURES: list[dict[str, Any]] = []
COLUMNS = ("contacts", "accepted", "complete", "error", "attempts", "duplicates", "stuck")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FIGURES:
        return
    terminalreporter.section("fault injection: what the CRM accepted vs what the table records")
    terminalreporter.write_line(f"{'scenario':<22}" + "".join(f"{c:>11}" for c in COLUMNS))
    for row in FIGURES:
        terminalreporter.write_line(
            f"{row['scenario']:<22}" + "".join(f"{row[c]:>11}" for c in COLUMNS)
        )


@pytest.fixture
def figures() -> list[dict[str, Any]]:
    return FIGURES
