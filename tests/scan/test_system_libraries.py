"""This machine's system libraries and programs, scanned under every name they have.

The scanner's promise: glibc, libm, OpenSSL, libstdc++, the loader and a
static-pie program are not reported as needing the AVX2/AVX-512 code they
only run after a CPU check, and the answer does not depend on the name a
file is reached by (``libcrypto.so`` or ``libcrypto.so.3``) or on which
name was scanned first with a shared cache.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from cpuguard.scan import FileScan, scan_paths
from tests.conftest import in_ci

LIBDIR = Path("/usr/lib/x86_64-linux-gnu")
# (what, real file candidates, development symlink candidates)
SYSTEM_FILES = {
    "libc": ("libc.so.6",),
    "libm": ("libm.so.6",),
    "libcrypto": ("libcrypto.so.3", "libcrypto.so.1.1"),
    "libstdc++": ("libstdc++.so.6",),
    "ld.so": ("ld-linux-x86-64.so.2",),
}
NEVER_REQUIRED = {"avx", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd", "fma", "bmi2"}


def _need(path: Path | None, what: str) -> Path:
    if path is None or not path.exists():
        message = f"{what} is not on this machine"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


def _find(names: tuple[str, ...]) -> Path | None:
    return next((LIBDIR / n for n in names if (LIBDIR / n).exists()), None)


def _names(tmp_path: Path, real: Path, label: str) -> list[Path]:
    """The file itself, a symlink to it without version, and a copy under an unversioned name."""
    links = tmp_path / label
    links.mkdir()
    stem = real.name.split(".so")[0]
    link = links / f"{stem}.so"
    link.symlink_to(real)
    copy_dir = tmp_path / f"{label}-copy"
    copy_dir.mkdir()
    copy = copy_dir / f"{stem}.so"
    copy.write_bytes(real.read_bytes())
    return [real, link, copy]


def _answer(scan: FileScan) -> FileScan:
    """What a scan says, without where the file was or whether the cache answered."""
    assert scan.scanned, scan.skipped
    return replace(scan, path="", from_cache=False)


@pytest.mark.parametrize("what", sorted(SYSTEM_FILES))
def test_a_library_gets_one_answer_under_every_name_and_in_either_order(what: str, tmp_path: Path) -> None:
    real = _need(_find(SYSTEM_FILES[what]), what)
    names = _names(tmp_path, real.resolve(), what.replace("+", "p").replace(".", "_"))
    answers = []
    for order in (names, names[::-1]):
        cache = tmp_path / f"cache-{len(answers)}"
        for name in order:  # one at a time, sharing a fresh cache: the first scan fills it
            answers.append((name, _answer(scan_paths([name], cache_dir=cache, jobs=1).files[0])))
    answers.append((real, _answer(scan_paths([real], cache_dir=None, jobs=1).files[0])))
    first = answers[0][1]
    for name, answer in answers[1:]:
        assert answer == first, f"{name} scanned differently from {answers[0][0]}"
    assert not first.required_features & NEVER_REQUIRED, (what, sorted(first.required_features))
    assert first.level in ("x86-64-v1", "x86-64-v2"), (what, first.level)


def test_a_static_pie_program_follows_its_ifunc_relocations() -> None:
    ldconfig = _need(next((p for p in (Path("/usr/sbin/ldconfig"), Path("/sbin/ldconfig")) if p.exists()), None),
                     "ldconfig")  # fmt: skip
    scan = scan_paths([ldconfig], cache_dir=None, jobs=1).files[0]
    assert scan.scanned and scan.kind == "pie-executable"
    assert not scan.required_features & NEVER_REQUIRED, sorted(scan.required_features)
    dispatched = {d.feature: d for d in scan.dispatched}
    assert {"avx2", "avx512bw"} <= set(dispatched)
    assert dispatched["avx2"].confidence == "high" and "ifunc variant" in dispatched["avx2"].reason


def test_scanning_a_directory_with_unversioned_links_first_sees_through_them(tmp_path: Path) -> None:
    real = _need(_find(SYSTEM_FILES["libcrypto"]), "libcrypto")
    tree = tmp_path / "lib"
    tree.mkdir()
    # "a" sorts first: the walk meets the unversioned link before the real name.
    (tree / "a-libcrypto.so").symlink_to(real.resolve())
    (tree / "libcrypto.so.3").symlink_to(real.resolve())
    report = scan_paths([tree], cache_dir=None, jobs=1)
    assert len(report.scanned) == 1
    assert not report.totals.required or not {u.feature for u in report.totals.required} & NEVER_REQUIRED
    assert os.path.basename(report.scanned[0].path) == "a-libcrypto.so"
