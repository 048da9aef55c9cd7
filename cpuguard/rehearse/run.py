"""Run one rehearsal: build the sysroot, run the command in the sandbox, read the log, decide."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cpuguard.errors import MissingDependency
from cpuguard.records import HostFacts
from cpuguard.rehearse import sandbox, sysroot
from cpuguard.rehearse.cpu import beyond_tcg, emulated_cpu, recognized_flags, without_unsupported
from cpuguard.rehearse.decide import decide
from cpuguard.rehearse.fault import locate
from cpuguard.rehearse.guestroot import GuestRoot
from cpuguard.rehearse.qemulog import parse_log
from cpuguard.rehearse.records import EmulatedCpu, Rehearsal, RehearsalOutcome, RunStatus

#: Characters of the program's output kept for the answer.
TAIL_CHARS = 2000
_TCG_WARNING = re.compile(r"qemu-x86_64: warning: TCG doesn't support requested feature: ")
TOOLS = {"qemu-x86_64": "qemu-user", "bwrap": "bubblewrap", "prlimit": "util-linux", "setpriv": "util-linux"}


@dataclass(frozen=True)
class Tools:
    qemu: str
    bwrap: str
    prlimit: str
    setpriv: str


def find_tools(which: Callable[[str], str | None] = shutil.which) -> Tools:
    found = {}
    for name, package in TOOLS.items():
        path = which(name)
        if path is None:
            raise MissingDependency(f"{name} is not installed (Debian package {package}): cannot rehearse")
        found[name] = path
    return Tools(found["qemu-x86_64"], found["bwrap"], found["prlimit"], found["setpriv"])


def target_cpu(facts: HostFacts, qemu: str) -> EmulatedCpu:
    """The CPU of ``facts`` as this qemu-user offers it (asks qemu what it knows and what TCG lacks)."""
    from cpuguard.cpumap import load_cpu_map_data
    from cpuguard.vocabulary import load_vocabulary

    vocabulary = load_vocabulary()
    data = load_cpu_map_data()
    model = data.models.get(facts.libvirt_model or "")
    signature = model.signatures[0] if model is not None and model.signatures else None
    helped = subprocess.run([qemu, "-cpu", "help"], capture_output=True, text=True, timeout=60, check=False)
    cpu = emulated_cpu(facts, recognized_flags(helped.stdout), vocabulary.libvirt_name, data.vendors, signature)
    # a trusted program of this machine, only to hear QEMU's warnings about the CPU
    probe = subprocess.run([qemu, "-cpu", cpu.option, qemu, "-version"], capture_output=True, text=True,
                           timeout=60, check=False)  # fmt: skip
    return without_unsupported(cpu, probe.stderr, vocabulary.try_canonical)


def _qemu_files() -> sysroot.Closure:
    """This machine's qemu-user with its libraries and loader."""
    qemu = shutil.which("qemu-x86_64") or "/usr/bin/qemu-x86_64"
    return sysroot.closure(GuestRoot(Path("/")), os.path.realpath(qemu), extras=False)


def _install_qemu(target: Path) -> None:
    found = _qemu_files()
    lib = target / sandbox.QEMU_LIBS.lstrip("/")
    lib.mkdir(parents=True, exist_ok=True)
    for opened, real in found.files.items():
        if real == os.path.realpath(shutil.which("qemu-x86_64") or ""):
            destination = target / sandbox.QEMU_BINARY.lstrip("/")
        elif opened == found.interpreter:
            destination = target / sandbox.QEMU_LOADER.lstrip("/")
        else:
            destination = lib / os.path.basename(opened)
        shutil.copyfile(real, destination)
        os.chmod(destination, 0o755)  # noqa: S103 - the sandbox runs as nobody


def _tail(data: bytes, *, qemu_noise: bool = False) -> str:
    text = data.decode("utf-8", "replace")
    if qemu_noise:  # QEMU's warning per feature TCG lacks: said once, in the notes
        text = "".join(line for line in text.splitlines(keepends=True) if not _TCG_WARNING.match(line))
    return text[-TAIL_CHARS:]


def _execute(argv: list[str], seconds: float) -> tuple[int, bool, float, bytes, bytes]:
    started = time.monotonic()
    process = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = process.communicate(timeout=seconds)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)  # bwrap's --die-with-parent takes the sandbox along
        out, err = process.communicate()
        timed_out = True
    return process.returncode, timed_out, time.monotonic() - started, out, err


