"""What a user sees of `cpuguard scan` through the command line (issue 14 items 5 and 8): policies
without the x86-64 baseline, features separated like every other command's."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import EXAMPLE_POLICIES, need_tool, run_cpuguard

CORPUS = Path(__file__).resolve().parent / "scan" / "corpus"
V1 = ["cmov", "cx8", "fpu", "fxsr", "lm", "mmx", "sse", "sse2", "syscall"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """From tests/scan/corpus: kernels.c for the x86-64 baseline and for Haswell, clones.c (target_clones)."""
    gcc = need_tool("gcc")
    out = tmp_path_factory.mktemp("built")
    binaries = {}
    for name, source, arch in (
        ("x86-64", "kernels", "x86-64"),
        ("haswell", "kernels", "haswell"),
        ("clones", "clones", "x86-64"),
    ):
        binaries[name] = out / f"{source}-{arch}"
        subprocess.run(
            [gcc, "-O3", f"-march={arch}", "-o", str(binaries[name]), str(CORPUS / f"{source}.c")], check=True
        )
    return binaries


def _without_times(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.lstrip("- ").startswith(("sha256:", "scanned_at:"))]


def test_scan_yaml_has_no_entry_for_the_x86_64_baseline(built: dict[str, Path]) -> None:
    path = built["x86-64"]
    result = run_cpuguard("scan", "--no-cache", "--format", "yaml", str(path))
    assert result.returncode == 0, result.stderr
    assert _without_times(result.stdout) == [
        "# cpuguard scan: what these binaries need from the CPU (a policy's binaries: section)",
        "binaries:",
        f"- path: {path}",
        "  level: x86-64-v1",
        "  required: []",
        "  dispatched: []",
        "  notes: []",
    ]
    # the full report keeps them
    report = json.loads(run_cpuguard("scan", "--no-cache", "--format", "json", str(path)).stdout)
    assert [use["feature"] for use in report["files"][0]["required"]] == V1


def _verdicts(policies: Path, vm: str) -> list[dict[str, object]]:
    verdicts = []
    for host in ("old-node", "mid-node", "new-node", "level:x86-64-v1"):
        for move in ("--live", "--cold"):
            args = ("check", "vm", vm, "host", host, move, "--format", "json")
            result = run_cpuguard(*args, "--policies", str(policies))
            assert result.returncode in (0, 1), result.stderr
            verdicts.append(json.loads(result.stdout.replace(str(policies), "POLICIES")))
    return verdicts


def test_a_policy_merged_without_the_baseline_decides_like_one_with_it(built: dict[str, Path], tmp_path: Path) -> None:
    """ci01 (host-model, no policy): a scan merged now, and the same entry as earlier versions
    wrote it (with the nine baseline features), give the same verdicts and the same VM level."""
    new = tmp_path / "new"
    shutil.copytree(EXAMPLE_POLICIES, new)
    merged = run_cpuguard("scan", "--no-cache", "--merge-into", str(new / "vms" / "ci01.yaml"), str(built["x86-64"]))
    assert merged.returncode == 0, merged.stderr
    policy = yaml.safe_load((new / "vms" / "ci01.yaml").read_text())
    assert policy["binaries"][0]["required"] == []

    old = tmp_path / "old"
    shutil.copytree(new, old)
    policy["binaries"][0]["required"] = [
        {"feature": f, "instructions": 0, "functions": 0, "examples": [], "evidence": "isa-note"} for f in V1
    ]
    (old / "vms" / "ci01.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))

    verdicts = _verdicts(new, "ci01")
    assert verdicts == _verdicts(old, "ci01")
    assert {v["vm_level"] for v in verdicts if v["move"] == "cold"} == {"x86-64-v1"}
    text = run_cpuguard("check", "vm", "ci01", "host", "old-node", "--cold", "--policies", str(new))
    assert "  levels: ci01 uses features up to x86-64-v1; old-node offers all of x86-64-v2" in text.stdout


def test_the_example_pbx01_policy_decides_the_same_without_its_baseline_entries(tmp_path: Path) -> None:
    """pbx01.yaml, written before, lists the baseline; read without them it decides the same."""
    stripped = tmp_path / "policies"
    shutil.copytree(EXAMPLE_POLICIES, stripped)
    as_shipped = tmp_path / "shipped" / "policies"
    shutil.copytree(EXAMPLE_POLICIES, as_shipped)
    policy = yaml.safe_load((stripped / "vms" / "pbx01.yaml").read_text())
    before = [u["feature"] for u in policy["binaries"][0]["required"]]
    policy["binaries"][0]["required"] = [u for u in policy["binaries"][0]["required"] if u["feature"] not in V1]
    assert len(policy["binaries"][0]["required"]) == len(before) - len(V1)
    (stripped / "vms" / "pbx01.yaml").write_text(yaml.safe_dump(policy, sort_keys=False))
    assert _verdicts(stripped, "pbx01") == _verdicts(as_shipped, "pbx01")


def test_scan_text_separates_features_with_commas_like_check(built: dict[str, Path]) -> None:
    path = built["haswell"]
    result = run_cpuguard("scan", "--no-cache", str(path), str(built["clones"]))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "  needs x86-64-v3: abm, avx, avx2, bmi1, bmi2, fma, movbe, popcnt"
    assert lines.count("    baseline: cmov, cx8, fpu, fxsr, lm, mmx, sse, sse2, syscall") == 2
    assert lines[-5:] == [
        "Total: 2 files scanned, 7 KiB of code",
        "  needs x86-64-v3: abm, avx, avx2, bmi1, bmi2, fma, movbe, popcnt",
        "  oldest libvirt models offering it: Skylake-Client-noTSX-IBRS, Skylake-Client-v3, Skylake-Client-v4",
        "  oldest microarchitectures: haswell, broadwell, excavator",
        "  dispatched at run time, not needed: avx512dq, avx512f, xsave",
    ]
