"""The shape of a program as its ELF metadata describes it.

Functions (from ``.symtab``, else ``.dynsym``, plus ``.eh_frame`` FDEs for
stripped code, PLT stubs, and the gaps between them), entry points, ifunc
resolvers, function pointers stored in data, and the GOT slots that name
external symbols. No code is decoded here.
"""

from __future__ import annotations

import array
import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from cpuguard.scan import elf
from cpuguard.scan.ehframe import function_ranges

# Where a function's boundaries came from.
SYMBOL = "symbol"
FDE = "fde"
PLT = "plt"
GAP = "gap"

_PLT_SECTIONS = (".plt", ".plt.sec", ".plt.got", ".iplt")
_ARRAYS = (".init_array", ".fini_array", ".preinit_array")
_NAMED_RELOCATIONS = (elf.R_X86_64_GLOB_DAT, elf.R_X86_64_JUMP_SLOT, elf.R_X86_64_64)


@dataclass(frozen=True)
class Function:
    start: int
    size: int
    name: str
    origin: str  # SYMBOL, FDE, PLT or GAP
    offset: int  # file offset of ``start``

    @property
    def end(self) -> int:
        return self.start + self.size


@dataclass
class Program:
    """Everything the classifier needs from ELF metadata, with plain types."""

    kind: str  # executable | pie-executable | shared-object
    functions: list[Function]
    entry: int
    exported: set[int] = field(default_factory=set)  # starts of exported functions
    data_pointers: set[int] = field(default_factory=set)  # function starts stored in data
    resolvers: dict[int, str] = field(default_factory=dict)  # ifunc resolver -> ifunc name
    got_names: dict[int, str] = field(default_factory=dict)  # GOT slot -> symbol name
    irelative_slots: dict[int, int] = field(default_factory=dict)  # GOT slot -> resolver
    symbols: dict[str, tuple[int, int]] = field(default_factory=dict)  # name -> (addr, size)
    needed: list[str] = field(default_factory=list)
    runpath: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    code_bytes: int = 0
    writable: list[tuple[int, int]] = field(default_factory=list)  # writable data ranges

    def __post_init__(self) -> None:
        self.starts = [f.start for f in self.functions]

    def containing(self, address: int) -> int | None:
        """Index of the function containing ``address``."""
        i = bisect.bisect_right(self.starts, address) - 1
        if i >= 0 and address < self.functions[i].end:
            return i
        return None


def _symbol_functions(
    image: elf.ElfFile,
) -> tuple[dict[int, tuple[str, int, int]], dict[str, tuple[int, int]], set[int], dict[int, str]]:
    """``(start -> (name, size, rank), name -> (addr, size), exported starts, ifunc -> name)``."""
    found: dict[int, tuple[str, int, int]] = {}
    named: dict[str, tuple[int, int]] = {}
    exported: set[int] = set()
    ifuncs: dict[int, str] = {}
    tables = [s for s in image.sections if s.type in (elf.SHT_SYMTAB, elf.SHT_DYNSYM)]
    for table in tables:
        dynamic = table.type == elf.SHT_DYNSYM
        for sym in image.symbols(table):
            if not sym.defined or sym.shndx >= elf.SHN_LORESERVE or not sym.name:
                continue
            if sym.type == elf.STT_OBJECT:
                named.setdefault(sym.name, (sym.value, sym.size))
                continue
            if sym.type not in (elf.STT_FUNC, elf.STT_GNU_IFUNC):
                continue
            named.setdefault(sym.name, (sym.value, sym.size))
            if sym.type == elf.STT_GNU_IFUNC:
                ifuncs[sym.value] = sym.name
            if dynamic and sym.bind in (1, 2) and sym.visibility in (0, 3):
                exported.add(sym.value)
            # Prefer .symtab over .dynsym, global over local, sized over unsized.
            rank = (0 if dynamic else 2) + (1 if sym.bind in (1, 2) else 0) + (4 if sym.size else 0)
            old = found.get(sym.value)
            if old is None or rank > old[2]:
                found[sym.value] = (sym.name, sym.size, rank)
    return found, named, exported, ifuncs


def _relocations(image: elf.ElfFile, program: Program, starts: set[int]) -> None:
    dynsym = next((s for s in image.sections if s.type == elf.SHT_DYNSYM), None)
    names: list[str] = []
    if dynsym is not None:
        names = [s.name for s in image.symbols(dynsym)]
    for table in image.sections:
        if table.type != elf.SHT_RELA or not table.flags & elf.SHF_ALLOC:
            continue
        for rel in image.relocations(table):
            if rel.type == elf.R_X86_64_IRELATIVE:
                program.irelative_slots[rel.offset] = rel.addend
                program.resolvers.setdefault(rel.addend, f"ifunc@{rel.offset:#x}")
            elif rel.type == elf.R_X86_64_RELATIVE:
                if rel.addend in starts:
                    program.data_pointers.add(rel.addend)
            elif rel.type in _NAMED_RELOCATIONS and 0 < rel.sym < len(names):
                program.got_names[rel.offset] = names[rel.sym]


def _words(image: elf.ElfFile, section: elf.Section) -> array.array[int]:
    """The section's contents as little-endian 64-bit words (none when it cannot be read)."""
    words = array.array("Q")
    try:
        raw = image.section_data(section)
    except elf.ElfError:
        return words
    words.frombytes(raw[: len(raw) - len(raw) % 8])
    return words


