"""Where planning commands take a HOST: inventory names, and every host SOURCE, ``local`` included."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cpuguard.hosts.sources import looks_like_source
from tests.conftest import EXAMPLE_POLICIES, run_cpuguard

#: What ``local`` resolves to: libvirt's view when qemu:///system answers, else /proc/cpuinfo.
LOCAL_SOURCES = ("libvirt:qemu:///system", "cpuinfo:/proc/cpuinfo")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("local", True),
        ("model:Westmere-IBRS", True),
        ("uarch:haswell", True),
        ("level:x86-64-v3", True),
        ("qemu+ssh://node3/system", True),
        ("qemu:///system", True),
        ("hosts/old-node.json", True),
        ("new-node", False),
        ("localhost", False),
    ],
)
def test_looks_like_source(spec: str, expected: bool) -> None:
    assert looks_like_source(spec) is expected


def test_a_bare_file_name_in_the_working_directory_is_a_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "spare").write_text("", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert looks_like_source("spare")
    assert not looks_like_source("other")


def test_plan_evacuate_to_this_machine() -> None:
    result = run_cpuguard(
        "plan", "evacuate", "new-node", "--targets", "local", "--policies", str(EXAMPLE_POLICIES), "--format", "json"
    )
    assert result.returncode in (0, 1), result.stderr
    assert result.stderr == ""
    data = json.loads(result.stdout)
    assert data["targets"] == ["local"] and data["complete"] is True
    assert sorted(v["vm"] for v in data["vms"]) == ["app01", "db01", "pbx01"]
    for vm in data["vms"]:
        assert [c["host"] for c in vm["candidates"]] == ["local"]
        assert vm["candidates"][0]["live"]["host_source"].startswith(LOCAL_SOURCES)
    stranded = [v["vm"] for v in data["vms"] if not v["safe_targets"]]
    assert data["stranded"] == stranded and result.returncode == (1 if stranded else 0)


def test_baseline_of_this_machine_needs_no_inventory(tmp_path: Path) -> None:
    result = run_cpuguard("baseline", "local", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["hosts"] == ["local"] and data["complete"] is True
    assert data["cpu_xml"].startswith("<cpu mode='custom'")
    mixed = run_cpuguard("baseline", "local", "new-node", "--policies", str(EXAMPLE_POLICIES), "--format", "json")
    assert mixed.returncode == 0, mixed.stderr
    assert json.loads(mixed.stdout)["hosts"] == ["local", "new-node"]


def test_an_unknown_name_is_still_one_line() -> None:
    result = run_cpuguard("baseline", "new-nod", "--policies", str(EXAMPLE_POLICIES))
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().endswith("unknown host 'new-nod' (did you mean new-node?)")
    assert len(result.stderr.strip().splitlines()) == 1
