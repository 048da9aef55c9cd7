"""scripts/testbed: pure helpers offline, then the real daemons (marked libvirt)."""

from __future__ import annotations

import os
import shutil
import subprocess
import textwrap
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from libvirt_testbed import CACHE_DIR, free_base_port, script, unavailable

pytest_plugins = ["libvirt_testbed"]

DATA = Path(__file__).parent / "data"
EXPANDED_MODELS = ("Westmere", "Haswell-noTSX", "Skylake-Server-IBRS", "EPYC")

# -- offline --------------------------------------------------------------


def test_guest_xml_uses_tcg_with_the_named_model() -> None:
    dom = ET.fromstring(script.guest_xml("vm1", model="Haswell-noTSX"))
    assert dom.get("type") == "qemu"
    assert dom.findtext("name") == "vm1"
    cpu = dom.find("cpu")
    assert cpu is not None
    assert (cpu.get("mode"), cpu.findtext("model")) == ("custom", "Haswell-noTSX")


def test_passthrough_guest_needs_kvm() -> None:
    dom = ET.fromstring(script.guest_xml("vm1", passthrough=True))
    assert dom.get("type") == "kvm"
    cpu = dom.find("cpu")
    assert cpu is not None
    assert cpu.get("mode") == "host-passthrough"


def test_nodes_differ_in_everything_migration_compares(tmp_path: Path) -> None:
    a, b = script.Testbed(tmp_path, 21000).nodes.values()
    assert (a.uri, b.uri) == ("qemu+tcp://127.0.0.1:21000/system", "qemu+tcp://127.0.0.1:21001/system")
    assert a.host_uuid != b.host_uuid
    assert a.migration_ports == (21010, 21019)
    assert b.migration_ports == (21020, 21029)
    assert f'host_uuid = "{b.host_uuid}"' in script.libvirtd_conf(b)
    assert "migration_port_min = 21020\nmigration_port_max = 21029\n" in script.qemu_conf(b)


def test_node_accepts_short_names(tmp_path: Path) -> None:
    bed = script.Testbed(tmp_path)
    assert bed.node("b") is bed.node("node-b")
    assert bed.hooks_dir("a") == tmp_path / "node-a/etc/libvirt/hooks/qemu.d"
    with pytest.raises(script.TestbedError, match="unknown node 'c'"):
        bed.node("c")


def test_missing_accounts_are_appended_once() -> None:
    passwd = "root:x:0:0:root:/root:/bin/bash\nqemu:x:107:107::/:/bin/false\n"
    out = script.with_missing_entries(passwd, ["libvirt-qemu", "qemu"], "{name}:x:9:9::/:/x\n")
    assert out == passwd + "libvirt-qemu:x:9:9::/:/x\n"
    assert script.with_missing_entries(out, ["libvirt-qemu", "qemu"], "{name}\n") is None


def test_unavailable_fails_on_ci_and_skips_elsewhere() -> None:
    with pytest.raises(pytest.fail.Exception, match="no daemons"):
        unavailable("no daemons", environ={"CI": "true"})
    with pytest.raises(pytest.skip.Exception, match="no daemons"):
        unavailable("no daemons", environ={})


@pytest.mark.parametrize("model", EXPANDED_MODELS)
def test_expanded_model_captures_match_libvirt(model: str) -> None:
    captured = (DATA / f"libvirt9-expanded-{model}.xml").read_text()
    cpu = ET.fromstring(captured)
    assert cpu.findtext("model") == model
    assert len(cpu.findall("feature")) > 10
    if not shutil.which("virsh"):
        pytest.skip("virsh not installed")
    version = subprocess.run(["virsh", "--version"], capture_output=True, text=True).stdout
    if not version.startswith("9."):
        pytest.skip(f"captures are from libvirt 9, this is {version.strip()}")
    assert script.expand_model(model) == captured


# -- real daemons -----------------------------------------------------------

DENY_HOOK = textwrap.dedent("""\
    #!/bin/sh
    # libvirt runs qemu hooks as: NAME OPERATION SUB-OPERATION EXTRA
    if [ "$2" = migrate ] && [ "$3" = begin ]; then
        echo "refused by test hook: $1" >&2
        exit 1
    fi
    """)


