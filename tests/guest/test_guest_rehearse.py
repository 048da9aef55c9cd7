"""Rehearsals read from a VM's disk: a real image, the real appliance, qemu-user, the real CLI.

The guest is the founding incident's: a small Debian whose ``/usr/sbin/pbxd`` was
built with ``-march=haswell`` (its own library found by RUNPATH, modules beside
it), plus a ``__builtin_cpu_supports`` guarded build that picks its AVX2 code
only where the CPU has it. The domain XML names the qcow2 disk; cpuguard reads
the program, its closure and its loader from it, read-only, and runs it under an
emulated copy of the target host's CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import need_libguestfs, need_tool
from tests.guest import images
from tests.guest.images.tools import install_file

CPUGUARD = [sys.executable, "-m", "cpuguard"]
APPLIANCE_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
PROGRAM = "/usr/sbin/pbxd"
GUARDED = "/usr/local/bin/guarded"
SOURCES = Path(__file__).resolve().parents[1] / "rehearse" / "programs"
GUARDED_SOURCE = SOURCES / "guarded.c"
MODULES = "/usr/lib/asterisk/modules"


def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CPUGUARD, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **APPLIANCE_ENV},
        check=False,
        cwd=cwd,
    )


@pytest.fixture(scope="module")
def rehearsal_guest(tmp_path_factory: pytest.TempPathFactory, assembled_root: images.Root) -> dict[str, Path]:
    """The guest's qcow2 disk, its domain XML and a policies directory of its own."""
    need_libguestfs()
    need_tool("qemu-x86_64")
    need_tool("bwrap")
    base = tmp_path_factory.mktemp("rehearse-guest")
    root = images.copy_root(assembled_root, base / "root")
    root = images.add_custom_program(root, PROGRAM, march="haswell", library="runpath", plugins=1)
    guarded = images.compile_c(GUARDED_SOURCE.read_text(), base / "guarded", "x86-64")
    install_file(root.path, GUARDED, guarded.read_bytes(), 0o755)
    # an Asterisk (the stand-in of tests/rehearse) whose codec module was built for Haswell
    standin = images.compile_c((SOURCES / "asterisk_standin.c").read_text(), base / "asterisk", "x86-64", "-ldl")
    install_file(root.path, "/usr/sbin/asterisk", standin.read_bytes(), 0o755)
    module = images.compile_c((SOURCES / "codec_fast.c").read_text(), base / "codec.so", "haswell", "-shared", "-fPIC")
    install_file(root.path, f"{MODULES}/codec_fast.so", module.read_bytes(), 0o755)
    install_file(root.path, "/etc/asterisk/asterisk.conf", f"[directories]\nastmoddir => {MODULES}\n".encode())
    disk = images.qcow2_of(images.ext4_disk(root, base / "pbx.raw", table="gpt"), base / "pbx.qcow2")
    policies = base / "policies"
    (policies / "vms").mkdir(parents=True)
    (policies / "inventory.yaml").write_text(
        "hosts:\n  old-node: {source: 'uarch:westmere'}\n  new-node: {source: 'uarch:haswell'}\n"
        "vms:\n  pbx01: {host: new-node}\n"
    )
    domain = base / "pbx01.xml"
    domain.write_text(images.domain_xml("pbx01", disk.path, "qcow2"))
    return {"domain": domain, "policies": policies, "disk": disk.path, "log": base / "rehearsals.jsonl"}


