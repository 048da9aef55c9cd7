"""Plain records of a rehearsal: what ran, on which emulated CPU, and how it ended."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RehearsalOutcome(StrEnum):
    PASSED = "passed"  # the command behaved as expected
    FAILED_CPU = "failed-cpu"  # it executed an instruction the target CPU lacks
    FAILED_OTHER = "failed-other"  # it failed for another reason (never blamed on the CPU)
    CANNOT_REHEARSE = "cannot-rehearse"  # nothing could be proven (the reason says why)


@dataclass(frozen=True)
class RehearseEntry:
    """A command a VM's policy lists for rehearsals (``rehearse:`` entries)."""

    argv: tuple[str, ...]
    expect_status: int = 0
    timeout: float = 60.0
    files: tuple[str, ...] = ()  # more guest files to copy (modules loaded with dlopen)
    description: str = ""
    #: files made for the rehearsal (sandbox path under /.cpuguard, text): a workload default's
    #: own configuration, never a guest file
    generated: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class EmulatedCpu:
    """The ``-cpu`` option that copies a host's features, and what it cannot copy."""

    option: str
    offered: frozenset[str]  # canonical names the emulated CPU has
    unknown_to_qemu: tuple[str, ...]  # the host's features qemu-user has no name for
    not_emulated: tuple[str, ...] = ()  # the host's features TCG cannot emulate (AVX-512, AMX...)


@dataclass(frozen=True)
class RunStatus:
    """How the sandboxed process ended."""

    exit_status: int | None  # the program's exit status, None when killed by a signal
    signal: str | None  # the signal that ended the program (SIGILL...)
    timed_out: bool
    duration: float  # seconds
    stdout_tail: str = ""
    stderr_tail: str = ""


@dataclass(frozen=True)
class Fault:
    """Where the program died, read from QEMU's log and the guest's own ELF files."""

    signal: str  # SIGILL, SIGSEGV, SIGBUS
    address: int  # the faulting instruction's address in the emulated process (SIGSEGV/SIGBUS
    # without a core: the data address, the instruction unknown)
    object_path: str | None = None  # the guest file holding it
    vaddr: int | None = None  # the address inside that file
    function: str | None = None  # from the file's symbols
    function_offset: int | None = None
    instruction: str | None = None  # decoded with iced-x86 (GNU syntax)
    needs: tuple[str, ...] = ()  # canonical features the instruction needs
    missing: tuple[str, ...] = ()  # of those, what the target host lacks
    data_address: int | None = None  # SIGSEGV/SIGBUS: the memory address touched (si_addr)

    def where(self) -> str:
        place = self.function or (f"{self.vaddr:#x}" if self.vaddr is not None else f"{self.address:#x}")
        if self.function and self.function_offset:
            place += f"+{self.function_offset}"
        return f"{place} in {self.object_path}" if self.object_path else place


@dataclass(frozen=True)
class Rehearsal:
    """One rehearsal: the answer ``cpuguard rehearse`` prints."""

    vm: str
    host: str
    command: tuple[str, ...]
    outcome: RehearsalOutcome
    reason: str
    cpu: str  # the -cpu option
    expected_status: int = 0
    time_limit: float = 0.0
    exit_status: int | None = None
    signal: str | None = None
    fault: Fault | None = None
    duration: float = 0.0
    files: tuple[str, ...] = ()  # guest paths copied into the sysroot
    notes: tuple[str, ...] = ()  # the limits of what was proven
    stdout_tail: str = ""
    stderr_tail: str = ""
