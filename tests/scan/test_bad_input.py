"""Hostile and odd files (elf.py, scanner.py): a clear reason per file, the scan goes on."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cpuguard.scan import Progress, scan_paths
from cpuguard.scan.analyze import analyze_file
from cpuguard.scan.scanner import CHANGED, NOT_ELF
from tests.scan.conftest import Built

SHDR = struct.Struct("<IIQQQQIIQQ")


def copy(built: Built, directory: Path, name: str) -> Path:
    target = directory / name
    target.write_bytes(built.path.read_bytes())
    return target


def patch_section(path: Path, name: str, **fields: int) -> None:
    """Overwrite fields of section ``name``'s header (offset, size)."""
    data = bytearray(path.read_bytes())
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    strtab = SHDR.unpack_from(data, shoff + shstrndx * shentsize)
    for i in range(shnum):
        header = list(SHDR.unpack_from(data, shoff + i * shentsize))
        label_at = strtab[4] + header[0]
        label = bytes(data[label_at : data.index(0, label_at)]).decode()
        if label == name:
            if "offset" in fields:
                header[4] = fields["offset"]
            if "size" in fields:
                header[5] = fields["size"]
            SHDR.pack_into(data, shoff + i * shentsize, *header)
    path.write_bytes(bytes(data))


def reasons(paths: list[Path], cache: Path) -> dict[str, str | None]:
    report = scan_paths(paths, cache_dir=cache)
    return {Path(f.path).name: f.skipped for f in report.files}


def test_each_bad_file_says_why_and_the_rest_is_scanned(
    corpus: dict[str, Built], tmp_path: Path, scan_cache: Path
) -> None:
    good = copy(corpus["kernels-x86-64"], tmp_path, "good")
    data = good.read_bytes()
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "tiny").write_bytes(data[:10])
    (tmp_path / "headless").write_bytes(data[:200])
    (tmp_path / "text").write_text("#!/bin/sh\necho hello\n")
    (tmp_path / "elf32").write_bytes(data[:4] + b"\x01" + data[5:])
    (tmp_path / "arm64").write_bytes(data[:18] + struct.pack("<H", 183) + data[20:])
    (tmp_path / "object.o").write_bytes(data[:16] + struct.pack("<H", 1) + data[18:])
    found = reasons(sorted(tmp_path.iterdir()), scan_cache)
    assert found["good"] is None
    assert found["empty"] == "empty file"
    assert found["tiny"] == "truncated ELF header (10 bytes)"
    assert found["headless"] is not None and "lies past the end of the file" in found["headless"]
    assert found["text"] == NOT_ELF
    assert found["elf32"] == "32-bit ELF (x86-64); only 64-bit x86 code is scanned"
    assert found["arm64"] == "ELF for AArch64, not x86-64"
    assert found["object.o"] == "relocatable object, not a program or library"


@pytest.mark.parametrize("fields", [{"offset": 1 << 40}, {"size": 1 << 62}])
def test_a_section_past_the_end_is_left_out_with_a_note(
    corpus: dict[str, Built], tmp_path: Path, scan_cache: Path, fields: dict[str, int]
) -> None:
    path = copy(corpus["kernels-haswell"], tmp_path, "broken")
    patch_section(path, ".text", **fields)
    scan = scan_paths([path], cache_dir=scan_cache).files[0]
    assert scan.scanned
    assert any(
        n.startswith("section .text (") and n.endswith("lies past the end of the file; not scanned") for n in scan.notes
    )
    assert "avx2" not in scan.required_features  # the code that needed it was not read


def test_zero_size_sections_are_fine(corpus: dict[str, Built], tmp_path: Path, scan_cache: Path) -> None:
    path = copy(corpus["kernels-haswell"], tmp_path, "nocode")
    patch_section(path, ".text", size=0)
    assert scan_paths([path], cache_dir=scan_cache).files[0].scanned


def test_symlink_loops_and_fifos_do_not_hang(corpus: dict[str, Built], tmp_path: Path, scan_cache: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    copy(corpus["kernels-x86-64"], tree / "sub", "prog")
    (tree / "sub" / "again").symlink_to(tree)  # a directory loop
    (tree / "a").symlink_to(tree / "b")
    (tree / "b").symlink_to(tree / "a")  # a file loop
    os.mkfifo(tree / "pipe")
    report = scan_paths([tree, tree / "a", tree / "pipe"], cache_dir=scan_cache)
    by_name = {Path(f.path).name: f.skipped for f in report.files}
    assert by_name["prog"] is None and len(report.scanned) == 1
    assert by_name["a"] == "symbolic link loop"
    assert by_name["pipe"] == "not a regular file"  # named on the command line: said; in a tree: ignored


def test_a_file_that_changes_while_scanned_is_not_trusted(
    corpus: dict[str, Built], tmp_path: Path, scan_cache: Path
) -> None:
    big = copy(corpus["supports-static"], tmp_path, "big")
    small = copy(corpus["kernels-x86-64"], tmp_path, "small")
    changed: list[str] = []

    def meddle(event: Progress) -> None:
        # Files are analysed largest first: once "big" is done, rewrite "small".
        if event.path == str(big) and event.stage == "done" and not changed:
            small.write_bytes(small.read_bytes() + b"\0")
            changed.append(event.path)

    report = scan_paths([big, small], cache_dir=scan_cache, progress=meddle, jobs=1)
    by_name = {Path(f.path).name: f for f in report.files}
    assert changed and by_name["big"].scanned
    assert by_name["small"].skipped == CHANGED
    again = scan_paths([small], cache_dir=scan_cache).files[0]
    assert again.scanned and not again.from_cache  # the result of the changing file was not cached


def test_unreadable_paths(tmp_path: Path, scan_cache: Path) -> None:
    report = scan_paths([tmp_path / "missing"], cache_dir=scan_cache)
    assert report.files[0].skipped == "No such file or directory"
    assert not report.scanned


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 20_000), st.integers(0, 255)), min_size=1, max_size=40))
def test_corrupted_programs_give_a_result_not_an_exception(
    corpus: dict[str, Built], tmp_path: Path, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(corpus["kernels-x86-64"].path.read_bytes())
    for position, value in flips:
        data[position % len(data)] = value
    target = tmp_path / "mutant"
    target.write_bytes(bytes(data))
    scan = analyze_file(str(target), "0" * 64, "mutant")
    assert scan.scanned or scan.skipped


def test_truncation_at_every_header_byte_and_through_the_file(corpus: dict[str, Built], tmp_path: Path) -> None:
    """A real program cut short anywhere: a reason or a result, never an exception or a hang.
    Every byte boundary through the ELF and program headers, then every 61st byte to the end."""
    data = corpus["kernels-x86-64"].path.read_bytes()
    cuts = [*range(0, min(len(data), 1024)), *range(1024, len(data), 61)]
    target = tmp_path / "truncated"
    outcomes = {"scanned": 0, "skipped": 0}
    for cut in cuts:
        target.write_bytes(data[:cut])
        scan = analyze_file(str(target), "0" * 64, "truncated")
        assert scan.scanned or scan.skipped, cut
        if scan.skipped:
            assert "\n" not in scan.skipped
        outcomes["scanned" if scan.scanned else "skipped"] += 1
    assert outcomes["skipped"] >= 64  # cut inside the ELF header: never read as a program
