"""The outcome of a rehearsal from how the program ended (pure).

Only an instruction the target host lacks is blamed on the CPU. An
instruction the target has but QEMU's TCG cannot run (AVX-512, AMX) proves
nothing either way; every other failure is the program's own.
"""

from __future__ import annotations

from cpuguard.rehearse.records import EmulatedCpu, Fault, RehearsalOutcome, RunStatus


def _said(names: tuple[str, ...] | list[str]) -> str:
    return ", ".join(names)


def decide(
    status: RunStatus, fault: Fault | None, expected_status: int, cpu: EmulatedCpu, host: str
) -> tuple[RehearsalOutcome, str]:
    """``(outcome, one-line reason)``."""
    if status.timed_out:
        return RehearsalOutcome.FAILED_OTHER, f"did not finish within {status.duration:.0f} s (stopped)"
    if fault is not None and fault.instruction is not None:
        beyond = tuple(n for n in fault.needs if n in cpu.not_emulated)
        if fault.missing:
            return (
                RehearsalOutcome.FAILED_CPU,
                f"{fault.signal} at {fault.where()}: `{fault.instruction}` needs {_said(fault.missing)},"
                f" which {host} lacks",
            )
        if beyond:
            return (
                RehearsalOutcome.CANNOT_REHEARSE,
                f"{fault.where()} runs `{fault.instruction}` ({_said(beyond)}): {host} has it,"
                " QEMU's TCG cannot emulate it",
            )
        own = "an abort or a trap" if fault.signal == "SIGILL" else "a bad memory access"
        if fault.data_address is not None and fault.signal != "SIGILL":
            own += f" at {fault.data_address:#x}"
        return (
            RehearsalOutcome.FAILED_OTHER,
            f"{fault.signal} at {fault.where()} on `{fault.instruction}`, which {host} has:"
            f" the program's own fault ({own}), not the CPU's",
        )
    if status.signal is not None:
        where = f" at {fault.where()}" if fault is not None and fault.vaddr is not None else ""
        return RehearsalOutcome.FAILED_OTHER, f"killed by signal {status.signal}{where}"
    if status.exit_status != expected_status:
        return RehearsalOutcome.FAILED_OTHER, f"exited with status {status.exit_status}, expected {expected_status}"
    return RehearsalOutcome.PASSED, f"exited with status {status.exit_status} as expected"
