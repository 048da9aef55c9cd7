"""``--report FILE`` of the planning commands: refused before any work when it cannot be written
where it says, and never the reason a directory comes into being."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuguard.fleet import EXAMPLE_POLICIES
from tests.conftest import run_cpuguard


@pytest.mark.parametrize("command", [["plan", "evacuate", "new-node"], ["plan", "matrix"], ["baseline"]])
def test_a_report_in_a_missing_directory_is_refused(tmp_path: Path, command: list[str]) -> None:
    report = tmp_path / "nonexistent" / "dir" / "r.html"
    result = run_cpuguard(*command, "--policies", str(EXAMPLE_POLICIES), "--report", str(report))
    assert result.returncode == 2
    assert (result.stdout, result.stderr) == (
        "",
        f"cpuguard: error: {report}: directory does not exist: {report.parent}\n",
    )
    assert not (tmp_path / "nonexistent").exists()
