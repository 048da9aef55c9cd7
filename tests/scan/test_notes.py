"""GNU property notes (notes.py): the ISA level the loader enforces."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from cpuguard.levels import level_features
from cpuguard.scan import elf, scan_paths
from cpuguard.scan.notes import read_properties
from cpuguard.scan.records import ISA_NOTE
from tests.conftest import need_tool
from tests.scan.conftest import Built


def properties(path: Path):  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDONLY)
    try:
        return read_properties(elf.ElfFile(elf.FileSource(fd, os.fstat(fd).st_size)))
    finally:
        os.close(fd)


def readelf_isa_needed(path: Path) -> str | None:
    readelf = need_tool("readelf")
    text = subprocess.run([readelf, "-n", str(path)], capture_output=True, text=True, check=True).stdout
    for line in text.splitlines():
        if "x86 ISA needed:" in line:  # e.g. "x86-64-baseline, x86-64-v3": the highest counts
            return line.split("x86 ISA needed:", 1)[1].split(",")[-1].strip()
    return None


def test_needed_level_agrees_with_readelf(corpus: dict[str, Built]) -> None:
    for name in ("kernels-isa-note-v3", "kernels-x86-64", "supports-static-stripped"):
        path = corpus[name].path
        ours = properties(path).needed_level
        theirs = readelf_isa_needed(path)
        spelled = {"x86-64-baseline": "x86-64-v1"}.get(theirs or "", theirs)
        assert ours == spelled, name


def test_an_isa_note_is_a_hard_requirement(corpus: dict[str, Built], scan_cache: Path) -> None:
    report = scan_paths([corpus["kernels-isa-note-v3"].path], cache_dir=scan_cache)
    scan = report.files[0]
    assert scan.isa_needed == "x86-64-v3" and scan.level == "x86-64-v3"
    from_note = {u.feature for u in scan.required if u.evidence == ISA_NOTE}
    # The code itself is baseline: what it adds to x86-64-v1 comes from the note alone.
    assert from_note >= level_features("x86-64-v3") - level_features("x86-64-v1")
    assert scan.required_features == level_features("x86-64-v3")
    assert any("GNU_PROPERTY_X86_ISA_1_NEEDED x86-64-v3" in n for n in scan.notes)
