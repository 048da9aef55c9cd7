"""Which files a scan covers (walk.py, scanner.py): trees, links, needed libraries."""

from __future__ import annotations

import os
from pathlib import Path

from cpuguard.scan import scan_paths
from cpuguard.scan.walk import expand, library_search_dirs, resolve_library
from tests.scan.conftest import Built


def test_directories_are_walked_in_order_and_each_file_is_scanned_once(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "two").write_text("2")
    (tmp_path / "a").write_text("1")
    os.link(tmp_path / "a", tmp_path / "hard")
    (tmp_path / "soft").symlink_to(tmp_path / "b" / "two")
    found = [Path(t.path).relative_to(tmp_path) for t in expand([tmp_path, tmp_path / "a"])]
    assert found == [Path("a"), Path("b/two")]


def test_follow_needed_scans_the_libraries_a_program_loads(corpus: dict[str, Built], scan_cache: Path) -> None:
    report = scan_paths([corpus["kernels-haswell"].path], follow_needed=True, cache_dir=scan_cache)
    names = [Path(f.path).name for f in report.scanned]
    assert names[0] == "kernels-haswell" and "libc.so.6" in names
    assert report.totals.files_scanned == len(names)
    # libc dispatches AVX-512; the program needs AVX2. Neither makes AVX-512 a need.
    assert "avx2" in {u.feature for u in report.totals.required}
    assert "avx512f" not in {u.feature for u in report.totals.required}


def test_a_library_that_cannot_be_found_is_said(corpus: dict[str, Built], scan_cache: Path) -> None:
    report = scan_paths([corpus["kernels-haswell"].path], follow_needed=True, cache_dir=scan_cache, library_dirs=[])
    missing = [f for f in report.files if not f.scanned]
    assert [(f.path, f.skipped) for f in missing] == [
        ("libc.so.6", f"library not found (needed by {corpus['kernels-haswell'].path})")
    ]


def test_runpath_origin_and_search_order(tmp_path: Path) -> None:
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "libx.so.1").write_text("")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "libx.so.1").write_text("")
    program = tmp_path / "bin" / "prog"
    program.parent.mkdir()
    program.write_text("")
    found = resolve_library("libx.so.1", str(program), ["$ORIGIN/../lib"], [str(tmp_path / "other")])
    assert found is not None and Path(found).resolve() == (tmp_path / "lib" / "libx.so.1").resolve()
    assert resolve_library("libx.so.1", str(program), [], [str(tmp_path / "other")]) == str(
        tmp_path / "other" / "libx.so.1"
    )
    assert resolve_library("liby.so", str(program), [], [str(tmp_path)]) is None


def test_ld_so_conf_includes(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text("/opt/a/lib\n# comment\n")
    (tmp_path / "conf.d" / "b.conf").write_text("/opt/b/lib\n")
    main = tmp_path / "ld.so.conf"
    main.write_text("include conf.d/*.conf\n/opt/main\n")
    dirs = library_search_dirs({"LD_LIBRARY_PATH": "/first:"}, str(main))
    assert dirs[:4] == ["/first", "/opt/a/lib", "/opt/b/lib", "/opt/main"]
    assert "/usr/lib/x86_64-linux-gnu" in dirs
