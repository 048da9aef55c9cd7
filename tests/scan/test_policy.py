"""Scan results as a policy's binaries: section (policy.py), and the loader that reads it back."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cpuguard.errors import BadInput
from cpuguard.scan import BinaryNeeds, policy_binaries_from_data, report_to_policy_binaries, scan_paths
from cpuguard.scan.policy import merge_binaries
from cpuguard.scan.records import FeatureUse
from tests.scan.conftest import Built


@pytest.fixture
def section(corpus: dict[str, Built], scan_cache: Path) -> list[dict[str, Any]]:
    paths = [corpus["kernels-haswell"].path, corpus["clones"].path, corpus["kernels-isa-note-v3"].path]
    report = scan_paths(paths, cache_dir=scan_cache, now=lambda: datetime(2026, 11, 21, 12, 0, tzinfo=UTC))
    return report_to_policy_binaries(report)


def test_the_section_has_the_documented_shape(section: list[dict[str, Any]], corpus: dict[str, Built]) -> None:
    first = section[0]
    assert list(first) == ["path", "sha256", "scanned_at", "level", "required", "dispatched", "notes"]
    assert first["path"] == str(corpus["kernels-haswell"].path)
    assert first["scanned_at"] == "2026-11-21T12:00:00Z" and first["level"] == "x86-64-v3"
    avx2 = next(r for r in first["required"] if r["feature"] == "avx2")
    assert set(avx2) == {"feature", "instructions", "functions", "examples"}
    dispatched = section[1]["dispatched"]
    assert {"feature", "reason", "confidence", "instructions", "functions"} == set(dispatched[0])
    note = next(r for r in section[2]["required"] if r["feature"] == "avx2")
    assert note["evidence"] == "isa-note"


def test_it_round_trips_through_yaml_and_the_loader(section: list[dict[str, Any]]) -> None:
    text = yaml.safe_dump({"binaries": section}, sort_keys=False)
    needs = policy_binaries_from_data(yaml.safe_load(text), "pbx01.yaml")
    assert [n.path for n in needs] == [e["path"] for e in section]
    assert needs[0].features == {r["feature"] for r in section[0]["required"]}
    assert needs[0].scanned_at == datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    assert needs[1].dispatched and needs[1].dispatched[0].confidence in ("high", "medium", "low")
    assert all(n.source == "pbx01.yaml" for n in needs)


def test_the_core_policy_schema_accepts_it(section: list[dict[str, Any]]) -> None:
    """cpuguard's VM policy loader reads exactly this section."""
    from cpuguard.knowledge import load_knowledge
    from cpuguard.policy import policy_from_data

    policy = policy_from_data({"vm": "pbx01", "binaries": section}, "pbx01.yaml", load_knowledge())
    assert [b.path for b in policy.binaries] == [e["path"] for e in section]


def test_provenance_reads_like_the_issue_asks() -> None:
    needs = BinaryNeeds("/usr/sbin/asterisk", None, None, "x86-64-v3", (FeatureUse("avx2", 1234, 87, ("ast_foo",)),))
    assert needs.provenance("avx2") == "needed by /usr/sbin/asterisk (1,234 instructions in 87 functions)"


GOOD = {"path": "/usr/sbin/asterisk", "required": [{"feature": "avx2", "instructions": 3, "functions": 1}]}


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            {**GOOD, "colour": "red"},
            "binaries[0].colour: unknown key "
            "(allowed: dispatched, found_in, level, notes, path, reason, required, scanned_at, sha256)",
        ),
        ({"path": "/x"}, "binaries[0]: missing key 'required'"),
        ({**GOOD, "required": "avx2"}, "binaries[0].required: expected a list, got a string"),
        (
            {**GOOD, "required": [{"feature": "avx3"}]},
            "binaries[0].required[0].feature: unknown CPU feature 'avx3' (did you mean",
        ),
        (
            {**GOOD, "required": [{"feature": "avx2", "instructions": -1}]},
            "binaries[0].required[0].instructions: expected a count (integer >= 0), got -1",
        ),
        (
            {**GOOD, "required": [{"feature": "avx2", "instructions": True}]},
            "binaries[0].required[0].instructions: expected a count (integer >= 0), got a boolean",
        ),
        ({**GOOD, "required": [{"feature": "avx2", "why": "x"}]}, "binaries[0].required[0].why: unknown key"),
        ({**GOOD, "sha256": "abc"}, "binaries[0].sha256: expected 64 lowercase hexadecimal digits"),
        ({**GOOD, "level": "x86-64-v9"}, "binaries[0].level: unknown x86-64 level 'x86-64-v9'"),
        ({**GOOD, "scanned_at": "yesterday"}, "binaries[0].scanned_at: not an ISO 8601 time: 'yesterday'"),
        (
            {**GOOD, "dispatched": [{"feature": "avx512f", "confidence": "sure"}]},
            "binaries[0].dispatched[0].confidence: expected one of high, medium, low",
        ),
        ({**GOOD, "notes": [1]}, "binaries[0].notes[0]: expected a non-empty string, got int"),
    ],
)
def test_bad_sections_name_the_file_and_the_key(entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(BadInput) as caught:
        policy_binaries_from_data([entry], Path("policies/vms/pbx01.yaml"))
    assert str(caught.value).startswith(f"policies/vms/pbx01.yaml: {problem}")


def test_a_section_that_is_not_a_list() -> None:
    with pytest.raises(BadInput, match=r"pbx01\.yaml: binaries: expected a list, got a mapping"):
        policy_binaries_from_data({"binaries": {"path": "/x"}}, "pbx01.yaml")
    assert policy_binaries_from_data({"vm": "pbx01"}, "pbx01.yaml") == []


def test_merging_replaces_entries_of_the_same_path() -> None:
    old = [{"path": "/a", "level": "x86-64-v1"}, {"path": "/b", "level": "x86-64-v1"}]
    new = [{"path": "/b", "level": "x86-64-v3"}, {"path": "/c", "level": "x86-64-v2"}]
    assert merge_binaries(old, new) == [old[0], new[0], new[1]]
