"""What each instruction needs: iced-x86 plus cpuguard's corrections (features.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from iced_x86 import Decoder

from cpuguard.errors import BadInput
from cpuguard.scan.decode import code_count
from cpuguard.scan.features import (
    DATA_FILE,
    CodeInfo,
    Use,
    default_feature_table,
    load_instruction_knowledge,
    parse_knowledge,
)
from cpuguard.vocabulary import load_vocabulary


def info(hex_bytes: str) -> CodeInfo:
    instruction = Decoder(64, bytes.fromhex(hex_bytes)).decode()
    return default_feature_table()[instruction.code]


@pytest.mark.parametrize(
    ("encoding", "text", "features"),
    [
        ("9f", "lahf", ("lahf_lm",)),  # iced says 8086; 64-bit mode needs LAHF-SAHF
        ("9e", "sahf", ("lahf_lm",)),
        ("f3480fbdc0", "lzcnt rax,rax", ("abm",)),
        ("f30fb8c0", "popcnt eax,eax", ("popcnt",)),
        ("f0480fc70e", "lock cmpxchg16b [rsi]", ("cx16",)),
        ("660f3a44c000", "pclmulqdq xmm0,xmm0,0", ("pclmulqdq",)),
        ("0f38f006", "movbe eax,[rsi]", ("movbe",)),
        ("c4e2f9f7c0", "shlx rax,rax,rax", ("bmi2",)),
        ("c5fdfec1", "vpaddd ymm0,ymm0,ymm1", ("avx2",)),
        ("62f17d08fec1", "vpaddd xmm0,xmm0,xmm1 (EVEX)", ("avx512vl", "avx512f")),
        ("c4e2f1a9c2", "vfmadd213sd xmm0,xmm1,xmm2", ("fma",)),
        ("660f3840c1", "pmulld xmm0,xmm1", ("sse4_1",)),
        ("0fa2", "cpuid", ()),
        ("90", "nop", ()),
    ],
)
def test_instruction_features(encoding: str, text: str, features: tuple[str, ...]) -> None:
    found = info(encoding)
    assert set(found.features) == set(features), text
    assert found.use is Use.NEEDED


@pytest.mark.parametrize(
    ("encoding", "mnemonic"),
    [
        ("f30f1efa", "ENDBR64"),
        ("f30fbcc0", "TZCNT"),  # runs as BSF without BMI1
        ("0f0d08", "PREFETCHW"),
        ("f3480f1ec8", "RDSSPQ"),
    ],
)
def test_harmless_instructions_are_never_needed(encoding: str, mnemonic: str) -> None:
    found = info(encoding)
    assert found.mnemonic == mnemonic
    assert found.use is Use.HARMLESS and found.why


@pytest.mark.parametrize(("encoding", "feature"), [("0f01d0", "xsave"), ("c7f800000000", "rtm")])
def test_instructions_only_run_after_a_check(encoding: str, feature: str) -> None:
    found = info(encoding)
    assert found.use is Use.CHECKED
    assert feature in found.features


def test_every_reported_feature_is_a_vocabulary_name() -> None:
    """Whatever an instruction needs is named so that a policy can hold it."""
    vocabulary = load_vocabulary()
    table = default_feature_table()
    for code in range(code_count()):
        for feature in table[code].features:
            assert vocabulary.try_canonical(feature) == feature, (code, feature)


def test_data_file_names_exist_in_iced_and_vocabulary() -> None:
    knowledge = load_instruction_knowledge()
    vocabulary = load_vocabulary()
    for target in knowledge.extra_names.values():
        assert vocabulary.try_canonical(target) == target
    for added in knowledge.adds.values():
        assert all(vocabulary.try_canonical(f) == f for f in added)
    assert "CPUID" in knowledge.not_flags and "MULTIBYTENOP" in knowledge.not_flags


def test_no_instruction_is_left_needing_an_iced_pseudo_feature() -> None:
    """INTEL386, X64, CPUID... are generations or modes, not flags a CPU may lack."""
    table = default_feature_table()
    pseudo = {"intel386", "intel8086", "x64", "cpuid", "multibytenop", "pause"}
    for code in range(code_count()):
        assert not pseudo & set(table[code].features)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ([], "expected a mapping at the top level"),
        ({"colour": []}, "unknown key 'colour'"),
        ({"not_flags": ["INTEL9000"]}, "not_flags: 'INTEL9000' is not an iced-x86 name"),
        ({"harmless": {"FROB": "why"}}, "harmless: 'FROB' is not an iced-x86 name"),
    ],
)
def test_bad_instruction_data_names_the_file(raw: object, problem: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_knowledge(raw, Path("scan_instructions.yaml"))
    assert str(caught.value) == f"scan_instructions.yaml: {problem}"


def test_shipped_data_file_loads() -> None:
    assert DATA_FILE.exists()
    assert load_instruction_knowledge().harmless["ENDBR64"]
