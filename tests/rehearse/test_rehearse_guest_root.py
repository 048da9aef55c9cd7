"""A rehearsal from a guest root built as in the guest-inspection tests (tests/guest/images):
a small Debian of this machine's packages with the founding incident's PBX daemon, built
with -march=haswell and a library found by RUNPATH, and a baseline CLI whose library is
found through /etc/ld.so.conf.d."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import need_tool
from tests.guest import images
from tests.rehearse.conftest import rehearse_cli

PBX_DAEMON = "/usr/sbin/pbxd"
PBX_CLI = "/usr/local/bin/pbx-cli"


@pytest.fixture(scope="module")
def pbx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    for tool in ("qemu-x86_64", "bwrap", "prlimit", "setpriv"):
        need_tool(tool)
    base = tmp_path_factory.mktemp("pbx")
    root = images.assembled_debian_root(base / "root")
    root = images.add_custom_program(root, PBX_DAEMON, march="haswell", library="runpath", plugins=1)
    root = images.add_custom_program(root, PBX_CLI, march="x86-64", unit=False, library="ld.so.conf")
    return root.path


def _rehearse(root: Path, host: str, *command: str) -> tuple[int, dict[str, object]]:
    done = rehearse_cli("pbx01", "host", host, "--root", str(root), "--format", "json", "--", *command)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_the_haswell_daemon(pbx_root: Path) -> None:
    code, data = _rehearse(pbx_root, "uarch:westmere", PBX_DAEMON, "-f")
    assert (code, data["outcome"]) == (1, "failed-cpu"), data["reason"]
    fault = data["fault"]
    assert isinstance(fault, dict)
    assert fault["object_path"] == PBX_DAEMON
    assert fault["function"] in ("work", "main")  # gcc may inline the static kernel
    assert fault["missing"] and set(fault["missing"]) <= {"avx", "avx2"}
    assert "/usr/local/lib/libpbxd.so.1" in data["files"]  # through its RUNPATH

    code, data = _rehearse(pbx_root, "uarch:haswell", PBX_DAEMON, "-f")
    assert (code, data["outcome"]) == (0, "passed"), data["reason"]
    assert str(data["stdout_tail"]).startswith(f"{PBX_DAEMON} ")


def test_a_library_found_through_ld_so_conf(pbx_root: Path) -> None:
    code, data = _rehearse(pbx_root, "uarch:westmere", PBX_CLI)
    assert (code, data["outcome"]) == (0, "passed"), data
    assert "/opt/pbx-cli/lib/libpbx-cli.so.1" in data["files"]


def test_a_plugin_named_with_file(pbx_root: Path) -> None:
    """A module the program would dlopen comes along with --file (here only copied: pbxd loads none)."""
    done = rehearse_cli("pbx01", "host", "uarch:haswell", "--root", str(pbx_root), "--format", "json",
        "--file", "/usr/lib/pbxd/modules/mod_0.so", "--", PBX_DAEMON,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "/usr/lib/pbxd/modules/mod_0.so" in json.loads(done.stdout)["files"]
