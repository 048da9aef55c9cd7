"""Kept rehearsals in the reports: check shows the latest rehearsal of a VM on a host (pure records
and through the CLI); a failure on the CPU beside an allow becomes a warning, never a block."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

from cpuguard.records import Outcome, Rehearsed
from cpuguard.rehearse.evidence import latest, store
from cpuguard.rehearse.records import Fault, Rehearsal, RehearsalOutcome
from tests.conftest import ROOT, run_cpuguard

WHEN = datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
COMMAND = ("/usr/sbin/asterisk", "-f", "-n", "-q", "-C", "/.cpuguard/workload/asterisk/asterisk.conf")


def _failed(vm: str, host: str) -> Rehearsal:
    fault = Fault("SIGILL", 0x4000001160, "/usr/sbin/asterisk", 0x1160, "main", 352, "vmovdqu (%rax),%ymm1",
                  ("avx",), ("avx",))  # fmt: skip
    reason = f"SIGILL at main+352 in /usr/sbin/asterisk: `vmovdqu (%rax),%ymm1` needs avx, which {host} lacks"
    return Rehearsal(vm, host, COMMAND, RehearsalOutcome.FAILED_CPU, reason, "base,+sse2", fault=fault)


def _fleet(tmp_path: Path) -> Path:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    shutil.rmtree(policies / "rehearsals", ignore_errors=True)
    return policies


def test_store_and_read_back(tmp_path: Path) -> None:
    store(tmp_path, [_failed("pbx01", "old-node")], WHEN)
    (kept,) = latest(tmp_path, "pbx01", "old-node")
    assert kept == Rehearsed(
        "pbx01", "old-node", WHEN, COMMAND, "failed-cpu", _failed("pbx01", "old-node").reason,
        "main+352 in /usr/sbin/asterisk", "vmovdqu (%rax),%ymm1", ("avx",),
    )  # fmt: skip
    assert latest(tmp_path, "pbx01", "new-node") == []


def test_a_broken_evidence_file_is_one_line(tmp_path: Path) -> None:
    policies = _fleet(tmp_path)
    (policies / "rehearsals").mkdir()
    (policies / "rehearsals" / "app01.json").write_text('{"format": "something-else"}')
    done = run_cpuguard("check", "vm", "app01", "host", "new-node", "--policies", str(policies))
    assert done.returncode == 2
    assert done.stderr == (
        f"cpuguard: error: {policies}/rehearsals/app01.json: not a rehearsal record (expected format"
        " cpuguard-rehearsals/1)\n"
    )


def test_check_shows_the_rehearsal_and_warns(tmp_path: Path) -> None:
    policies = _fleet(tmp_path)
    before = run_cpuguard("check", "vm", "app01", "host", "new-node", "--policies", str(policies))
    assert before.returncode == 0 and before.stdout.startswith("ALLOW"), before.stdout
    store(policies, [_failed("app01", "new-node")], WHEN)
    done = run_cpuguard("check", "vm", "app01", "host", "new-node", "--policies", str(policies), "--format", "json")
    assert done.returncode == 0, done.stderr  # a warning, not a block
    data = json.loads(done.stdout)
    assert data["outcome"] == Outcome.WARN.value
    assert data["rehearsals"][0]["outcome"] == "failed-cpu"
    assert data["rehearsals"][0]["fault"] == "main+352 in /usr/sbin/asterisk"
    warned = [w for w in data["warnings"] if "rehearsed" in w]
    assert warned == ["the workload's own code failed on new-node's CPU when rehearsed (2026-12-06 10:00 UTC)"]
    text = run_cpuguard("check", "vm", "app01", "host", "new-node", "--policies", str(policies)).stdout
    assert text.startswith(
        "WARN   app01 may move to new-node (live migration or memory-image restore), but a rehearsal there"
        " failed on the CPU\n"
    ), text
    assert "rehearsed on new-node (cpuguard rehearse, newest first):" in text, text
    assert "    FAILED-CPU 2026-12-06 10:00 UTC: main+352 in /usr/sbin/asterisk: `vmovdqu" in text, text
    assert "      ran: /usr/sbin/asterisk -f -n -q -C" in text, text
    # another host's rehearsal is not shown
    other = run_cpuguard("check", "vm", "app01", "host", "mid-node", "--policies", str(policies), "--format", "json")
    assert json.loads(other.stdout)["rehearsals"] == []


def test_plan_shows_rehearsals_and_a_failed_target_is_not_safe(tmp_path: Path) -> None:
    policies = _fleet(tmp_path)
    args = ("plan", "evacuate", "new-node", "--cold", "--policies", str(policies))
    before = json.loads(run_cpuguard(*args, "--format", "json").stdout)
    assert next(v for v in before["vms"] if v["vm"] == "app01")["safe_targets"] == ["mid-node", "old-node"]
    passed = Rehearsal("app01", "old-node", ("/opt/app/bin/report", "--selftest"), RehearsalOutcome.PASSED,
                       "exited with status 0 as expected", "base")  # fmt: skip
    store(policies, [_failed("app01", "mid-node"), passed], WHEN)

    data = json.loads(run_cpuguard(*args, "--format", "json").stdout)
    app01 = next(v for v in data["vms"] if v["vm"] == "app01")
    assert app01["safe_targets"] == ["old-node"]  # the rehearsal showed mid-node cannot run it
    mid = next(c for c in app01["candidates"] if c["host"] == "mid-node")
    assert [r["outcome"] for r in mid["cold"]["rehearsals"]] == ["failed-cpu"]

    text = run_cpuguard(*args).stdout
    assert "OK        app01: old-node (cold)" in text, text
    assert "  mid-node: the workload failed a rehearsal on its CPU\n" in text, text
    assert "  rehearsed on old-node (cpuguard rehearse, newest first):\n" in text, text
    assert "    PASSED 2026-12-06 10:00 UTC: exited with status 0 as expected\n" in text, text

    markdown = run_cpuguard(*args, "--format", "markdown").stdout
    assert "### Rehearsals" in markdown
    assert (
        "| `app01` | mid-node | 2026-12-06 10:00 UTC | **FAILED-CPU** | /usr/sbin/asterisk -f -n -q -C"
        " /.cpuguard/workload/asterisk/asterisk.conf | main+352 in /usr/sbin/asterisk: `vmovdqu (%rax),%ymm1`"
        " needs avx |" in markdown
    ), markdown
    assert "mid-node: rehearsal failed on its CPU (2026-12-06 10:00 UTC)" in markdown

    html = run_cpuguard(*args, "--format", "html").stdout
    assert 'data-vm="app01" data-host="mid-node" data-rehearsal="FAILED-CPU"' in html
    assert 'data-vm="app01" data-host="old-node" data-rehearsal="PASSED"' in html
    assert "rehearsal failed on its CPU" in html
