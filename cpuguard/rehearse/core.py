"""The faulting instruction of a SIGSEGV or SIGBUS, from the core qemu-user writes (pure).

For SIGSEGV and SIGBUS, ``si_addr`` in QEMU's log is the memory address the
program touched, not where it was. QEMU writes the guest's core
(``qemu_PROGRAM_DATE-PID.core`` in the program's working directory, when
RLIMIT_CORE allows; linux-user/elfload.c ``elf_core_dump``) with one
``NT_PRSTATUS`` note per thread, the crashing thread's first. Its register set
is Linux's x86-64 ``user_regs_struct`` (``rip`` is the 17th of 27 registers)
after ``elf_prstatus``' 112 bytes of signal, process and time fields.

The core lies in a directory the sandboxed program can write to: it is read as
untrusted input (bounded, every offset checked), and believed only when its
signal is the one QEMU's log reports.
"""

from __future__ import annotations

import struct

ELF_MAGIC = b"\x7fELF"
ET_CORE = 4
PT_NOTE = 4
NT_PRSTATUS = 1
#: Offsets inside an x86-64 NT_PRSTATUS descriptor (Linux include/uapi/linux/elfcore.h).
PR_CURSIG = 12
PR_REG = 112
RIP_INDEX = 16
PRSTATUS_SIZE = PR_REG + 27 * 8
#: Program headers looked at, notes read (the notes come right after the headers).
MAX_HEADERS = 65536
MAX_NOTES = 4096


def faulting_pc(data: bytes, signal_number: int) -> int | None:
    """``rip`` of the first thread whose current signal is ``signal_number``, or None when
    ``data`` is not an x86-64 ELF core holding one."""
    if len(data) < 64 or not data.startswith(ELF_MAGIC) or data[4] != 2 or data[5] != 1:
        return None  # not ELF64 little-endian
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_type != ET_CORE or e_machine != 62:  # EM_X86_64
        return None
    (phoff,) = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    if phentsize < 56 or phnum > MAX_HEADERS:
        return None
    for index in range(phnum):
        at = phoff + index * phentsize
        if at + 56 > len(data):
            return None
        p_type, _flags, offset, _vaddr, _paddr, filesz = struct.unpack_from("<IIQQQQ", data, at)
        if p_type == PT_NOTE:
            found = _in_notes(data, offset, min(offset + filesz, len(data)), signal_number)
            if found is not None:
                return found
    return None


def _in_notes(data: bytes, start: int, end: int, signal_number: int) -> int | None:
    position = start
    for _ in range(MAX_NOTES):
        if position + 12 > end:
            return None
        namesz, descsz, kind = struct.unpack_from("<III", data, position)
        desc = position + 12 + ((namesz + 3) & ~3)
        if desc + descsz > end:
            return None
        name = data[position + 12 : position + 12 + namesz].rstrip(b"\0")
        if kind == NT_PRSTATUS and name == b"CORE" and descsz >= PRSTATUS_SIZE:
            (cursig,) = struct.unpack_from("<h", data, desc + PR_CURSIG)
            if cursig == signal_number:
                (rip,) = struct.unpack_from("<Q", data, desc + PR_REG + RIP_INDEX * 8)
                return int(rip)
        position = desc + ((descsz + 3) & ~3)
    return None
