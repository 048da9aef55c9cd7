"""The bounded fuzz run of CI: every atheris target in fuzz/ for a few seconds, no crash.

``CPUGUARD_FUZZ_SECONDS`` sets the time per target (default 15; two targets run at once);
0 skips. The long run is ``fuzz/run --seconds 3600`` (docs/security.md).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, in_ci
from tests.hostile.tally import FUZZ_RUNS, FuzzRun

SECONDS = int(os.environ.get("CPUGUARD_FUZZ_SECONDS", "15"))


@pytest.mark.time_bound(1200)  # the run bounds itself: fuzz/run stops each target after SECONDS
def test_every_fuzz_target_runs_without_a_crash(tmp_path: Path) -> None:
    if SECONDS <= 0:
        pytest.skip("CPUGUARD_FUZZ_SECONDS=0")
    if importlib.util.find_spec("atheris") is None:
        message = "atheris is not installed (pip install atheris; part of the test extra)"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    figures = tmp_path / "fuzz.json"
    artifacts = tmp_path / "artifacts"
    targets = sorted(p.stem.removeprefix("fuzz_") for p in (ROOT / "fuzz").glob("fuzz_*.py"))
    result = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "run"), "--seconds", str(SECONDS), "--json", str(figures),
         "--artifacts", str(artifacts)],
        capture_output=True, text=True, timeout=len(targets) * (SECONDS + 60), check=False,
    )  # fmt: skip
    assert figures.exists(), result.stdout + result.stderr
    runs = json.loads(figures.read_text())
    FUZZ_RUNS.extend(FuzzRun(r["target"], r["executions"], r["seconds"], r["crashes"]) for r in runs)
    assert sorted(r["target"] for r in runs) == targets
    crashed = [r for r in runs if r["crashes"]]
    assert not crashed, result.stdout + "\n".join(r["detail"] for r in crashed)
    assert result.returncode == 0, result.stdout + result.stderr
    for r in runs:
        assert r["executions"] > 100, f"{r['target']} hardly ran: {r}"