def test_haswell_program_fails_on_westmere_naming_the_fault(rehearsal_guest: dict[str, Path]) -> None:
    g = rehearsal_guest
    before = g["disk"].read_bytes()
    result = run(
        "rehearse", g["domain"], "host", "uarch:westmere", "--policies", g["policies"], "--log", g["log"],
        "--format", "json", "--", PROGRAM, "-f",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr + result.stdout
    answer = json.loads(result.stdout)
    assert answer["outcome"] == "failed-cpu"
    fault = answer["fault"]
    assert fault["signal"] == "SIGILL"
    # the AVX2 loop of the program (work(), inlined into main() by gcc -O2) or of its library
    assert fault["object_path"] in (PROGRAM, "/usr/local/lib/libpbxd.so.1"), fault
    assert fault["function"] in ("main", "work", "pbxd_work"), fault
    assert "ymm" in fault["instruction"] or fault["instruction"].startswith("v"), fault
    assert set(fault["missing"]) & {"avx", "avx2"}, fault
    assert PROGRAM in answer["files"] and any(f.endswith("ld-linux-x86-64.so.2") for f in answer["files"])
    # read-only: the disk is unchanged; the evidence is kept and logged
    assert g["disk"].read_bytes() == before
    kept = json.loads((g["policies"] / "rehearsals" / "pbx01.json").read_text())
    assert kept["rehearsals"][-1]["outcome"] == "failed-cpu"
    line = json.loads(g["log"].read_text().splitlines()[-1])
    assert line["event"] == "rehearse" and line["vm"] == "pbx01" and line["host"] == "uarch:westmere"
    # and check shows it, as evidence beside its verdict
    check = run("check", "vm", g["domain"], "host", "uarch:westmere", "--policies", g["policies"], "--format", "json")
    shown = json.loads(check.stdout)["rehearsals"]
    assert shown[0]["outcome"] == "failed-cpu" and shown[0]["command"] == [PROGRAM, "-f"], check.stdout


def test_text_answer_names_function_instruction_and_feature(rehearsal_guest: dict[str, Path]) -> None:
    g = rehearsal_guest
    (g["policies"] / "vms" / "pbx01.yaml").write_text(
        f"vm: pbx01\nrehearse:\n  - argv: [{PROGRAM}, -f]\n  - argv: [{GUARDED}, '1000']\n"
    )
    result = run("rehearse", g["domain"], "host", "uarch:haswell", "--policies", g["policies"], "--log", g["log"])
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.count("PASSED: pbx01 on uarch:haswell") == 2, result.stdout


def test_guarded_build_passes_below_its_fast_path(rehearsal_guest: dict[str, Path]) -> None:
    g = rehearsal_guest
    result = run(
        "rehearse", g["domain"], "host", "uarch:westmere", "--policies", g["policies"], "--log", g["log"],
        "--", GUARDED, "1000",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    assert result.stdout.startswith("PASSED: pbx01 on uarch:westmere"), result.stdout
    assert "a pass proves only the code paths this command ran" in result.stdout


def test_unknown_program_in_the_guest_is_one_line(rehearsal_guest: dict[str, Path]) -> None:
    g = rehearsal_guest
    result = run(
        "rehearse", g["domain"], "host", "uarch:westmere", "--policies", g["policies"], "--log", g["log"],
        "--", "/usr/sbin/nosuchd",
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "/usr/sbin/nosuchd" in result.stderr and "no such program" in result.stderr


def test_recognised_workload_rehearsed_by_default(rehearsal_guest: dict[str, Path], tmp_path: Path) -> None:
    """No command, no policy: the guest's Asterisk is found on its disk and started with its modules."""
    g = rehearsal_guest
    (tmp_path / "inventory.yaml").write_text("hosts: {}\nvms: {}\n")
    result = run(
        "rehearse", g["domain"], "host", "uarch:westmere", "--policies", tmp_path, "--log", g["log"],
        "--format", "json",
    )  # fmt: skip
    assert result.returncode == 1, result.stderr + result.stdout
    (answer,) = json.loads(result.stdout)
    assert answer["command"][:2] == ["/usr/sbin/asterisk", "-f"] and "-C" in answer["command"]
    assert (answer["fault"]["object_path"], answer["fault"]["function"]) == (f"{MODULES}/codec_fast.so", "mix_frames")
    assert f"{MODULES}/codec_fast.so" in answer["files"]
