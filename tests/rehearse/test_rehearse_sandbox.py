"""The sandbox holds: a rehearsed program cannot read /etc/shadow, write outside its
sandbox, reach the network or outlive its time limit (issue 11, "Isolation")."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import pytest

from cpuguard.hosts.sources import resolve_host
from cpuguard.knowledge import load_knowledge
from cpuguard.records import HostFacts
from cpuguard.rehearse.records import RehearsalOutcome
from cpuguard.rehearse.run import rehearse_root
from cpuguard.rehearse.sandbox import Limits
from tests.conftest import need_tool


@pytest.fixture(scope="module")
def haswell() -> HostFacts:
    for tool in ("qemu-x86_64", "bwrap", "prlimit", "setpriv"):
        need_tool(tool)
    return resolve_host("uarch:haswell", load_knowledge())


def test_cannot_read_etc_shadow(guest_root: Path, haswell: HostFacts) -> None:
    assert Path("/etc/shadow").exists()
    rehearsal = rehearse_root(guest_root, ["/opt/app/escape", "shadow"], haswell, vm="t")
    assert rehearsal.outcome is RehearsalOutcome.PASSED, rehearsal.stdout_tail + rehearsal.reason


def test_cannot_write_outside(guest_root: Path, haswell: HostFacts, tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o777)  # even where this machine would let anybody write
    for target in (tmp_path / "escaped", guest_root / "opt/app/escaped", Path("/opt/app/escaped")):
        rehearsal = rehearse_root(guest_root, ["/opt/app/escape", "write", str(target)], haswell, vm="t")
        assert rehearsal.outcome is RehearsalOutcome.PASSED, (target, rehearsal.stdout_tail)
        assert not target.exists()


def test_cannot_reach_the_network(guest_root: Path, haswell: HostFacts) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        rehearsal = rehearse_root(guest_root, ["/opt/app/escape", "connect", str(port)], haswell, vm="t")
    assert rehearsal.outcome is RehearsalOutcome.PASSED, rehearsal.stdout_tail


def _running(token: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                if token.encode() in handle.read():
                    found.append(pid)
        except OSError:
            continue
    return found


def test_cannot_outlive_its_time_limit(guest_root: Path, haswell: HostFacts) -> None:
    token = f"{uuid.uuid4().int % 10**9}"
    started = time.monotonic()
    rehearsal = rehearse_root(guest_root, ["/opt/app/escape", "spin", token], haswell, vm="t", limits=Limits(seconds=3))
    assert time.monotonic() - started < 30
    assert rehearsal.outcome is RehearsalOutcome.FAILED_OTHER
    assert rehearsal.reason.startswith("did not finish within 3 s")
    time.sleep(0.5)
    assert not _running(token)


def test_leaves_no_process_behind(guest_root: Path, haswell: HostFacts) -> None:
    token = f"{3600 + uuid.uuid4().int % 1000}"
    rehearsal = rehearse_root(
        guest_root, ["/opt/app/escape", "linger", token], haswell, vm="t", limits=Limits(seconds=20)
    )
    assert rehearsal.outcome is RehearsalOutcome.PASSED, rehearsal.reason
    time.sleep(0.5)
    assert not _running(f"linger\0{token}")


def test_a_sandbox_that_cannot_start_proves_nothing(guest_root: Path, haswell: HostFacts) -> None:
    """bwrap refusing (no user namespaces, say) is cannot-rehearse, never the program's failure."""
    from cpuguard.rehearse.run import find_tools

    place = Path(tempfile.mkdtemp())  # where nobody may run it from (pytest's tmp_path is root's alone)
    place.chmod(0o755)
    refusing = place / "bwrap"
    refusing.write_text("#!/bin/sh\necho 'bwrap: No permissions to create a new namespace' >&2\nexit 1\n")
    refusing.chmod(0o755)
    tools = replace(find_tools(), bwrap=str(refusing))
    try:
        rehearsal = rehearse_root(guest_root, ["/opt/app/guarded", "10"], haswell, vm="t", tools=tools)
    finally:
        shutil.rmtree(place)
    assert rehearsal.outcome is RehearsalOutcome.CANNOT_REHEARSE
    assert rehearsal.reason == "the sandbox did not start: bwrap: No permissions to create a new namespace"
