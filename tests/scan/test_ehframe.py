"""Function boundaries from .eh_frame (ehframe.py), checked against readelf."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cpuguard.scan import elf
from cpuguard.scan.ehframe import function_ranges
from tests.conftest import need_tool
from tests.scan.conftest import Built

SYSTEM = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/bin/python3"]
FDE = re.compile(r"FDE cie=\w+ pc=([0-9a-f]+)\.\.([0-9a-f]+)")


def readelf_fdes(path: str) -> list[tuple[int, int]]:
    readelf = need_tool("readelf")
    # readelf exits 1 over unrelated warnings on some libraries; its FDE lines are still complete.
    text = subprocess.run([readelf, "--debug-dump=frames", path], capture_output=True, text=True, check=False).stdout
    return [(int(a, 16), int(b, 16) - int(a, 16)) for a, b in FDE.findall(text) if int(b, 16) > int(a, 16)]


def our_fdes(path: str) -> list[tuple[int, int]]:
    fd = os.open(path, os.O_RDONLY)
    try:
        image = elf.ElfFile(elf.FileSource(fd, os.fstat(fd).st_size))
        section = image.section(".eh_frame")
        assert section is not None
        return function_ranges(image.section_data(section), section.addr)
    finally:
        os.close(fd)


@pytest.mark.parametrize("path", SYSTEM)
def test_fdes_match_readelf_on_system_binaries(path: str) -> None:
    if not Path(path).exists():
        pytest.skip(f"{path} is not on this system")
    assert our_fdes(os.path.realpath(path)) == readelf_fdes(os.path.realpath(path))


def test_fdes_match_readelf_on_a_stripped_static_program(corpus: dict[str, Built]) -> None:
    path = str(corpus["supports-static-stripped"].path)
    found = our_fdes(path)
    assert len(found) > 500
    assert found == readelf_fdes(path)


@pytest.mark.parametrize("cut", [0, 3, 7, 20, 33])
def test_truncated_tables_keep_what_was_read(corpus: dict[str, Built], cut: int) -> None:
    path = str(corpus["kernels-x86-64"].path)
    fd = os.open(path, os.O_RDONLY)
    try:
        image = elf.ElfFile(elf.FileSource(fd, os.fstat(fd).st_size))
        section = image.section(".eh_frame")
        assert section is not None
        data = image.section_data(section)
    finally:
        os.close(fd)
    whole = function_ranges(data, section.addr)
    part = function_ranges(data[: len(data) * cut // 40], section.addr)
    assert part == whole[: len(part)]
    assert function_ranges(b"\xff" * 64, 0) == []
