"""The minimal adapter that leads docs/plugins.md works as written: its code is built into a package in
a temporary folder, found through a real ``crmsync`` entry point (a ``.dist-info`` next to it on the
path), and the contract kit runs against it with the documented test module, in a pytest of its own
that has no configuration (so the kit must set up asyncio itself)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"
SECTION = DOCS.read_text(encoding="utf-8").split("\n## ")[1]
TOML = re.findall(r"^```toml\n(.*?)^```", SECTION, re.S | re.M)
PYTHON = re.findall(r"^```python\n(.*?)^```", SECTION, re.S | re.M)


def _build(root: Path) -> Path:
    """The documented package in ``root/site``, installed as far as ``importlib.metadata`` can tell."""
    site = root / "site"
    package = site / "crmsync_acme"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PYTHON[0], encoding="utf-8")
    (root / "pyproject.toml").write_text(TOML[0], encoding="utf-8")
    project = tomllib.loads(TOML[0])["project"]
    entry_points = "".join(f"{k} = {v}\n" for k, v in project["entry-points"]["crmsync"].items())
    dist_info = site / "crmsync_acme-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n",
        encoding="utf-8",
    )
    (dist_info / "entry_points.txt").write_text(f"[crmsync]\n{entry_points}", encoding="utf-8")
    tests = root / "tests"
    tests.mkdir()
    (tests / "test_contract.py").write_text(PYTHON[1], encoding="utf-8")
    return site


def _run(args: list[str], root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACME_", "CRMSYNC_", "PYTEST"))}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(
        [sys.executable, *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_the_documented_adapter_fits_in_60_lines() -> None:
    assert len(TOML) == 1
    assert "[project.entry-points.crmsync]" in TOML[0]
    assert len(PYTHON) == 2, "the section holds the adapter and its contract test"
    lines = len(TOML[0].splitlines()) + len(PYTHON[0].splitlines())
    assert lines <= 60, f"the minimal adapter takes {lines} lines"


def test_the_documented_adapter_is_found_through_its_entry_point(tmp_path: Path) -> None:
    site = _build(tmp_path)
    probe = (
        "from crmsync_core.plugins import Registry\n"
        "spec = Registry().adapters()['acme']\n"
        "print(spec.name, spec.max_batch_size, type(spec.factory).__name__, spec.factory.__name__)\n"
    )
    result = _run(["-c", probe], tmp_path, site)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["acme", "100", "type", "AcmeAdapter"]


def test_the_documented_adapter_passes_the_contract_kit(tmp_path: Path) -> None:
    site = _build(tmp_path)
    result = _run(
        [
            "-m",
            "pytest",
            "tests/test_contract.py",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--rootdir={tmp_path}",
            "-o",
            "asyncio_mode=strict",
        ],
        tmp_path,
        site,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"\d+ passed in .*", summary), summary
    assert int(summary.split()[0]) >= 20, summary
