"""A small, defensive reader for 64-bit little-endian x86 ELF files.

It reads only what the scanner needs (headers, sections, symbols,
relocations, the dynamic section) from a buffer (normally an ``mmap``), and
checks every offset and size against the file so that a truncated or
hostile file raises :class:`ElfError` with a one-line reason instead of an
``IndexError`` or a huge allocation. Layouts follow the System V gABI
(https://refspecs.linuxfoundation.org/elf/gabi4+/ch4.eheader.html) and the
x86-64 psABI for relocation numbers.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

ELF_MAGIC = b"\x7fELF"
ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_X86_64 = 62

ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4

SHT_PROGBITS = 1
SHT_SYMTAB = 2
SHT_RELA = 4
SHT_DYNAMIC = 6
SHT_NOTE = 7
SHT_NOBITS = 8
SHT_DYNSYM = 11
SHF_WRITE = 0x1
SHF_ALLOC = 0x2
SHF_EXECINSTR = 0x4

PT_LOAD = 1
PT_INTERP = 3

STT_OBJECT = 1
STT_FUNC = 2
STT_GNU_IFUNC = 10
SHN_UNDEF = 0
SHN_LORESERVE = 0xFF00

R_X86_64_64 = 1
R_X86_64_GLOB_DAT = 6
R_X86_64_JUMP_SLOT = 7
R_X86_64_RELATIVE = 8
R_X86_64_IRELATIVE = 37

DT_NULL = 0
DT_NEEDED = 1
DT_STRTAB = 5
DT_SONAME = 14
DT_RPATH = 15
DT_RUNPATH = 29
DT_FLAGS_1 = 0x6FFFFFFB
DF_1_PIE = 0x08000000

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PHDR = struct.Struct("<IIQQQQQQ")
_SYM = struct.Struct("<IBBHQQ")
_RELA = struct.Struct("<QQq")
_DYN = struct.Struct("<qQ")

# A few machine numbers, only to say what a skipped file is built for.
MACHINE_NAMES = {
    3: "i386",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "s390",
    40: "ARM",
    62: "x86-64",
    183: "AArch64",
    243: "RISC-V",
    258: "LoongArch",
}


class ElfError(Exception):
    """The file is not an ELF file cpuguard can read; ``str()`` is the reason."""


class NotElf(ElfError):
    """The file does not start with the ELF magic (skipped quietly)."""


class Unsupported(ElfError):
    """A valid ELF file of a kind the scanner does not handle (32-bit, not x86-64...)."""


@dataclass(frozen=True)
class Section:
    index: int
    name: str
    type: int
    flags: int
    addr: int
    offset: int
    size: int
    link: int
    entsize: int

    @property
    def executable(self) -> bool:
        return bool(self.flags & SHF_EXECINSTR) and self.type != SHT_NOBITS

    @property
    def end(self) -> int:
        return self.addr + self.size


@dataclass(frozen=True)
class Segment:
    type: int
    flags: int
    offset: int
    vaddr: int
    filesz: int
    memsz: int


@dataclass(frozen=True)
class Symbol:
    name: str
    type: int
    bind: int
    visibility: int
    shndx: int
    value: int
    size: int

    @property
    def defined(self) -> bool:
        return self.shndx != SHN_UNDEF


@dataclass(frozen=True)
class Rela:
    offset: int
    type: int
    sym: int
    addend: int


def sniff(head: bytes) -> None:
    """Raise unless ``head`` (the first 64 bytes or fewer) starts an x86-64 ELF64 file."""
    if not head.startswith(ELF_MAGIC):
        raise NotElf("not an ELF file")
    if len(head) < 20:
        raise ElfError(f"truncated ELF header ({len(head)} bytes)")
    if head[4] == ELFCLASS32:
        machine = struct.unpack_from("<H", head, 18)[0] if head[5] == ELFDATA2LSB else None
        what = MACHINE_NAMES.get(machine or -1, "32-bit")
        raise Unsupported(f"32-bit ELF ({what}); only 64-bit x86 code is scanned")
    if head[4] != ELFCLASS64:
        raise ElfError(f"bad ELF class byte {head[4]}")
    if head[5] != ELFDATA2LSB:
        raise Unsupported("big-endian ELF; only x86-64 code is scanned")
    machine = struct.unpack_from("<H", head, 18)[0]
    if machine != EM_X86_64:
        name = MACHINE_NAMES.get(machine, f"e_machine {machine}")
        raise Unsupported(f"ELF for {name}, not x86-64")


class Source(Protocol):
    """Random access to a file's bytes."""

    size: int

    def read(self, offset: int, size: int) -> bytes: ...