def _absolute_pointers(image: elf.ElfFile, starts: set[int]) -> set[int]:
    """Function addresses stored as plain 64-bit values in data (non-PIE executables)."""
    found: set[int] = set()
    for section in image.sections:
        if (
            section.type != elf.SHT_PROGBITS
            or not section.flags & elf.SHF_ALLOC
            or section.flags & elf.SHF_EXECINSTR
            or section.size < 8
        ):
            continue
        found |= starts.intersection(_words(image, section))
    return found


def _array_entries(image: elf.ElfFile) -> set[int]:
    found: set[int] = set()
    for name in _ARRAYS:
        section = image.section(name)
        if section is None or section.type == elf.SHT_NOBITS:
            continue
        found.update(w for w in _words(image, section) if w not in (0, 0xFFFFFFFFFFFFFFFF))
    return found


def _ranges_in(
    section: elf.Section, candidates: Iterable[tuple[int, int, str, str]]
) -> list[tuple[int, int, str, str]]:
    """Sorted, non-overlapping ``(start, end, name, origin)`` inside ``section``; gaps filled."""
    inside = sorted(
        (max(s, section.addr), min(e, section.end), n, o)
        for s, e, n, o in candidates
        if section.addr <= s < section.end and e > s
    )
    result: list[tuple[int, int, str, str]] = []
    cursor = section.addr
    for i, (start, end, name, origin) in enumerate(inside):
        if start < cursor:
            continue  # an alias or a range nested in the previous one
        if i + 1 < len(inside):
            end = min(end, max(inside[i + 1][0], start + 1))
        if start > cursor:
            result.append((cursor, start, "", GAP))
        result.append((start, end, name, origin))
        cursor = end
    if cursor < section.end:
        result.append((cursor, section.end, "", GAP))
    return result


def _plt_stubs(section: elf.Section) -> list[tuple[int, int, str, str]]:
    step = section.entsize if 8 <= section.entsize <= 64 else 16
    return [(a, min(a + step, section.end), "", PLT) for a in range(section.addr, section.end, step)]


def read_program(image: elf.ElfFile) -> Program:
    symbols, named, exported, ifuncs = _symbol_functions(image)
    fdes: list[tuple[int, int]] = []
    problems: list[str] = []
    eh = image.section(".eh_frame")
    if eh is not None and eh.type != elf.SHT_NOBITS:
        try:
            fdes = function_ranges(image.section_data(eh), eh.addr)
        except elf.ElfError as exc:
            problems.append(str(exc))
    candidates: list[tuple[int, int, str, str]] = []
    sized = {start for start, (_, size, _) in symbols.items() if size}
    for start, (name, size, _) in symbols.items():
        if size:
            candidates.append((start, start + size, name, SYMBOL))
    for start, size in fdes:
        if start not in sized:
            name = symbols[start][0] if start in symbols else ""
            candidates.append((start, start + size, name, SYMBOL if name else FDE))
    known_starts = {c[0] for c in candidates}
    for start, (name, _, _) in symbols.items():
        if start not in known_starts:
            candidates.append((start, start + 1, name, SYMBOL))  # end fixed by the next start

    functions: list[Function] = []
    code_bytes = 0
    for section in image.executable_sections():
        if section.offset + section.size > image.size:
            problems.append(
                f"section {section.name} ({section.size:#x} bytes at {section.offset:#x})"
                " lies past the end of the file; not scanned"
            )
            continue
        code_bytes += section.size
        if section.name in _PLT_SECTIONS:
            ranges = _plt_stubs(section)
        else:
            ranges = _ranges_in(section, candidates)
            ranges = _stretch_unsized(ranges)
        for start, end, name, origin in ranges:
            if end <= start:
                continue
            label = name or _label(section, start, end, origin)
            offset = section.offset + start - section.addr
            functions.append(Function(start, end - start, label, origin, offset))
    functions.sort(key=lambda f: f.start)
    program = Program(image.kind, functions, image.entry, symbols=named, code_bytes=code_bytes)
    starts = set(program.starts)
    program.exported = exported & starts
    for address, name in ifuncs.items():
        program.resolvers[address] = name
    _relocations(image, program, starts)
    program.data_pointers |= _array_entries(image) & starts
    if image.type == elf.ET_EXEC:
        program.data_pointers |= _absolute_pointers(image, starts)
    program.writable = [
        (s.addr, s.end) for s in image.sections if s.flags & elf.SHF_WRITE and s.flags & elf.SHF_ALLOC and s.size
    ]
    program.needed, program.runpath = image.dynamic_strings()
    program.problems = problems
    return program


def _label(section: elf.Section, start: int, end: int, origin: str) -> str:
    if origin == GAP and start == section.addr and end == section.end:
        return section.name or f"section@{start:#x}"
    if origin == GAP:
        return f"{section.name}@{start:#x}"
    return f"fn@{start:#x}"


def _stretch_unsized(
    ranges: list[tuple[int, int, str, str]],
) -> list[tuple[int, int, str, str]]:
    """A symbol without a size runs until the next known function (gap merged in)."""
    result: list[tuple[int, int, str, str]] = []
    for item in ranges:
        end, origin = item[1], item[3]
        if result and origin == GAP:
            prev = result[-1]
            if prev[3] == SYMBOL and prev[1] - prev[0] == 1:
                result[-1] = (prev[0], end, prev[2], prev[3])
                continue
        result.append(item)
    return result
