"""Build facts a binary states about itself (buildinfo.py): Asterisk's BUILD_NATIVE."""

from __future__ import annotations

from pathlib import Path

from cpuguard.scan import scan_paths
from tests.conftest import run_cpuguard
from tests.scan.conftest import Built

NOTE = 'built with BUILD_NATIVE (asterisk_build_opts: "BUILD_NATIVE, OPTIONAL_API"): compiled for the build host\'s CPU'
NOTE_ALL = (
    'built with BUILD_NATIVE (asterisk_build_opts_all: "BUILD_NATIVE, OPTIONAL_API"): '
    "compiled for the build host's CPU"
)
NOTE_STRIPPED = 'built with BUILD_NATIVE (.rodata: "BUILD_NATIVE, OPTIONAL_API"): compiled for the build host\'s CPU'


def notes(path: Path, cache: Path) -> tuple[str, ...]:
    return scan_paths([path], cache_dir=cache).files[0].notes


def test_build_native_is_reported_from_the_symbol(corpus: dict[str, Built], scan_cache: Path) -> None:
    assert NOTE in notes(corpus["asterisk-native"].path, scan_cache)


def test_build_native_is_found_in_a_stripped_binary(corpus: dict[str, Built], scan_cache: Path) -> None:
    assert NOTE_STRIPPED in notes(corpus["asterisk-native-stripped"].path, scan_cache)


def test_asterisk_22_keeps_build_native_in_build_opts_all(corpus: dict[str, Built], scan_cache: Path) -> None:
    """Asterisk 22's asterisk_build_opts is "OPTIONAL_API"; BUILD_NATIVE is only in asterisk_build_opts_all."""
    found = notes(corpus["asterisk22-native"].path, scan_cache)
    assert [n for n in found if "BUILD_NATIVE" in n] == [NOTE_ALL]


def test_asterisk_22_stripped_is_found_in_rodata(corpus: dict[str, Built], scan_cache: Path) -> None:
    found = notes(corpus["asterisk22-native-stripped"].path, scan_cache)
    assert [n for n in found if "BUILD_NATIVE" in n] == [NOTE_STRIPPED]


def test_other_build_options_are_not_a_note(corpus: dict[str, Built], scan_cache: Path) -> None:
    assert not any("BUILD_NATIVE" in n for n in notes(corpus["asterisk-generic"].path, scan_cache))
    assert not any("BUILD_NATIVE" in n for n in notes(corpus["kernels-haswell"].path, scan_cache))


def test_cpuguard_scan_shows_it(corpus: dict[str, Built], tmp_path: Path) -> None:
    """The note as `cpuguard scan` prints it for an unstripped Asterisk 22 build."""
    binary = corpus["asterisk22-native"].path
    result = run_cpuguard("scan", str(binary), "--cache-dir", str(tmp_path / "cache"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"  note: {NOTE_ALL}" in result.stdout.splitlines()
