"""The sandbox a rehearsal runs in: bubblewrap, resource limits, an unprivileged user (pure).

qemu-user is not a security boundary: the guest program's system calls reach
this kernel. So the program runs as ``nobody`` (``setpriv`` when cpuguard runs
as root), with every namespace unshared (no network, own PIDs, own IPC),
nothing of this machine visible but the throwaway sysroot (mounted read-only
as ``/``, holding a private copy of qemu-user and its libraries under
``/.cpuguard``), a private ``/tmp``, and limits on CPU time, memory, processes,
open files, file size and core size (bwrap(1); prlimit(1); setpriv(1)). One
directory, ``/.cpuguard/out``, is writable and the working directory: QEMU's
log, and the guest's core after a SIGSEGV or SIGBUS, are read from it.
"""

from __future__ import annotations

from dataclasses import dataclass

NOBODY = 65534
#: Inside the sandbox.
QEMU_DIR = "/.cpuguard"
OUT_DIR = f"{QEMU_DIR}/out"
QEMU_LOG = f"{OUT_DIR}/qemu.log"
#: The loader and the libraries of this machine's qemu-user, copied into the sysroot.
QEMU_LOADER = f"{QEMU_DIR}/lib/ld.so"
QEMU_LIBS = f"{QEMU_DIR}/lib"
QEMU_BINARY = f"{QEMU_DIR}/qemu-x86_64"
#: The guest core qemu-user writes on a fatal signal is cut here: its register notes come first.
CORE_BYTES = 4 * 1024 * 1024
#: qemu-user 7.2 aborts a program that select()s on more than 1024 descriptors (FD_SETSIZE).
MAX_OPEN_FILES = 1024
GUEST_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/tmp", "LANG": "C"}  # noqa: S108


@dataclass(frozen=True)
class Limits:
    seconds: float = 60.0  # wall-clock time; CPU time is held to the same
    memory_mib: int = 4096  # address space of QEMU with its guest (QEMU reserves ~1 GiB for code)
    processes: int = 128  # processes and threads of the sandbox user
    file_mib: int = 1024  # largest file written (QEMU's log included)


def sandbox_argv(
    sysroot: str,
    out_dir: str,
    qemu_args: list[str],
    limits: Limits,
    *,
    as_root: bool,
    bwrap: str = "bwrap",
    prlimit: str = "prlimit",
    setpriv: str = "setpriv",
) -> list[str]:
    """The command line that runs ``qemu-x86_64 QEMU_ARGS`` inside the sandbox."""
    argv: list[str] = []
    if as_root:  # never run a customer's program as root: drop to nobody first
        argv += [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs"]
    cpu_seconds = int(limits.seconds) + 5
    argv += [
        prlimit,
        f"--as={limits.memory_mib * 1024 * 1024}",
        f"--nproc={limits.processes}",
        f"--nofile={MAX_OPEN_FILES}",
        f"--cpu={cpu_seconds}",
        f"--fsize={limits.file_mib * 1024 * 1024}",
        f"--core={CORE_BYTES}",
    ]
    argv += [bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    argv += ["--ro-bind", sysroot, "/", "--bind", out_dir, OUT_DIR]
    argv += ["--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp", "--chdir", OUT_DIR, "--clearenv"]  # noqa: S108 - the sandbox's own
    for name, value in GUEST_ENV.items():
        argv += ["--setenv", name, value]
    argv += ["--", QEMU_LOADER, "--library-path", QEMU_LIBS, QEMU_BINARY, *qemu_args]
    return argv


def qemu_args(cpu_option: str, command: list[str], guest_env: dict[str, str] | None = None) -> list[str]:
    """qemu-user's arguments: the CPU, a log of system calls, signals and the program's load
    address, and ``guest_env`` set for the program only (``-E``: not for qemu's own loader)."""
    settings = [f"{name}={value}" for name, value in sorted((guest_env or {}).items())]
    env = [word for setting in settings for word in ("-E", setting)]
    return ["-cpu", cpu_option, "-strace", "-d", "page", "-D", QEMU_LOG, *env, *command]
