"""The README's Python code runs as written: each ```python block is executed as its own program, in an
empty folder, the way a newcomer pastes it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def test_the_readme_has_its_application_example() -> None:
    assert len(BLOCKS) >= 2
    assert "asyncio.run(main())" in BLOCKS[0]


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_a_readme_code_block_runs_as_written(block: str, tmp_path: Path) -> None:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("BREVO_", "HUBSPOT_", "MAUTIC_", "N8N_", "CRMSYNC_"))
    }
    result = subprocess.run(
        [sys.executable, "-c", block],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    if "asyncio.run(main())" in block:
        # What the comments in the example say it prints.
        assert result.stdout.splitlines() == [
            "QueueResult(queued=2, already_queued=0, skipped=0, not_found=0)",
            "2 0",
        ], result.stdout
        assert [p.name for p in tmp_path.iterdir()] == ["example.sqlite3"]
