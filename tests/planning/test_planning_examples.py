"""The shipped CI jobs and Ansible playbook: their command lines run for real."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, need_tool
from tests.planning.fleetfiles import copy_example

EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent  # where the cpuguard console script is installed


def run_shell(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CPUGUARD_")}
    full.update(env)
    full["PATH"] = f"{BIN}{os.pathsep}{full.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=full, capture_output=True, text=True, timeout=120
    )


def repository(tmp_path: Path) -> Path:
    """A policies repository as the CI jobs expect it: policies/ at the top."""
    repo = tmp_path / "repo"
    repo.mkdir(parents=True)
    copy_example(repo)
    return repo


def check_junit(path: Path, failures: int) -> None:
    root = ET.fromstring(path.read_text(encoding="utf-8"))
    assert root.get("failures") == str(failures)
    cases = {c.get("name"): c.find("failure") for c in root.iter("testcase")}
    assert (cases.get("pbx01") is not None) == (failures > 0)


def test_gitlab_job(tmp_path: Path) -> None:
    config = yaml.safe_load((EXAMPLES / "ci" / "gitlab-ci.yml").read_text())
    job = config["cpuguard:pre-maintenance"]
    assert job["rules"] == [{"if": "$MAINTENANCE_HOST"}]
    assert job["artifacts"]["when"] == "always"
    junit = job["artifacts"]["reports"]["junit"]
    plan = [line for line in job["script"] if line.startswith("cpuguard plan evacuate")]
    assert len(plan) == 1
    variables = {k: str(v) for k, v in job["variables"].items()}
    for host, code, failures in (("new-node", 1, 2), ("old-node", 0, 0)):
        repo = repository(tmp_path / host)
        result = run_shell(plan[0], repo, {**variables, "MAINTENANCE_HOST": host})
        assert result.returncode == code, result.stdout + result.stderr
        check_junit(repo / junit, failures)
        for path in job["artifacts"]["paths"]:
            assert (repo / path).read_text().startswith("<!DOCTYPE html>")
    assert "STRANDED  pbx01" in run_shell(plan[0], repo, {**variables, "MAINTENANCE_HOST": "new-node"}).stdout


def _steps(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step.get("name", step.get("uses", "")): step for step in workflow["jobs"]["evacuate"]["steps"]}


def test_github_workflow(tmp_path: Path) -> None:
    workflow = yaml.safe_load((EXAMPLES / "ci" / "github-pre-maintenance.yml").read_text())
    trigger = workflow[True]  # YAML 1.1 reads the key `on` as true
    assert "host" in trigger["workflow_dispatch"]["inputs"]
    env = {k: str(v) for k, v in workflow["jobs"]["evacuate"]["env"].items()}
    assert env["MAINTENANCE_HOST"] == "${{ inputs.host }}"
    steps = _steps(workflow)
    repo = repository(tmp_path)
    summary = tmp_path / "summary.md"
    env.update(MAINTENANCE_HOST="new-node", GITHUB_STEP_SUMMARY=str(summary))
    plan = run_shell(steps["Plan the evacuation"]["run"], repo, env)
    assert plan.returncode == 1, plan.stdout + plan.stderr  # the job fails: pbx01 is stranded
    check_junit(repo / steps["Publish the JUnit report"]["with"]["report_paths"], 2)
    assert run_shell(steps["Job summary"]["run"], repo, env).returncode == 0
    assert summary.read_text().startswith("## Evacuating `new-node` (live moves)")
    for name in ("Job summary", "Keep the reports", "Publish the JUnit report"):
        assert steps[name]["if"].startswith("always()"), name
    kept = sorted(p.name for p in repo.glob(steps["Keep the reports"]["with"]["path"]))
    assert kept == ["cpuguard-evacuate.html", "cpuguard-evacuate.md", "cpuguard-evacuate.xml"]


def render(text: str, variables: dict[str, str]) -> str:
    """Enough of Jinja for the playbook: ``{{ name }}`` substitution, repeated for nested variables."""
    for _ in range(5):
        text = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: variables[m.group(1)], text)
    assert "{{" not in text, text
    return text


def test_ansible_playbook_commands(tmp_path: Path) -> None:
    """Run each task's command as Ansible would, against libvirt's test driver,
    with the fetch steps done by copying: the result is an inventory cpuguard plans with."""
    need_tool("virsh")
    plays = yaml.safe_load((EXAMPLES / "ansible" / "cpuguard.yml").read_text())
    hypervisors, controller = plays
    assert hypervisors["hosts"] == "hypervisors" and controller["hosts"] == "localhost"
    state = tmp_path / "state"
    out = tmp_path / "inventory"
    variables = {
        **{k: str(v) for k, v in hypervisors["vars"].items()},
        "cpuguard_bin": str(BIN / "cpuguard"),
        "cpuguard_state_dir": str(state),
        "cpuguard_libvirt_uri": "test:///default",
        "cpuguard_inventory_dir": str(out),
        "inventory_hostname": "node1",
        "playbook_dir": str(tmp_path),
    }
    tasks = {t["name"]: t for t in hypervisors["tasks"]}
    assert tasks["Install the libvirt hook (idempotent) and make libvirt load it"]["ansible.builtin.command"] == (
        "{{ cpuguard_bin }} hook install --reload"
    )
    snapshot = render(tasks["Snapshot this host's CPU facts"]["ansible.builtin.command"], variables)
    state.mkdir()
    result = run_shell(snapshot, tmp_path, {})
    assert result.returncode == 0, result.stderr
    dump = tasks["Save the definition of every running domain"]
    result = run_shell(render(dump["ansible.builtin.shell"], variables), tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["test.xml"]  # the test driver's one running domain
    for name in ("Fetch the snapshot", "Fetch the domain definitions"):
        fetch = tasks[name]["ansible.builtin.fetch"]
        for item in [None] if "loop" not in tasks[name] else result.stdout.split():
            values = {**variables, "item": item or ""}
            destination = Path(render(fetch["dest"], values))
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(render(fetch["src"], values), destination)
    index = render(controller["tasks"][0]["ansible.builtin.command"], {**variables, **controller["vars"]})
    index = index.replace("cpuguard inventory", f"{BIN / 'cpuguard'} inventory", 1)
    result = run_shell(index.replace(str(tmp_path / "inventory"), str(out)), tmp_path, {})
    assert result.returncode == 0, result.stderr
    inventory = yaml.safe_load((out / "inventory.yaml").read_text())
    assert inventory["hosts"] == {"node1": {"facts": "hosts/node1.json"}}
    assert inventory["vms"] == {"test": {"host": "node1", "domain": "domains/node1/test.xml"}}
