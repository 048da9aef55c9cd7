"""Name the instruction a rehearsed program died on: file, function, instruction, features.

The address comes from QEMU's log (:mod:`.qemulog`); the file is the guest's own
copy in the sysroot; the function comes from its symbols (the scanner's
:func:`~cpuguard.scan.program.read_program`), the instruction is decoded with
iced-x86 and its features come from the scanner's instruction table
(:mod:`cpuguard.scan.features`), so a rehearsal and a scan name things alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from iced_x86 import Decoder, Formatter, FormatterSyntax

from cpuguard.rehearse.qemulog import QemuLog
from cpuguard.rehearse.records import Fault
from cpuguard.scan import elf
from cpuguard.scan.features import default_feature_table
from cpuguard.scan.program import read_program

#: Signals a missing instruction can raise: #UD is SIGILL; some are reported as SIGSEGV or SIGBUS
#: (a #GP, say), whose si_addr is a data address: their instruction comes from the core.
FAULT_SIGNALS = ("SIGILL", "SIGSEGV", "SIGBUS")
#: The longest x86 instruction.
MAX_INSTRUCTION = 15

ReadGuestFile = Callable[[str], bytes | None]


def _file_offset_to_vaddr(image: elf.ElfFile, offset: int) -> int | None:
    for segment in image.segments:
        if segment.type == elf.PT_LOAD and segment.offset <= offset < segment.offset + segment.filesz:
            return segment.vaddr + offset - segment.offset
    return None


def _main_vaddr(image: elf.ElfFile, start_code: int, address: int) -> int | None:
    code = [s.vaddr for s in image.segments if s.type == elf.PT_LOAD and s.flags & 1]  # PF_X
    if not code:
        return None
    vaddr = address - (start_code - min(code))
    inside = any(s.type == elf.PT_LOAD and s.vaddr <= vaddr < s.vaddr + s.memsz for s in image.segments)
    return vaddr if inside else None


def _image(read: ReadGuestFile, path: str) -> elf.ElfFile | None:
    data = read(path)
    if data is None:
        return None
    try:
        return elf.ElfFile(elf.BytesSource(data))
    except elf.ElfError:
        return None


def decode_at(image: elf.ElfFile, vaddr: int) -> tuple[str, int] | None:
    """``(GNU-syntax text, iced code)`` of the instruction at ``vaddr``, None when it cannot be read."""
    for size in range(MAX_INSTRUCTION, 0, -1):
        data = image.read_at_vaddr(vaddr, size)
        if data is not None:
            instruction = next(iter(Decoder(64, data, ip=vaddr)))
            if instruction.len == 0 or instruction.is_invalid:
                return None
            return Formatter(FormatterSyntax.GAS).format(instruction), int(instruction.code)
    return None


def locate(
    log: QemuLog, program: str, read: ReadGuestFile, available: frozenset[str], core_pc: int | None = None
) -> Fault | None:
    """The fault that ended the program, as far as it can be named; None when no fault signal came.

    ``program`` is the guest path of the main program, ``read(path)`` reads a guest
    file as the program saw it, ``available`` the canonical features of the target.
    For SIGSEGV and SIGBUS, whose ``si_addr`` is the data address, ``core_pc`` is the
    faulting instruction's address from the guest's core (:mod:`.core`), if there is one.
    """
    last = next((s for s in reversed(log.signals) if s[0] in FAULT_SIGNALS), None)
    if last is None:
        return None
    name, address = last
    if name != "SIGILL":
        if core_pc is None:
            return Fault(name, address, data_address=address)  # where it was is unknown
        located = _at(log, program, read, available, name, core_pc)
        return replace(located, data_address=address)
    return _at(log, program, read, available, name, address)


def _at(log: QemuLog, program: str, read: ReadGuestFile, available: frozenset[str], name: str, address: int) -> Fault:
    """The fault ``name`` at the instruction at ``address``: file, function, instruction, features."""
    mapping = log.mapping_at(address)
    path = mapping.path if mapping is not None else program
    image = _image(read, path)
    if image is None:
        return Fault(name, address, path if mapping is not None else None)
    if mapping is not None:
        vaddr = _file_offset_to_vaddr(image, address - mapping.start + mapping.offset)
    else:
        vaddr = _main_vaddr(image, log.start_code, address) if log.start_code is not None else None
    if vaddr is None:
        return Fault(name, address, path if mapping is not None else None)
    function = offset = None
    shape = read_program(image)
    index = shape.containing(vaddr)
    if index is not None:
        function = shape.functions[index].name
        offset = vaddr - shape.functions[index].start
    decoded = decode_at(image, vaddr)
    if decoded is None:
        return Fault(name, address, path, vaddr, function, offset)
    text, code = decoded
    needs = default_feature_table()[code].features
    missing = tuple(sorted(set(needs) - available))
    return Fault(name, address, path, vaddr, function, offset, text, tuple(needs), missing)
