"""Read qemu-user's log (``-strace -d page -D FILE``): where files were mapped, which signals came (pure).

QEMU 7.2 writes, to the ``-D`` file: the main program's layout once
(``start_code 0x...``, linux-user/elfload.c ``load_elf_binary`` under ``-d
page``), every system call with its result (``-strace``: ``openat`` gives the
descriptor of a library, ``mmap`` where the loader put it) and every signal
delivered (``--- SIGILL {si_signo=SIGILL, si_code=2, si_addr=0x...} ---``).
For SIGILL, ``si_addr`` is the address of the faulting instruction
(sigaction(2)); for SIGSEGV and SIGBUS it is the memory address touched.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_START_CODE = re.compile(r"^start_code\s+(0x[0-9a-f]+)")
_OPEN = re.compile(r'^\d+ (?:openat\(-?\d+,|open\()"((?:[^"\\]|\\.)*)",.*\) = (\d+)$')
_MMAP = re.compile(r"^\d+ mmap\((\w+),(\d+),[^,]*,[^,]*,(-?\d+),(\w+)\)(?: = (0x[0-9a-f]+)$)?")
#: ``-d page`` prints the new page table between an mmap call and its result.
_RESULT = re.compile(r"^ = (0x[0-9a-f]+)$")
_CLOSE = re.compile(r"^\d+ close\((\d+)\) = 0$")
_SIGNAL = re.compile(r"^--- (SIG\w+) \{.*si_addr=(0x[0-9a-f]+|\(nil\)|NULL)")


@dataclass(frozen=True)
class Mapping:
    start: int
    length: int
    path: str  # the path the program opened ("" for anonymous memory)
    offset: int  # file offset of ``start``


@dataclass
class QemuLog:
    start_code: int | None = None  # where the main program's code was loaded
    mappings: list[Mapping] = field(default_factory=list)
    signals: list[tuple[str, int]] = field(default_factory=list)  # (SIGILL, si_addr) in order

    def mapping_at(self, address: int) -> Mapping | None:
        """The latest file mapping holding ``address`` (None when that is anonymous memory)."""
        for mapping in reversed(self.mappings):
            if mapping.start <= address < mapping.start + mapping.length:
                return mapping if mapping.path else None
        return None


def _int(text: str) -> int:
    return int(text, 16) if text.startswith("0x") else int(text) if text.lstrip("-").isdigit() else 0


def parse_log(lines: Iterable[str]) -> QemuLog:
    log = QemuLog()
    fds: dict[int, str] = {}
    pending: tuple[int, str, int] | None = None  # an mmap whose result is still to come
    for raw in lines:
        line = raw.rstrip("\n")
        if log.start_code is None and (match := _START_CODE.match(line)):
            log.start_code = int(match.group(1), 16)
        elif match := _OPEN.match(line):
            fds[int(match.group(2))] = match.group(1)
        elif match := _MMAP.match(line):
            # anonymous memory too: MAP_FIXED over a library's reservation replaces that part of it
            pending = (int(match.group(2)), fds.get(int(match.group(3)), ""), _int(match.group(4)))
            if match.group(5):
                log.mappings.append(Mapping(int(match.group(5), 16), *pending))
                pending = None
        elif pending is not None and (match := _RESULT.match(line)):
            log.mappings.append(Mapping(int(match.group(1), 16), *pending))
            pending = None
        elif match := _CLOSE.match(line):
            fds.pop(int(match.group(1)), None)
        elif match := _SIGNAL.match(line):
            address = match.group(2)
            log.signals.append((match.group(1), int(address, 16) if address.startswith("0x") else 0))
    return log
