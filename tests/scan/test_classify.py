"""Required or dispatched (classify.py), on the gcc corpus and this machine's libraries.

These tests pin down *why* a feature lands where it does; test_groundtruth.py
checks that the resulting verdicts are right.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cpuguard.scan import FileScan, scan_paths
from tests.conftest import need_tool
from tests.scan.conftest import Built

DISPATCHED_EXTENSIONS = {"avx", "avx2", "avx512f", "avx512bw", "avx512vl", "sse4_2", "ssse3", "bmi2", "aes"}


def scan_one(path: Path, cache: Path) -> FileScan:
    report = scan_paths([path], cache_dir=cache)
    assert len(report.files) == 1 and report.files[0].scanned, report.files
    return report.files[0]


def dispatched(scan: FileScan) -> dict[str, tuple[str, str]]:
    return {d.feature: (d.reason, d.confidence) for d in scan.dispatched}


def test_march_haswell_needs_haswell_features_in_its_own_functions(corpus: dict[str, Built], scan_cache: Path) -> None:
    scan = scan_one(corpus["kernels-haswell"].path, scan_cache)
    uses = {u.feature: u for u in scan.required}
    assert {"avx", "avx2", "fma", "bmi1", "bmi2", "movbe", "abm", "popcnt"} <= set(uses)
    assert scan.level == "x86-64-v3"
    assert "saxpy.constprop.0" in uses["fma"].examples
    assert uses["avx2"].functions >= 2 and uses["avx2"].instructions >= uses["avx2"].functions


def test_target_clones_variants_are_dispatched_by_their_resolver(corpus: dict[str, Built], scan_cache: Path) -> None:
    scan = scan_one(corpus["clones"].path, scan_cache)
    found = dispatched(scan)
    assert not scan.required_features & {"avx", "avx2", "avx512f"}
    reason, confidence = found["avx2"]
    assert confidence == "high" and "ifunc variant work." in reason and "resolver of work" in reason
    assert "avx512f" in found


def test_builtin_cpu_supports_guards_the_call(corpus: dict[str, Built], scan_cache: Path) -> None:
    found = dispatched(scan_one(corpus["supports"].path, scan_cache))
    assert found["popcnt"] == ("count_hw.constprop.0 is used only after the CPU check in main", "medium")
    assert found["avx2"][0].startswith("sum_avx2")


@pytest.mark.parametrize("name", ["supports-static-stripped", "ifunc-nopie-stripped", "clones-static-stripped"])
def test_stripped_and_static_programs_still_show_dispatch(
    corpus: dict[str, Built], scan_cache: Path, name: str
) -> None:
    scan = scan_one(corpus[name].path, scan_cache)
    assert not scan.required_features & DISPATCHED_EXTENSIONS, scan.required
    assert "avx2" in dispatched(scan)


def test_twin_builds_of_one_body_are_a_run_time_choice(corpus: dict[str, Built], scan_cache: Path) -> None:
    scan = scan_one(corpus["twins-stripped"].path, scan_cache)
    assert "bmi2" not in scan.required_features
    reason, confidence = dispatched(scan)["bmi2"]
    assert "two builds of the same code" in reason and confidence == "medium"


@pytest.mark.parametrize("name", ["field-flag", "field-flag-stripped", "field-flag-static-stripped"])
def test_a_cpuid_flag_kept_in_a_structure_field_guards_the_call(
    corpus: dict[str, Built], scan_cache: Path, name: str
) -> None:
    # grub's zstd: dctx->bmi2 is set from CPUID, tested before the BMI2 build is called.
    scan = scan_one(corpus[name].path, scan_cache)
    assert "bmi2" not in scan.required_features, scan.required
    reason, confidence = dispatched(scan)["bmi2"]
    if name == "field-flag":
        assert reason == "mix_fast.constprop.0 is used only after the CPU check in mix.constprop.0"
    elif name == "field-flag-stripped":  # a static program's best reason is glibc's BMI2 ifunc variants
        assert " is used only after the CPU check in " in reason and confidence == "medium"


@pytest.mark.parametrize("name", ["exports-rdynamic", "exports-rdynamic-stripped"])
def test_a_program_is_not_entered_through_its_exports(corpus: dict[str, Built], scan_cache: Path, name: str) -> None:
    scan = scan_one(corpus[name].path, scan_cache)
    assert scan.kind == "pie-executable" and "avx" not in scan.required_features, scan.required
    assert dispatched(scan)["avx"] == (
        "scale_wide is exported, but nothing in the program refers to it"
        " (a program is entered at its ELF entry, not through its exports)",
        "medium",
    )


@pytest.mark.parametrize("flags", [["-rdynamic", "-DLOADS_CODE"], ["-shared", "-fPIC"]], ids=["dlopen", "library"])
def test_exports_stay_entries_where_other_code_can_call_them(
    tmp_path: Path, scan_cache: Path, flags: list[str]
) -> None:
    # A program that calls dlopen may load a plugin that calls its exports; a library's callers do.
    gcc = need_tool("gcc")
    built = tmp_path / "exports"
    source = Path(__file__).resolve().parent / "corpus" / "exports.c"
    subprocess.run([gcc, "-O3", "-march=x86-64", *flags, "-o", str(built), str(source)], check=True)
    uses = {u.feature: u for u in scan_one(built, scan_cache).required}
    assert uses["avx"].examples == ("scale_wide",)


def test_cet_markers_and_tzcnt_are_not_requirements(corpus: dict[str, Built], scan_cache: Path) -> None:
    scan = scan_one(corpus["kernels-cet"].path, scan_cache)
    assert not scan.required_features & {"ibt", "user_shstk", "bmi1"}
    assert scan.level == "x86-64-v1"


def test_lahf_in_64_bit_mode_needs_lahf_lm(corpus: dict[str, Built], scan_cache: Path) -> None:
    uses = {u.feature: u for u in scan_one(corpus["lahf"].path, scan_cache).required}
    assert uses["lahf_lm"].examples == ("main",)


SYSTEM_LIBRARIES = [
    "/usr/lib/x86_64-linux-gnu/libc.so.6",
    "/usr/lib/x86_64-linux-gnu/libm.so.6",
    "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
    "/usr/lib/x86_64-linux-gnu/libstdc++.so.6",
    "/usr/lib/x86_64-linux-gnu/libz.so.1",
    "/usr/lib/x86_64-linux-gnu/liblzma.so.5",
    "/usr/lib/x86_64-linux-gnu/libzstd.so.1",
    "/usr/lib64/ld-linux-x86-64.so.2",
    "/usr/bin/python3",
]


@pytest.mark.parametrize("path", SYSTEM_LIBRARIES)
def test_system_binaries_do_not_need_what_they_dispatch(path: str, scan_cache: Path) -> None:
    if not Path(path).exists():
        pytest.skip(f"{path} is not on this system")
    scan = scan_one(Path(path).resolve(), scan_cache)
    assert not scan.required_features & DISPATCHED_EXTENSIONS, scan.required
    assert scan.level in ("x86-64-v1", "x86-64-v2")


def test_libc_reports_its_avx512_as_dispatched(scan_cache: Path) -> None:
    scan = scan_one(Path("/usr/lib/x86_64-linux-gnu/libc.so.6").resolve(), scan_cache)
    found = dispatched(scan)
    assert {"avx2", "avx512f", "avx512bw"} <= set(found)
    assert "glibc" in found["avx512f"][0]


EXPORTED_VARIANTS = """
#include <stddef.h>
__attribute__((target("avx2"))) void AddRow_AVX2(int *d, const int *s, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] += s[i] * 3;
}
void AddRow_C(int *d, const int *s, size_t n) { for (size_t i = 0; i < n; i++) d[i] += s[i] * 3; }
"""


def test_exported_feature_named_variants_are_left_to_the_caller(tmp_path: Path, scan_cache: Path) -> None:
    # libyuv's shape: ARGBToYRow_AVX2 is exported so that callers pick it after their own CPU check.
    gcc = need_tool("gcc")
    source = tmp_path / "rows.c"
    source.write_text(EXPORTED_VARIANTS)
    library = tmp_path / "librows.so"
    subprocess.run([gcc, "-O3", "-shared", "-fPIC", "-o", str(library), str(source)], check=True)
    scan = scan_one(library, scan_cache)
    assert "avx2" not in scan.required_features
    assert dispatched(scan)["avx2"] == ("AddRow_AVX2 is a CPU-specific variant, by its name", "medium")