def _core_pc(out: Path, signal_name: str) -> int | None:
    """The faulting instruction's address from the guest core QEMU left in ``out``, if any."""
    from cpuguard.rehearse.core import faulting_pc

    try:
        number = int(signal.Signals[signal_name])
    except KeyError:
        return None
    for core in sorted(out.glob("qemu_*.core")):
        try:
            with open(core, "rb") as handle:
                found = faulting_pc(handle.read(sandbox.CORE_BYTES), number)
        except OSError:
            continue
        if found is not None:
            return found
    return None


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def rehearse_root(
    root: Path,
    command: Sequence[str],
    facts: HostFacts,
    *,
    vm: str,
    expected_status: int = 0,
    limits: sandbox.Limits | None = None,
    extra_files: Sequence[str] = (),
    generated: Sequence[tuple[str, str]] = (),
    tools: Tools | None = None,
    work_dir: Path | None = None,
) -> Rehearsal:
    """Run ``command`` (argv[0] a program inside the extracted guest root ``root``) on ``facts``' CPU."""
    tools = tools or find_tools()
    limits = limits or sandbox.Limits()
    guest = GuestRoot(root)
    program = sysroot.find_program(guest, command[0])
    # arguments naming guest files (a script for its interpreter, a configuration file) come along
    named = [arg for arg in command[1:] if arg.startswith("/") and guest.exists(arg)]
    found = sysroot.closure(guest, program, [*extra_files, *named])
    cpu = target_cpu(facts, tools.qemu)
    host = facts.name or facts.source
    notes = []
    if beyond := beyond_tcg(facts.flags):
        notes.append(
            f"{host} has {', '.join(beyond)}: QEMU's TCG emulates up to AVX2, so code needing these"
            " can only be shown to fail below them, never to pass"
        )
    if cpu.not_emulated:
        notes.append(f"features of {host} that QEMU's TCG cannot emulate, left out: {', '.join(cpu.not_emulated)}")
    if cpu.unknown_to_qemu:
        notes.append(f"features qemu-user has no name for, left out: {', '.join(cpu.unknown_to_qemu)}")
    notes.append("a pass proves only the code paths this command ran")

    def answer(outcome: RehearsalOutcome, reason: str, **more: object) -> Rehearsal:
        return Rehearsal(
            vm, host, (program, *command[1:]), outcome, reason, cpu.option, expected_status, limits.seconds,
            files=tuple(sorted(found.files)), notes=tuple(notes), **more,  # type: ignore[arg-type]
        )  # fmt: skip

    if found.missing:
        return answer(RehearsalOutcome.CANNOT_REHEARSE, f"not in the guest's root: {', '.join(found.missing[:5])}")
    guest_env = {"LD_LIBRARY_PATH": found.library_path()} if found.library_path() else {}
    with tempfile.TemporaryDirectory(prefix="cpuguard-rehearse-", dir=work_dir) as temp:
        base = Path(temp)
        os.chmod(base, 0o755)  # noqa: S103 - nobody must reach the sysroot to mount it
        tree, out = base / "sysroot", base / "out"
        tree.mkdir()
        sysroot.build(guest, found, tree)
        _install_qemu(tree)
        sysroot.write_generated(tree, generated)
        (tree / sandbox.OUT_DIR.lstrip("/")).mkdir(parents=True, exist_ok=True)
        for directory in ("tmp", "proc", "dev"):
            (tree / directory).mkdir(exist_ok=True)
        out.mkdir()
        os.chmod(out, 0o777)  # noqa: S103 - the sandbox user writes QEMU's log here
        argv = sandbox.sandbox_argv(
            str(tree), str(out), sandbox.qemu_args(cpu.option, [program, *command[1:]], guest_env), limits,
            as_root=os.geteuid() == 0, bwrap=tools.bwrap, prlimit=tools.prlimit, setpriv=tools.setpriv,
        )  # fmt: skip
        code, timed_out, duration, stdout, stderr = _execute(argv, limits.seconds)
        log_path = out / "qemu.log"
        if not log_path.exists() and not timed_out:  # QEMU never started: the sandbox could not be made
            said = next((line for line in _tail(stderr).splitlines() if line.strip()), f"exit status {code}")
            return answer(RehearsalOutcome.CANNOT_REHEARSE, f"the sandbox did not start: {said}")
        with open(log_path, encoding="utf-8", errors="replace") if log_path.exists() else open(os.devnull) as log:
            parsed = parse_log(log)
        last = parsed.signals[-1][0] if parsed.signals else None
        died_by = None
        if code < 0:
            died_by = _signal_name(-code)
        elif code > 128 and last is not None and _signal_name(code - 128) == last:
            died_by = last  # bwrap exits 128+N when its child dies of signal N
        status = RunStatus(
            None if died_by else code, died_by, timed_out, duration, _tail(stdout), _tail(stderr, qemu_noise=True)
        )

        def read(path: str) -> bytes | None:
            guest_file = GuestRoot(tree).host_path(path)
            return guest_file.read_bytes() if guest_file is not None else None

        fault = None
        if died_by and not timed_out:
            fault = locate(parsed, program, read, facts.flags, core_pc=_core_pc(out, died_by))
    outcome, reason = decide(status, fault, expected_status, cpu, host)
    return answer(
        outcome, reason, exit_status=status.exit_status, signal=status.signal, fault=fault,
        duration=round(duration, 3), stdout_tail=status.stdout_tail, stderr_tail=status.stderr_tail,
    )  # fmt: skip