@pytest.fixture
def deny_hook_b(testbed: Any) -> Iterator[Path]:
    hook = testbed.hooks_dir("b") / "50-deny"
    hook.write_text(DENY_HOOK)
    hook.chmod(0o755)
    yield hook
    hook.unlink()
    testbed.reload("b")


def running_guest(testbed: Any, node: str, name: str) -> str:
    testbed.define_guest(node, name)
    testbed.start_guest(node, name)
    return name


@pytest.mark.libvirt
def test_live_migration_moves_the_guest(testbed: Any) -> None:
    guest = running_guest(testbed, "a", "tb-migrate")
    done = testbed.migrate("a", "b", guest)
    assert done.returncode == 0, done.stderr
    assert testbed.domain_state("b", guest) == "running"
    # The source keeps its persistent definition, shut off.
    assert testbed.domain_state("a", guest) == "shut off"


@pytest.mark.libvirt
def test_destination_hook_blocks_migration_after_reload(testbed: Any, deny_hook_b: Path) -> None:
    guest = running_guest(testbed, "a", "tb-hook")
    # libvirt looked for hooks when node-b started, with qemu.d empty: a
    # script added since is ignored until a reload.
    unseen = testbed.migrate("a", "b", guest)
    assert unseen.returncode == 0, unseen.stderr
    assert testbed.migrate("b", "a", guest).returncode == 0

    testbed.reload("b")
    refused = testbed.migrate("a", "b", guest)
    assert refused.returncode == 1
    assert "Hook script execution failed" in refused.stderr
    assert "refused by test hook: tb-hook" in refused.stderr
    assert testbed.domain_state("a", guest) == "running"
    assert testbed.domain_state("b", guest) is None


@pytest.mark.libvirt
def test_hypervisor_cpu_compare_answers(testbed: Any, tmp_path: Path) -> None:
    cpu = tmp_path / "cpu.xml"
    cpu.write_text("<cpu mode='custom' match='exact'><model>Westmere</model></cpu>")
    # TCG emulates every Westmere feature whatever the host has.
    done = testbed.virsh("a", "hypervisor-cpu-compare", "--virttype", "qemu", str(cpu))
    assert "superset" in done.stdout


@pytest.mark.libvirt
def test_the_running_nodes_serve_both_uris(testbed: Any) -> None:
    assert all(testbed.status().values())
    for node, uri in (("a", testbed.uri_a), ("b", testbed.uri_b)):
        assert testbed.virsh(node, "uri").stdout.strip() == uri


@pytest.mark.libvirt
def test_capture_writes_this_hosts_descriptions(testbed: Any, tmp_path: Path) -> None:
    written = script.capture(testbed, "a", "here", tmp_path)
    names = {p.name for p in written}
    assert {"here-cpuinfo.txt", "here-capabilities.xml", "here-domcapabilities-qemu.xml"} <= names
    caps = ET.parse(tmp_path / "here-capabilities.xml").getroot()
    assert caps.findtext("host/uuid") == testbed.node("a").host_uuid
    domcaps = ET.parse(tmp_path / "here-domcapabilities-qemu.xml").getroot()
    assert domcaps.findtext("domain") == "qemu"


@pytest.mark.libvirt
def test_stop_ends_daemons_and_guests(tmp_path: Path) -> None:
    # A private testbed, so the shared one stays up.
    bed = script.Testbed(tmp_path, free_base_port(), cache_dir=CACHE_DIR)
    try:
        bed.start()
        running_guest(bed, "a", "tb-stop")
        pids = [*bed.status().values()]
        pids += [
            pid
            for pidfile in (tmp_path / "node-a/run/libvirt/qemu").glob("*.pid")
            if (pid := script.read_pid(pidfile)) and script.is_qemu(pid)
        ]
    except script.TestbedError as e:
        unavailable(f"libvirt testbed unavailable: {e}")
    finally:
        bed.stop()
    assert len(pids) == 3
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{pid}").exists() for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)  # init reaps the guest once its daemon has gone
    assert [pid for pid in pids if Path(f"/proc/{pid}").exists()] == []
    assert os.listdir(tmp_path) == []
