from __future__ import annotations

from pathlib import Path

import pytest

from cpuguard.errors import UnknownFeature
from cpuguard.knowledge import Knowledge
from cpuguard.vocabulary import match_key

# (spelling, canonical Linux name, which naming scheme uses that spelling)
SPELLINGS = [
    ("sse4.2", "sse4_2", "libvirt"),
    ("SSE4_2", "sse4_2", "iced-x86"),
    ("SSE42", "sse4_2", "klauspost/NFD"),
    ("HW_CPU_X86_SSE42", "sse4_2", "os-traits"),
    ("sse4-2", "sse4_2", "qemu"),
    ("pclmuldq", "pclmulqdq", "libvirt"),
    ("CLMUL", "pclmulqdq", "klauspost/NFD"),
    ("HW_CPU_X86_CLMUL", "pclmulqdq", "os-traits"),
    ("tsc-deadline", "tsc_deadline_timer", "libvirt"),
    ("sha-ni", "sha_ni", "libvirt"),
    ("SHA", "sha_ni", "iced-x86"),
    ("avx512vnni", "avx512_vnni", "libvirt"),
    ("AVX512_VNNI", "avx512_vnni", "iced-x86"),
    ("HW_CPU_X86_AVX512VNNI", "avx512_vnni", "os-traits"),
    ("cmt", "cqm", "libvirt"),
    ("invtsc", "nonstop_tsc", "libvirt"),
    ("BMI1", "bmi1", "iced-x86"),
    ("HW_CPU_X86_BMI", "bmi1", "os-traits"),
    ("AVX2", "avx2", "klauspost/NFD"),
    ("HW_CPU_X86_AVX2", "avx2", "os-traits"),
    ("FMA3", "fma", "klauspost/NFD"),
    ("AESNI", "aes", "klauspost/NFD"),
    ("SSE3", "pni", "iced-x86"),
    ("sse3", "pni", "qemu"),
    ("LZCNT", "abm", "iced-x86"),
    ("CMPXCHG16B", "cx16", "iced-x86"),
    ("avx512-vpopcntdq", "avx512_vpopcntdq", "libvirt"),
    ("AVX512_VPOPCNTDQ", "avx512_vpopcntdq", "iced-x86"),
    ("md-clear", "md_clear", "libvirt"),
    ("amx-tile", "amx_tile", "libvirt"),
    ("AVX_VNNI", "avx_vnni", "iced-x86"),
    ("X86_FEATURE_AVX512BW", "avx512bw", "kernel"),
]


@pytest.mark.parametrize(("spelling", "canonical", "scheme"), SPELLINGS)
def test_every_scheme_reaches_the_linux_name(knowledge: Knowledge, spelling: str, canonical: str, scheme: str) -> None:
    assert knowledge.vocabulary.canonical(spelling) == canonical, scheme


def test_round_trip_through_libvirt_names(knowledge: Knowledge) -> None:
    vocabulary = knowledge.vocabulary
    assert vocabulary.to_libvirt, "no libvirt features loaded"
    for canonical, libvirt in vocabulary.to_libvirt.items():
        assert vocabulary.canonical(libvirt) == canonical
        assert vocabulary.canonical(canonical) == canonical
        assert vocabulary.libvirt_name(canonical) == libvirt


def test_every_flag_linux_prints_here_is_known(knowledge: Knowledge) -> None:
    flags = Path("/proc/cpuinfo").read_text().split("flags\t\t: ", 1)[1].split("\n", 1)[0].split()
    unknown = [f for f in flags if knowledge.vocabulary.try_canonical(f) != f]
    assert unknown == []


def test_unknown_name_is_an_error_with_suggestions(knowledge: Knowledge) -> None:
    with pytest.raises(UnknownFeature) as info:
        knowledge.vocabulary.canonical("avx512vnnl", where="policies/vms/x.yaml")
    message = str(info.value)
    assert message.startswith("policies/vms/x.yaml: unknown CPU feature 'avx512vnnl'")
    assert "avx512_vnni" in message


def test_matching_ignores_case_and_separators() -> None:
    assert match_key("SSE4.2") == match_key("sse4_2") == match_key("sse4-2") == "sse42"
    assert match_key("HW_CPU_X86_AVX2") == "avx2"


def test_non_migratable_features_come_from_cpu_map(knowledge: Knowledge) -> None:
    assert "nonstop_tsc" in knowledge.vocabulary.non_migratable  # libvirt's invtsc
    assert "avx2" not in knowledge.vocabulary.non_migratable


def test_iced_decoder_feature_names_resolve(knowledge: Knowledge) -> None:
    iced = pytest.importorskip("iced_x86")
    names = [n for n in dir(iced.CpuidFeature) if n.isupper()]
    wanted = [
        "SSE4_2",
        "AVX2",
        "AVX512F",
        "AVX512_VNNI",
        "BMI1",
        "BMI2",
        "LZCNT",
        "POPCNT",
        "MOVBE",
        "FMA",
        "F16C",
        "CMPXCHG16B",
        "AES",
        "PCLMULQDQ",
        "SHA",
        "ADX",
        "RDRAND",
        "RDSEED",
        "SSSE3",
        "SSE3",
    ]
    for name in wanted:
        assert name in names
        assert knowledge.vocabulary.try_canonical(name) is not None, name
