"""Default rehearsals of recognised workloads: Asterisk boots with its own modules, then stops.

The Asterisk here is a stand-in built in the test (tests/rehearse/programs/asterisk_standin.c):
it does what the real one's start does as far as the CPU is concerned (reads -C, dlopens every
module of astmoddir and calls load_module(), runs cli.conf's startup commands). A real
Asterisk 22 built with BUILD_NATIVE is too large a build for the test suite.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuguard.rehearse.guestroot import GuestRoot
from cpuguard.rehearse.workloads import ASTERISK_REHEARSAL_DIR, asterisk_entry, default_entries
from tests.conftest import need_tool
from tests.rehearse.conftest import ASTERISK_MODULES, rehearse_cli

COMMAND = ["/usr/sbin/asterisk", "-f", "-n", "-q", "-C", f"{ASTERISK_REHEARSAL_DIR}/asterisk.conf"]


@pytest.fixture(scope="module")
def tools() -> None:
    for tool in ("qemu-x86_64", "bwrap", "prlimit", "setpriv"):
        need_tool(tool)


def test_the_default_is_a_real_start_with_the_guests_modules(asterisk_root: Path) -> None:
    (entry,) = default_entries(GuestRoot(asterisk_root))
    assert list(entry.argv) == COMMAND  # never `asterisk -V`: it reaches no vectorised code
    assert entry.files == (f"{ASTERISK_MODULES}/codec_fast.so", f"{ASTERISK_MODULES}/codec_plain.so")
    generated = dict(entry.generated)
    assert f"astmoddir => {ASTERISK_MODULES}" in generated[f"{ASTERISK_REHEARSAL_DIR}/asterisk.conf"]
    assert "core stop now" in generated[f"{ASTERISK_REHEARSAL_DIR}/cli.conf"]
    assert "astrundir => /tmp" in generated[f"{ASTERISK_REHEARSAL_DIR}/asterisk.conf"]


def test_module_dir_without_asterisk_conf(tmp_path: Path, asterisk_root: Path) -> None:
    (tmp_path / "usr/lib/x86_64-linux-gnu/asterisk/modules").mkdir(parents=True)
    (tmp_path / "usr/lib/x86_64-linux-gnu/asterisk/modules/chan_pjsip.so").write_bytes(b"")
    entry = asterisk_entry(GuestRoot(tmp_path), "/usr/sbin/asterisk")
    assert entry.files == ("/usr/lib/x86_64-linux-gnu/asterisk/modules/chan_pjsip.so",)
    assert default_entries(GuestRoot(tmp_path)) == []  # no asterisk program: nothing recognised


def test_default_rehearsal_fails_in_the_module_on_westmere(asterisk_root: Path, tools: None) -> None:
    done = rehearse_cli("pbx01", "host", "uarch:westmere", "--root", str(asterisk_root), "--format", "json")
    assert done.returncode == 1, done.stdout + done.stderr
    (data,) = json.loads(done.stdout)
    assert data["command"] == COMMAND and data["outcome"] == "failed-cpu"
    fault = data["fault"]
    assert (fault["object_path"], fault["function"]) == (f"{ASTERISK_MODULES}/codec_fast.so", "mix_frames")
    assert set(fault["missing"]) & {"avx", "avx2"}


def test_default_rehearsal_passes_on_haswell(asterisk_root: Path, tools: None) -> None:
    done = rehearse_cli("pbx01", "host", "uarch:haswell", "--root", str(asterisk_root))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("PASSED: pbx01 on uarch:haswell\n")
    assert "/.cpuguard/workload/asterisk/asterisk.conf" in done.stdout
