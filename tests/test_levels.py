from __future__ import annotations

import itertools

import archspec.cpu
import pytest

from cpuguard.errors import UnknownName
from cpuguard.knowledge import Knowledge
from cpuguard.levels import LEVEL_NAMES, highest_level, level_features, lowest_level_covering, normalize_level


def test_levels_are_cumulative() -> None:
    for lower, upper in itertools.pairwise(LEVEL_NAMES):
        assert level_features(lower) < level_features(upper)


@pytest.mark.parametrize("level", ["x86-64-v2", "x86-64-v3", "x86-64-v4"])
def test_levels_agree_with_archspec(knowledge: Knowledge, level: str) -> None:
    """archspec ships the psABI levels as generic targets; our table must say the same
    (archspec lists only extensions beyond the baseline and does not track OSXSAVE/xsave)."""
    target = archspec.cpu.TARGETS[level.replace("-", "_")]
    theirs = {knowledge.vocabulary.try_canonical(f) or f for f in target.features}
    ours = level_features(level) - level_features("x86-64-v1") - {"xsave"}
    assert ours == theirs - {"xsave"} - level_features("x86-64-v1")


@pytest.mark.parametrize(
    ("model", "level"),
    [
        ("Westmere", "x86-64-v2"),
        ("Haswell-noTSX", "x86-64-v2"),  # libvirt's Haswell lacks abm and f16c
        ("Skylake-Server-IBRS", "x86-64-v4"),
        ("EPYC", "x86-64-v3"),
        ("Opteron_G1", "x86-64-v1"),
    ],
)
def test_levels_of_libvirt_models(knowledge: Knowledge, model: str, level: str) -> None:
    assert highest_level(knowledge.cpu_map.features_of(model)) == level


def test_lowest_level_covering() -> None:
    assert lowest_level_covering({"avx2"}) == "x86-64-v3"
    assert lowest_level_covering({"sse4_2", "avx512f"}) == "x86-64-v4"
    assert lowest_level_covering({"aes"}) is None


def test_level_spellings() -> None:
    assert normalize_level("v3") == normalize_level("x86_64_v3") == "x86-64-v3"
    with pytest.raises(UnknownName):
        normalize_level("x86-64-v5")
