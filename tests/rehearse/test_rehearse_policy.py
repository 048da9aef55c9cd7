"""A policy's ``rehearse:`` entries: validated by the schema, run when no command is given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cpuguard.errors import BadInput
from cpuguard.knowledge import Knowledge
from cpuguard.policy import policy_from_data
from cpuguard.rehearse.records import RehearseEntry
from tests.conftest import need_tool
from tests.rehearse.conftest import TEST_LOG, rehearse_cli


def test_entries_are_read(knowledge: Knowledge) -> None:
    raw = {
        "vm": "app01",
        "rehearse": [
            {"argv": ["/opt/app/haswell", "1000"]},
            {"argv": ["/opt/app/bmi2", "1", "x"], "expect_status": 3, "timeout": 5, "files": ["/etc/app.conf"],
             "description": "the nightly report"},
        ],
    }  # fmt: skip
    policy = policy_from_data(raw, "app01.yaml", knowledge)
    assert policy.rehearse == (
        RehearseEntry(("/opt/app/haswell", "1000")),
        RehearseEntry(("/opt/app/bmi2", "1", "x"), 3, 5.0, ("/etc/app.conf",), "the nightly report"),
    )


@pytest.mark.parametrize(
    "entry",
    [
        {},
        {"argv": []},
        {"argv": "/opt/app/x"},
        {"argv": ["/x"], "expect_status": 256},
        {"argv": ["/x"], "timeout": 0},
        {"argv": [""]},
        {"argv": ["/x"], "files": ["relative/path"]},
        {"argv": ["/x"], "command": "/x"},
    ],
)
def test_bad_entries_are_refused(knowledge: Knowledge, entry: dict[str, Any]) -> None:
    with pytest.raises(BadInput) as caught:
        policy_from_data({"vm": "app01", "rehearse": [entry]}, "app01.yaml", knowledge)
    assert str(caught.value).startswith("app01.yaml: ")


def _policies(tmp_path: Path, entries: list[dict[str, Any]]) -> Path:
    (tmp_path / "vms").mkdir()
    policy: dict[str, Any] = {"vm": "app01"}
    if entries:
        policy["rehearse"] = entries
    (tmp_path / "vms" / "app01.yaml").write_text(json.dumps(policy))  # JSON is YAML
    (tmp_path / "inventory.yaml").write_text("hosts: {}\nvms: {}\n")
    return tmp_path


def test_the_policy_says_what_to_run(guest_root: Path, tmp_path: Path) -> None:
    for tool in ("qemu-x86_64", "bwrap", "prlimit", "setpriv"):
        need_tool(tool)
    entries = [{"argv": ["/opt/app/guarded", "10"]}, {"argv": ["/opt/app/bmi2", "10", "x"]}]
    policies = _policies(tmp_path, entries)
    args = ["app01", "host", "uarch:sandybridge", "--root", str(guest_root), "--policies", str(policies)]
    done = rehearse_cli(*args, "--format", "json")
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert [(r["command"], r["outcome"]) for r in data] == [
        (["/opt/app/guarded", "10"], "passed"),
        (["/opt/app/bmi2", "10", "x"], "failed-cpu"),
    ]
    done = rehearse_cli(*args[:2], "uarch:haswell", *args[3:])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("PASSED: app01 on uarch:haswell\n") == 2
    # kept as evidence for the reports: the latest of each host and command
    kept = json.loads((policies / "rehearsals" / "app01.json").read_text())
    assert kept["format"] == "cpuguard-rehearsals/1"
    assert sorted((r["host"], r["outcome"]) for r in kept["rehearsals"]) == [
        ("uarch:haswell", "passed"), ("uarch:haswell", "passed"),
        ("uarch:sandybridge", "failed-cpu"), ("uarch:sandybridge", "passed"),
    ]  # fmt: skip
    done = rehearse_cli(*args, "--format", "json")  # again: replaces, never piles up
    kept = json.loads((policies / "rehearsals" / "app01.json").read_text())
    assert len(kept["rehearsals"]) == 4
    assert [r["host"] for r in kept["rehearsals"][-2:]] == ["uarch:sandybridge", "uarch:sandybridge"]
    # one JSON line per rehearsal in the log
    logged = [json.loads(line) for line in TEST_LOG.read_text().splitlines()]
    assert [line["event"] for line in logged[-2:]] == ["rehearse", "rehearse"]
    assert {line["outcome"] for line in logged[-2:]} == {"passed", "failed-cpu"}


def test_nothing_to_run(guest_root: Path, tmp_path: Path) -> None:
    policies = _policies(tmp_path, [])
    done = rehearse_cli("app01", "host", "uarch:haswell", "--root", str(guest_root), "--policies", str(policies))
    assert done.returncode == 2
    assert done.stderr == (
        "cpuguard: error: app01: nothing to run: give the command after --, or list rehearse: entries in its policy"
        " (no workload with a default was found: Asterisk)\n"
    )
