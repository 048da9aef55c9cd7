"""GNU property notes: the x86 ISA level and feature bits a binary declares.

``GNU_PROPERTY_X86_ISA_1_NEEDED`` is checked by glibc's loader ("CPU ISA
level is lower than required"), so it is a hard requirement when present.
``FEATURE_2_NEEDED`` says which register sets / save instructions the code
needs. The ``_USED`` variants record what the assembler saw and are only
informative. Layout: "Linux Extensions to gABI", *Program Property*
(https://github.com/hjl-tools/linux-abi/wiki) and binutils' ``include/elf/common.h``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from cpuguard.scan import elf

NT_GNU_PROPERTY_TYPE_0 = 5
PT_GNU_PROPERTY = 0x6474E553
X86_FEATURE_2_NEEDED = 0xC0008001
X86_ISA_1_NEEDED = 0xC0008002
X86_FEATURE_2_USED = 0xC0010001
X86_ISA_1_USED = 0xC0010002

ISA_LEVELS = ((8, "x86-64-v4"), (4, "x86-64-v3"), (2, "x86-64-v2"), (1, "x86-64-v1"))
# GNU_PROPERTY_X86_FEATURE_2_* bits -> canonical features they imply.
FEATURE_2_BITS = {
    0x2: ("x87", ("fpu",)),
    0x4: ("MMX", ("mmx",)),
    0x8: ("XMM", ("sse",)),
    0x10: ("YMM", ("avx",)),
    0x20: ("ZMM", ("avx512f",)),
    0x40: ("FXSR", ("fxsr",)),
    0x80: ("XSAVE", ("xsave",)),
    0x100: ("XSAVEOPT", ("xsaveopt",)),
    0x200: ("XSAVEC", ("xsavec",)),
    0x400: ("TMM", ("amx_tile",)),
    0x800: ("MASK", ("avx512f",)),
}


@dataclass(frozen=True)
class Properties:
    isa_needed: int | None = None
    isa_used: int | None = None
    feature2_needed: int | None = None
    feature2_used: int | None = None

    @property
    def needed_level(self) -> str | None:
        return level_of(self.isa_needed)

    @property
    def used_level(self) -> str | None:
        return level_of(self.isa_used)

    def needed_features(self) -> tuple[tuple[str, str], ...]:
        """``(feature, bit name)`` for each FEATURE_2_NEEDED bit."""
        result: list[tuple[str, str]] = []
        for bit, (label, features) in FEATURE_2_BITS.items():
            if self.feature2_needed and self.feature2_needed & bit:
                result.extend((f, label) for f in features)
        return tuple(result)


def level_of(bits: int | None) -> str | None:
    if not bits:
        return None
    for bit, name in ISA_LEVELS:
        if bits & bit:
            return name
    return None


def _parse_notes(data: bytes) -> Properties:
    found: dict[int, int] = {}
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, ntype = struct.unpack_from("<III", data, pos)
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        desc_end = desc_start + descsz
        if desc_end > len(data):
            break
        name = data[name_start : name_start + namesz].rstrip(b"\0")
        if ntype == NT_GNU_PROPERTY_TYPE_0 and name == b"GNU":
            _parse_properties(data[desc_start:desc_end], found)
        # Property notes are 8-byte aligned in ELF64; other notes 4-byte.
        align = 8 if ntype == NT_GNU_PROPERTY_TYPE_0 else 4
        pos = desc_start + ((descsz + align - 1) & ~(align - 1))
    return Properties(
        found.get(X86_ISA_1_NEEDED),
        found.get(X86_ISA_1_USED),
        found.get(X86_FEATURE_2_NEEDED),
        found.get(X86_FEATURE_2_USED),
    )


def _parse_properties(desc: bytes, found: dict[int, int]) -> None:
    pos = 0
    while pos + 8 <= len(desc):
        ptype, size = struct.unpack_from("<II", desc, pos)
        if pos + 8 + size > len(desc):
            return
        if size == 4:
            found[ptype] = found.get(ptype, 0) | struct.unpack_from("<I", desc, pos + 8)[0]
        pos += 8 + ((size + 7) & ~7)


def read_properties(image: elf.ElfFile) -> Properties:
    section = image.section(".note.gnu.property")
    if section is not None and section.type == elf.SHT_NOTE:
        try:
            return _parse_notes(image.section_data(section))
        except elf.ElfError:
            return Properties()
    for segment in image.segments:
        if segment.type == PT_GNU_PROPERTY and segment.filesz:
            try:
                return _parse_notes(image.bytes_at(segment.offset, segment.filesz, "property note"))
            except elf.ElfError:
                return Properties()
    return Properties()
