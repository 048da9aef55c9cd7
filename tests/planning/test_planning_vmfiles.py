"""Planning finds and reads policies its own (measured, faster) way: the result must be the core's."""

from __future__ import annotations

from pathlib import Path

import pytest

from cpuguard.errors import BadInput
from cpuguard.knowledge import Knowledge
from cpuguard.planning.vmfiles import policy_files, read_policy
from cpuguard.policy import find_policy
from cpuguard.policy import read_policy as core_read_policy
from tests.conftest import EXAMPLE_POLICIES
from tests.planning.fleetfiles import copy_example


def test_example_policies_read_as_the_core_reads_them(knowledge: Knowledge) -> None:
    found = policy_files(EXAMPLE_POLICIES)
    assert sorted(found) == ["app01", "db01", "pbx01", "web01"]
    for vm, path in found.items():
        ours = read_policy(path, vm, knowledge)
        assert ours == find_policy(EXAMPLE_POLICIES, vm, knowledge) == core_read_policy(path, knowledge, vm=vm)
    assert [b.path for b in read_policy(found["pbx01"], "pbx01", knowledge).binaries] == ["/usr/sbin/asterisk"]


def test_yaml_is_preferred_to_yml_as_find_policy_does(tmp_path: Path, knowledge: Knowledge) -> None:
    policies = copy_example(tmp_path)
    (policies / "vms" / "db01.yml").write_text("vm: db01\nrequires: {features: [avx512f]}\n", encoding="utf-8")
    (policies / "vms" / "ci01.yml").write_text("vm: ci01\nrequires: {features: [sse4_2]}\n", encoding="utf-8")
    found = policy_files(policies)
    assert found["db01"].name == "db01.yaml" and found["ci01"].name == "ci01.yml"
    for vm in ("db01", "ci01"):
        assert read_policy(found[vm], vm, knowledge) == find_policy(policies, vm, knowledge)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("vm: db01\nmode: enforce\nmode: warn\n", "invalid YAML: duplicate key 'mode'"),
        ("vm: db01\nrequires: {features: [avx2], features: [avx512f]}\n", "invalid YAML: duplicate key 'features'"),
        ("vm: web01\n", "policy is for VM 'web01', expected 'db01'"),
        ("vm: db01\nrequires: {features: [avx9000]}\n", "avx9000"),
    ],
)
def test_bad_policies_are_refused_as_the_core_refuses_them(
    tmp_path: Path, knowledge: Knowledge, text: str, problem: str
) -> None:
    path = tmp_path / "db01.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(BadInput) as ours:
        read_policy(path, "db01", knowledge)
    with pytest.raises(BadInput) as core:
        core_read_policy(path, knowledge, vm="db01")
    assert problem in ours.value.line() and problem in core.value.line()