class BytesSource:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def read(self, offset: int, size: int) -> bytes:
        return self.data[offset : offset + size]


class FileSource:
    """Reads with ``pread`` so that memory use is bounded by the largest section.

    A file that shrinks while it is read gives short reads, which become an
    :class:`ElfError` rather than the ``SIGBUS`` a memory map would raise.
    """

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size

    def read(self, offset: int, size: int) -> bytes:
        data = os.pread(self.fd, size, offset)
        if len(data) != size:
            raise ElfError("the file changed while it was being read")
        return data


class ElfFile:
    """Parsed headers of one ELF64 x86-64 file read through ``source``."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self.size = source.size
        sniff(source.read(0, min(64, self.size)))
        if self.size < _EHDR.size:
            raise ElfError(f"truncated ELF header ({self.size} bytes)")
        self._strings: dict[int, bytes] = {}
        (_, self.type, _, _, self.entry, phoff, shoff, _, _, phentsize, phnum,
         shentsize, shnum, shstrndx) = _EHDR.unpack(source.read(0, _EHDR.size))  # fmt: skip
        if self.type in (ET_REL, ET_CORE):
            kind = "relocatable object" if self.type == ET_REL else "core dump"
            raise Unsupported(f"{kind}, not a program or library")
        if self.type not in (ET_EXEC, ET_DYN):
            raise Unsupported(f"unknown ELF type {self.type}")
        self.segments = self._segments(phoff, phentsize, phnum)
        self.sections = self._sections(shoff, shentsize, shnum, shstrndx)
        self._by_name = {s.name: s for s in reversed(self.sections)}

    # -- bounds-checked access -------------------------------------------------

    def _check(self, offset: int, size: int, what: str) -> None:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ElfError(
                f"{what} at offset {offset:#x} size {size:#x} lies past the end of the file ({self.size:#x} bytes)"
            )

    def bytes_at(self, offset: int, size: int, what: str) -> bytes:
        self._check(offset, size, what)
        return self.source.read(offset, size)

    def section_data(self, section: Section) -> bytes:
        if section.type == SHT_NOBITS:
            return b""
        return self.bytes_at(section.offset, section.size, f"section {section.name or '?'}")

    def cstring(self, table: Section, offset: int) -> str:
        if table.type == SHT_NOBITS or not 0 <= offset < table.size:
            return ""
        strings = self._strings.get(table.index)
        if strings is None:
            size = max(0, min(table.size, self.size - table.offset))
            strings = self._strings[table.index] = self.source.read(table.offset, size)
        end = strings.find(b"\0", offset)
        return strings[offset : end if end >= 0 else len(strings)].decode("utf-8", "replace")

    # -- headers ---------------------------------------------------------------

    def _segments(self, phoff: int, entsize: int, count: int) -> tuple[Segment, ...]:
        if count == 0:
            return ()
        if entsize != _PHDR.size:
            raise ElfError(f"unexpected program header size {entsize}")
        table = self.bytes_at(phoff, entsize * count, "program header table")
        result = []
        for i in range(count):
            p_type, p_flags, off, vaddr, _, filesz, memsz, _ = _PHDR.unpack_from(table, i * entsize)
            result.append(Segment(p_type, p_flags, off, vaddr, filesz, memsz))
        return tuple(result)

    def _sections(self, shoff: int, entsize: int, count: int, shstrndx: int) -> tuple[Section, ...]:
        if count == 0 or shoff == 0:
            return ()
        if entsize != _SHDR.size:
            raise ElfError(f"unexpected section header size {entsize}")
        table = self.bytes_at(shoff, entsize * count, "section header table")
        raw = [_SHDR.unpack_from(table, i * entsize) for i in range(count)]
        names: Section | None = None
        if 0 < shstrndx < count:
            n = raw[shstrndx]
            names = Section(shstrndx, ".shstrtab", n[1], n[2], n[3], n[4], n[5], n[6], n[9])
        result = []
        for i, (name, typ, flags, addr, off, size, link, _, _, ent) in enumerate(raw):
            label = self.cstring(names, name) if names is not None else ""
            result.append(Section(i, label, typ, flags, addr, off, size, link, ent))
        return tuple(result)

    # -- queries ---------------------------------------------------------------

    def section(self, name: str) -> Section | None:
        return self._by_name.get(name)

    @property
    def has_interp(self) -> bool:
        return any(s.type == PT_INTERP for s in self.segments)

    def executable_sections(self) -> list[Section]:
        return [s for s in self.sections if s.executable and s.flags & SHF_ALLOC and s.size]

    def symbols(self, table: Section) -> Iterator[Symbol]:
        """Symbols of a SYMTAB/DYNSYM section (entries past the file end are dropped)."""
        if table.entsize not in (0, _SYM.size) or table.type == SHT_NOBITS:
            return
        if not 0 <= table.link < len(self.sections):
            return
        strings = self.sections[table.link]
        size = min(table.size, max(0, self.size - table.offset))
        size -= size % _SYM.size
        if size <= 0:
            return
        view = self.bytes_at(table.offset, size, f"symbol table {table.name}")
        for name, info, other, shndx, value, sym_size in _SYM.iter_unpack(view):
            yield Symbol(
                self.cstring(strings, name) if name else "",
                info & 0xF,
                info >> 4,
                other & 0x3,
                shndx,
                value,
                sym_size,
            )

    def relocations(self, table: Section) -> Iterator[Rela]:
        if table.type != SHT_RELA or table.entsize not in (0, _RELA.size):
            return
        size = table.size - table.size % _RELA.size
        view = self.bytes_at(table.offset, size, f"relocation table {table.name}")
        for offset, info, addend in _RELA.iter_unpack(view):
            yield Rela(offset, info & 0xFFFFFFFF, info >> 32, addend)

    def dynamic(self) -> list[tuple[int, int]]:
        table = next((s for s in self.sections if s.type == SHT_DYNAMIC), None)
        if table is None:
            return []
        size = table.size - table.size % _DYN.size
        view = self.bytes_at(table.offset, size, "dynamic section")
        result = []
        for tag, value in _DYN.iter_unpack(view):
            if tag == DT_NULL:
                break
            result.append((tag, value))
        return result

    def dynamic_strings(self) -> tuple[list[str], list[str]]:
        """``(DT_NEEDED names, DT_RUNPATH/DT_RPATH entries)``."""
        table = next((s for s in self.sections if s.type == SHT_DYNAMIC), None)
        if table is None or not 0 <= table.link < len(self.sections):
            return [], []
        strings = self.sections[table.link]
        needed: list[str] = []
        paths: list[str] = []
        for tag, value in self.dynamic():
            if tag == DT_NEEDED:
                needed.append(self.cstring(strings, value))
            elif tag in (DT_RUNPATH, DT_RPATH):
                paths.extend(p for p in self.cstring(strings, value).split(":") if p)
        return needed, paths

    @property
    def soname(self) -> str | None:
        """``DT_SONAME``: the name every link to a shared library is loaded by, whatever the file is called."""
        table = next((s for s in self.sections if s.type == SHT_DYNAMIC), None)
        if table is None or not 0 <= table.link < len(self.sections):
            return None
        strings = self.sections[table.link]
        for tag, value in self.dynamic():
            if tag == DT_SONAME:
                return self.cstring(strings, value) or None
        return None

    @property
    def is_pie(self) -> bool:
        tags = dict(self.dynamic())
        if self.type != ET_DYN:
            return False
        return bool(tags.get(DT_FLAGS_1, 0) & DF_1_PIE) or (self.has_interp and DT_SONAME not in tags)

    @property
    def kind(self) -> str:
        if self.type == ET_EXEC:
            return "executable"
        return "pie-executable" if self.is_pie else "shared-object"

    def read_at_vaddr(self, vaddr: int, size: int) -> bytes | None:
        """File bytes backing virtual address ``vaddr`` (None when unmapped or BSS)."""
        for seg in self.segments:
            if seg.type == PT_LOAD and seg.vaddr <= vaddr and vaddr + size <= seg.vaddr + seg.filesz:
                offset = seg.offset + vaddr - seg.vaddr
                if offset + size <= self.size:
                    return self.source.read(offset, size)
        return None
