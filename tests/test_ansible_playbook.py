"""examples/ansible/cpuguard.yml run by the real ``ansible-playbook`` against a testbed libvirt daemon.

This machine is the one hypervisor (``localhost``, local connection) and the
controller. node-a of the testbed runs three VMs: one whose disk holds a
``-march=haswell`` program run by an enabled unit, one with a plain Debian, one
with no disk at all (its guest scan fails; the run must go on). The playbook
snapshots the host, saves the running domains' XML, reads their workloads from
their disks with ``cpuguard inventory scan-guests`` (one appliance), fetches it
all and indexes it; then check and plan, given only the fetched directory, name
the scanned program.

Without ansible-core, the testbed, libguestfs or qemu-img this skips with the
reason, or fails under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from libvirt_testbed import unavailable

from tests.conftest import ROOT, need_tool
from tests.guest import images

pytest_plugins = ["libvirt_testbed"]
pytestmark = pytest.mark.libvirt

PLAYBOOK = ROOT / "examples" / "ansible" / "cpuguard.yml"
BIN = Path(sys.executable).parent  # the virtualenv's console scripts: cpuguard, ansible-playbook
APPLIANCE_ENV = {"LIBGUESTFS_BACKEND": "direct", "LIBGUESTFS_BACKEND_SETTINGS": "force_tcg"}
PROGRAM = "/usr/sbin/pbxd"
PBX, PLAIN, NODISK = "e2e-ans-pbx", "e2e-ans-plain", "e2e-ans-nodisk"


def need_ansible() -> Path:
    playbook = BIN / "ansible-playbook"
    if not playbook.exists():
        unavailable("ansible-core is not installed (pip install -e '.[test]')")
    return playbook


def need_libguestfs() -> None:
    from cpuguard.guest.worker import import_guestfs

    if import_guestfs() is None:
        unavailable("libguestfs (python3-guestfs) is not installed (scripts/install installs it)")


def cpuguard(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CPUGUARD_")}
    return subprocess.run(
        [str(BIN / "cpuguard"), *map(str, args)], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def start_vm(testbed: Any, name: str, disk: Path, directory: Path) -> None:
    path = directory / f"{name}.xml"
    path.write_text(images.domain_xml(name, disk, cpu=images.custom_cpu(), testbed=True))
    testbed.virsh("a", "define", str(path))
    testbed.virsh("a", "start", name)


@pytest.fixture(scope="module")
def gathered(testbed: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One playbook run; what it left on the controller and on the hypervisor."""
    playbook = need_ansible()
    need_tool("qemu-img")
    need_libguestfs()
    work = tmp_path_factory.mktemp("ansible")
    pbx_root = images.add_custom_program(images.assembled_debian_root(work / "pbx-root"), PROGRAM, march="haswell")
    plain_root = images.assembled_debian_root(work / "plain-root")
    for name, root in ((PBX, pbx_root), (PLAIN, plain_root)):
        disk = images.qcow2_of(images.ext4_disk(root, work / f"{name}.raw", table="gpt"), work / f"{name}.qcow2")
        start_vm(testbed, name, disk.path, work)
    testbed.define_guest("a", NODISK)
    testbed.start_guest("a", NODISK)

    inventory = work / "inventory"
    state = work / "state"
    (work / "hosts.ini").write_text(
        f"[hypervisors]\nlocalhost ansible_connection=local ansible_python_interpreter={sys.executable}\n"
    )
    extra = {
        "cpuguard_install": False,
        "cpuguard_bin": str(BIN / "cpuguard"),
        "cpuguard_controller_bin": str(BIN / "cpuguard"),
        "cpuguard_libvirt_uri": testbed.uri_a,
        "cpuguard_state_dir": str(state),
        "cpuguard_inventory_dir": str(inventory),
        "cpuguard_guest_scan_environment": {**APPLIANCE_ENV, "XDG_CACHE_HOME": str(work / "cache")},
        "ansible_become": False,  # already root, and no sudo needed for that
    }
    (work / "vars.json").write_text(json.dumps(extra))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CPUGUARD_", "ANSIBLE_"))}
    env.update(
        ANSIBLE_HOME=str(work / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
        ANSIBLE_REMOTE_TEMP=str(work / "ansible-remote-tmp"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_RETRY_FILES_ENABLED="0",
    )
    done = subprocess.run(
        [str(playbook), "-i", str(work / "hosts.ini"), str(PLAYBOOK), "-e", f"@{work / 'vars.json'}"],
        cwd=work,  # no ansible.cfg of anyone's
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    (work / "ansible-playbook.log").write_text(done.stdout + done.stderr)  # kept for post-mortems
    return {"done": done, "inventory": inventory, "state": state, "work": work}


def recap(output: str) -> dict[str, int]:
    line = next(line for line in output.splitlines() if line.startswith("localhost ") and "ok=" in line)
    return {key: int(value) for key, value in (item.split("=") for item in line.split(":", 1)[1].split())}


def test_the_playbook_gathers_snapshot_domains_and_guest_scans(gathered: dict[str, Any]) -> None:
    done = gathered["done"]
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    counts = recap(done.stdout)
    assert (counts["failed"], counts["unreachable"]) == (0, 0)
    inventory: Path = gathered["inventory"]
    # what the playbook did before the guest scan is still done
    snapshot = json.loads((inventory / "hosts" / "localhost.json").read_text())
    assert snapshot["host"] == "localhost"
    domains = {p.stem for p in (inventory / "domains" / "localhost").glob("*.xml")}
    assert {PBX, PLAIN, NODISK} <= domains
    index = json.loads((inventory / "inventory.yaml").read_text())  # written in JSON syntax, which is YAML
    assert index["hosts"] == {"localhost": {"facts": "hosts/localhost.json"}}
    for vm in (PBX, PLAIN, NODISK):
        assert index["vms"][vm] == {"host": "localhost", "domain": f"domains/localhost/{vm}.xml"}
    # the guest scans, fetched to the controller beside the inventory
    fetched = {p.stem: json.loads(p.read_text()) for p in (inventory / "guests").glob("*.json")}
    assert {PBX, PLAIN} <= set(fetched)
    assert NODISK not in fetched  # it has no disk to read: named in the run, and the run went on
    assert f"cpuguard: guest {NODISK}: " in done.stdout
    pbx = fetched[PBX]
    assert pbx["vm"] == PBX and pbx["problems"] == []
    assert [layer["path"] for d in pbx["disks"] for layer in d["layers"]] == [str(gathered["work"] / f"{PBX}.qcow2")]
    needs = {b["path"]: {r["feature"] for r in b["required"]} for b in pbx["binaries"]}
    assert "avx2" in needs[PROGRAM]
    assert not any(b["required"] for b in fetched[PLAIN]["binaries"])  # a plain Debian needs nothing more
    # on the hypervisor: one inventory of the domains running there, read by one scan-guests run
    local = json.loads((gathered["state"] / "guest-scan" / "inventory.yaml").read_text())
    assert local["vms"][PBX] == {"domain": f"{gathered['state']}/domains/{PBX}.xml"}


def test_check_on_the_fetched_inventory_names_the_scanned_program(gathered: dict[str, Any]) -> None:
    inventory: Path = gathered["inventory"]
    policies = gathered["work"] / "policies"  # no hand-written policy at all: the needs come from the scans
    (policies / "vms").mkdir(parents=True, exist_ok=True)
    pbx = json.loads((inventory / "guests" / f"{PBX}.json").read_text())
    (entry,) = [b for b in pbx["binaries"] if b["path"] == PROGRAM]
    origin = f"needed by {PROGRAM} in {PBX}'s disk vda2, scanned {pbx['scanned_at'][:10]}"
    assert entry["found_in"] == f"{PBX}'s disk vda2"

    old = cpuguard("check", "vm", PBX, "host", "uarch:westmere", "--cold", "--policies", policies,
                   "--inventory", inventory)  # fmt: skip
    assert old.returncode == 1, old.stdout + old.stderr
    assert f"BLOCK  {PBX} must not move to uarch:westmere (cold start)" in old.stdout
    assert f"avx2\n        <- {origin} (" in old.stdout
    assert f"({inventory / 'guests' / PBX}.json)" in old.stdout  # the note on the scan's age names the file

    new = cpuguard("check", "vm", PBX, "host", "uarch:haswell", "--cold", "--policies", policies,
                   "--inventory", inventory)  # fmt: skip
    assert new.returncode == 0, new.stdout + new.stderr
    plain = cpuguard("check", "vm", PLAIN, "host", "uarch:westmere", "--cold", "--policies", policies,
                     "--inventory", inventory)  # fmt: skip
    assert plain.returncode == 0, plain.stdout + plain.stderr


def test_plan_evacuate_on_the_fetched_inventory_names_the_scanned_program(gathered: dict[str, Any]) -> None:
    inventory: Path = gathered["inventory"]
    policies = gathered["work"] / "plan-policies"
    (policies / "vms").mkdir(parents=True, exist_ok=True)
    options = ["--targets", "uarch:westmere", "--cold", "--policies", policies, "--inventory", inventory]
    plan = cpuguard("plan", "evacuate", "localhost", *options, "--format", "json")
    assert plan.returncode == 1, plan.stdout + plan.stderr  # a VM has no safe target
    report = json.loads(plan.stdout)
    assert report["complete"] is True
    assert PBX in report["stranded"] and PLAIN not in report["stranded"]
    (vm,) = [v for v in report["vms"] if v["vm"] == PBX]
    (candidate,) = vm["candidates"]
    missing = {m["feature"]: m["origins"] for m in candidate["cold"]["missing"]}
    assert {"avx", "avx2"} <= set(missing)
    for origins in missing.values():  # every missing feature is the scanned program's
        assert [o["kind"] for o in origins] == ["binary"]
        assert origins[0]["detail"].startswith(f"needed by {PROGRAM} in {PBX}'s disk vda2, scanned ")
    text = cpuguard("plan", "evacuate", "localhost", *options)
    assert f"STRANDED  {PBX}: no host can take it (cold)" in text.stdout
    assert f"<- needed by {PROGRAM} in {PBX}'s disk vda2, scanned " in text.stdout
