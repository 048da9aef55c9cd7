"""Rehearsals of compiled programs against qemu-user's own answer, and what they name.

Ground truth: the same program run directly under ``qemu-x86_64 -cpu`` with
the same CPU option (no sandbox) either exits 0 or dies of SIGILL; the
rehearsal must say ``passed`` or ``failed-cpu`` accordingly, and name the
function the compiler put the target's instructions in.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from cpuguard.knowledge import load_knowledge
from cpuguard.rehearse.records import RehearsalOutcome
from cpuguard.rehearse.run import rehearse_root, target_cpu
from tests.conftest import need_tool
from tests.rehearse.conftest import rehearse_cli

HOSTS = ("uarch:westmere", "uarch:sandybridge", "uarch:haswell")
#: program -> (arguments, the function its first target instruction runs in)
CASES = {
    "haswell": (["1000"], "sum_scaled"),
    "avx2": (["1000"], "sum_scaled"),
    "bmi2": (["1000", "x"], "mix_bits"),
    "guarded": (["1000"], None),
}


def _facts(host: str):  # type: ignore[no-untyped-def]
    from cpuguard.hosts.sources import resolve_host

    return resolve_host(host, load_knowledge())


@pytest.fixture(scope="module")
def tools() -> None:
    for tool in ("qemu-x86_64", "bwrap", "prlimit", "setpriv"):
        need_tool(tool)


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_outcome_matches_qemu(guest_root: Path, tools: None, name: str, host: str) -> None:
    args, function = CASES[name]
    facts = _facts(host)
    cpu = target_cpu(facts, need_tool("qemu-x86_64"))
    truth = subprocess.run(
        [need_tool("qemu-x86_64"), "-cpu", cpu.option, str(guest_root / "opt/app" / name), *args],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert truth.returncode in (0, -4), truth.stderr
    rehearsal = rehearse_root(guest_root, [f"/opt/app/{name}", *args], facts, vm="app01")
    if truth.returncode == 0:
        assert rehearsal.outcome is RehearsalOutcome.PASSED, rehearsal
        assert rehearsal.stdout_tail == truth.stdout.decode()
        return
    assert rehearsal.outcome is RehearsalOutcome.FAILED_CPU, rehearsal
    fault = rehearsal.fault
    assert fault is not None and fault.object_path == f"/opt/app/{name}"
    assert fault.function == function
    assert fault.missing and set(fault.missing) <= set(fault.needs)
    assert not set(fault.missing) & facts.flags


def test_expected_outcomes(guest_root: Path, tools: None) -> None:
    """What the compiled code implies, as a table (the ground truth above decides each cell)."""
    want = {
        ("haswell", "uarch:westmere"): ("failed-cpu", "avx"),
        ("haswell", "uarch:haswell"): ("passed", None),
        ("avx2", "uarch:sandybridge"): ("failed-cpu", "avx2"),
        ("bmi2", "uarch:sandybridge"): ("failed-cpu", "bmi2"),
        ("bmi2", "uarch:haswell"): ("passed", None),
        ("guarded", "uarch:westmere"): ("passed", None),
        ("guarded", "uarch:haswell"): ("passed", None),
    }
    for (name, host), (outcome, missing) in want.items():
        rehearsal = rehearse_root(guest_root, [f"/opt/app/{name}", *CASES[name][0]], _facts(host), vm="app01")
        assert rehearsal.outcome.value == outcome, (name, host, rehearsal.reason)
        if missing:
            assert rehearsal.fault is not None and missing in rehearsal.fault.missing, rehearsal.fault


def test_cli_names_function_instruction_and_feature(guest_root: Path, tools: None) -> None:
    root = str(guest_root)
    done = rehearse_cli("app01", "host", "uarch:westmere", "--root", root, "--", "/opt/app/haswell", "1000")
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "FAILED-CPU: app01 on uarch:westmere"
    assert lines[1].startswith("  SIGILL at sum_scaled+")
    assert "needs avx, which uarch:westmere lacks" in lines[1]
    assert "  function:    sum_scaled+" in done.stdout
    assert "  missing:     avx" in done.stdout
    assert "  instruction: v" in done.stdout

    done = rehearse_cli("app01", "host", "uarch:haswell", "--root", root, "--", "/opt/app/haswell", "1000")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("PASSED: app01 on uarch:haswell\n")

    for host in ("uarch:westmere", "uarch:haswell"):
        done = rehearse_cli("app01", "host", host, "--root", root, "--format", "json", "--", "/opt/app/guarded", "1000")
        assert done.returncode == 0, done.stdout + done.stderr
        data = json.loads(done.stdout)
        assert data["outcome"] == "passed" and data["command"] == ["/opt/app/guarded", "1000"]
        assert data["stdout_tail"] == "1498500\n"


def test_json_failed_cpu(guest_root: Path, tools: None) -> None:
    done = rehearse_cli("app01", "host", "uarch:sandybridge", "--root", str(guest_root), "--format", "json",
        "--", "/opt/app/bmi2", "1000", "x",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["outcome"] == "failed-cpu"
    assert data["fault"]["function"] == "mix_bits"
    assert data["fault"]["missing"] == ["bmi2"]
    assert data["fault"]["instruction"].split()[0] in ("shlx", "shrx", "sarx", "rorx")


def test_bad_input(guest_root: Path) -> None:
    done = rehearse_cli("app01", "host", "uarch:haswell", "--root", str(guest_root), "--", "nosuch")
    assert done.returncode == 2
    assert done.stderr == "cpuguard: error: nosuch: no such program in the guest's root (looked in its PATH)\n"
    done = rehearse_cli("app01", "host", "nosuchhost", "--root", str(guest_root), "--", "/opt/app/bmi2")
    assert done.returncode == 2 and "unknown host 'nosuchhost'" in done.stderr


def test_fault_in_a_library(guest_root: Path, tools: None) -> None:
    """The fault lies in a library the loader mapped: named by its file and its own function."""
    for host, outcome in (("uarch:westmere", RehearsalOutcome.FAILED_CPU), ("uarch:haswell", RehearsalOutcome.PASSED)):
        rehearsal = rehearse_root(guest_root, ["/opt/app/uselib", "1000"], _facts(host), vm="app01")
        assert rehearsal.outcome is outcome, rehearsal.reason
        assert "/opt/app/lib/libkernels.so" in rehearsal.files
    fault = rehearse_root(guest_root, ["/opt/app/uselib", "1000"], _facts("uarch:westmere"), vm="app01").fault
    assert fault is not None
    assert (fault.object_path, fault.function, fault.missing) == ("/opt/app/lib/libkernels.so", "sum_scaled", ("avx",))


def test_a_library_missing_from_the_root_cannot_be_rehearsed(guest_root: Path, tmp_path: Path, tools: None) -> None:
    (tmp_path / "opt/app").mkdir(parents=True)
    (tmp_path / "opt/app/haswell").write_bytes((guest_root / "opt/app/haswell").read_bytes())
    done = rehearse_cli("app01", "host", "uarch:haswell", "--root", str(tmp_path), "--format", "json",
        "--", "/opt/app/haswell",
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    data = json.loads(done.stdout)
    assert data["outcome"] == "cannot-rehearse"
    assert data["reason"].startswith("not in the guest's root: ")
    assert "libc.so.6 (needed by /opt/app/haswell)" in data["reason"]


def test_not_a_program(guest_root: Path, tmp_path: Path) -> None:
    (tmp_path / "opt/app").mkdir(parents=True)
    (tmp_path / "opt/app/run.sh").write_text("#!/bin/sh\nexit 0\n")
    done = rehearse_cli("app01", "host", "uarch:haswell", "--root", str(tmp_path), "--", "/opt/app/run.sh")
    assert done.returncode == 2
    assert done.stderr == (
        "cpuguard: error: /opt/app/run.sh: a script (/bin/sh): name its interpreter first"
        " (-- /bin/sh /opt/app/run.sh)\n"
    )


def test_a_script_runs_under_its_interpreter(guest_root: Path, tmp_path: Path, tools: None) -> None:
    """Arguments naming guest files are copied along: here the script a copy of a guest program runs."""
    import shutil

    shutil.copytree(guest_root, tmp_path / "root", symlinks=True)
    root = tmp_path / "root"
    (root / "opt/app/run.sh").write_text("#!/opt/app/escape\n")
    done = rehearse_cli("app01", "host", "uarch:haswell", "--root", str(root), "--format", "json",
        "--", "/opt/app/escape", "shadow", "/opt/app/run.sh",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "/opt/app/run.sh" in json.loads(done.stdout)["files"]


def test_segfault_is_located_from_the_core_and_not_blamed_on_the_cpu(guest_root: Path, tools: None) -> None:
    """SIGSEGV's si_addr is the data address: the instruction comes from the core QEMU writes."""
    truth = subprocess.run(
        [need_tool("qemu-x86_64"), "-cpu", "max", str(guest_root / "opt/app/segv")],
        capture_output=True, timeout=120, check=False, cwd=guest_root,
    )  # fmt: skip
    assert truth.returncode == -11, truth  # SIGSEGV
    done = rehearse_cli("app01", "host", "uarch:westmere", "--root", str(guest_root), "--format", "json",
                        "--", "/opt/app/segv")  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["outcome"] == "failed-other"
    fault = data["fault"]
    assert (fault["signal"], fault["function"], fault["object_path"]) == ("SIGSEGV", "read_field", "/opt/app/segv")
    assert fault["data_address"] == 16 and fault["instruction"].startswith("mov"), fault
    assert data["reason"].startswith("SIGSEGV at read_field in /opt/app/segv on `mov")
    assert "the program's own fault (a bad memory access at 0x10), not the CPU's" in data["reason"]
