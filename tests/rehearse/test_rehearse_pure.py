"""The pure parts of a rehearsal: QEMU's log, the decision, the CPU option, paths inside a guest root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cpuguard.hosts.sources import resolve_host
from cpuguard.knowledge import load_knowledge
from cpuguard.rehearse.cpu import emulated_cpu, recognized_flags, without_unsupported
from cpuguard.rehearse.decide import decide
from cpuguard.rehearse.guestroot import GuestRoot
from cpuguard.rehearse.qemulog import Mapping, parse_log
from cpuguard.rehearse.records import EmulatedCpu, Fault, RehearsalOutcome, RunStatus
from cpuguard.rehearse.sandbox import Limits, qemu_args, sandbox_argv
from cpuguard.rehearse.sysroot import closure

# Lines of a real qemu-x86_64 7.2 log (-strace -d page -D FILE) of a -march=haswell
# program run with -cpu Westmere; page tables between them left out.
QEMU_LOG = """\
host mmap_min_addr=0x1000
guest_base  (nil)
start_brk   0x0000000000000000
end_code    0x0000004000001401
start_code  0x0000004000001000
5310 openat(-100,"/etc/ld.so.cache",O_RDONLY|O_CLOEXEC) = 3
5310 mmap(NULL,42191,PROT_READ,MAP_PRIVATE,3,0) = 0x000000400283d000
5310 close(3) = 0
5310 openat(-100,"/lib/x86_64-linux-gnu/libc.so.6",O_RDONLY|O_CLOEXEC) = 3
5310 mmap(NULL,1974096,PROT_READ,MAP_PRIVATE|MAP_DENYWRITE,3,0) = 0x000000400284a000
5310 mmap(0x0000004002870000,1400832,PROT_EXEC|PROT_READ,MAP_PRIVATE|MAP_DENYWRITE|MAP_FIXED,3,0x26000) = \
0x0000004002870000
5310 mmap(0x0000004002a1f000,53072,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS|MAP_FIXED,-1,0) = 0x0000004002a1f000
5310 close(3) = 0
5310 openat(-100,"/opt/app/lib/libkernels.so",O_RDONLY|O_CLOEXEC) = 4
5310 mmap(0x0000004002840000,4096,PROT_EXEC|PROT_READ,MAP_PRIVATE|MAP_DENYWRITE|MAP_FIXED,4,0x1000)page layout \
changed following mmap
start            end              size             prot
0000004000000000-0000004000001000 0000000000001000 r--
 = 0x0000004002840000
5310 close(4) = 0
5310 brk(NULL) = 0x0000004000005000
--- SIGILL {si_signo=SIGILL, si_code=2, si_addr=0x00000040000010a2} ---
"""


def test_qemu_log() -> None:
    log = parse_log(QEMU_LOG.splitlines())
    assert log.start_code == 0x4000001000
    assert log.signals == [("SIGILL", 0x40000010A2)]
    assert log.mapping_at(0x4002870010) == Mapping(0x4002870000, 1400832, "/lib/x86_64-linux-gnu/libc.so.6", 0x26000)
    assert log.mapping_at(0x40000010A2) is None  # the main program: placed by QEMU itself, found by start_code
    assert log.mapping_at(0x4002A1F010) is None  # anonymous memory
    # -d page prints the page table between the call and its result
    assert log.mapping_at(0x40028402DB) == Mapping(0x4002840000, 4096, "/opt/app/lib/libkernels.so", 0x1000)


CPU = EmulatedCpu("base,+avx", frozenset({"avx"}), (), ("avx512f",))
ENDED = RunStatus(None, "SIGILL", False, 0.1)


def test_decide() -> None:
    missing = Fault("SIGILL", 1, "/opt/app/x", 0x10, "sum", 4, "vpaddq %ymm1,%ymm2,%ymm3", ("avx2",), ("avx2",))
    assert decide(ENDED, missing, 0, CPU, "old") == (
        RehearsalOutcome.FAILED_CPU,
        "SIGILL at sum+4 in /opt/app/x: `vpaddq %ymm1,%ymm2,%ymm3` needs avx2, which old lacks",
    )
    trap = Fault("SIGILL", 1, "/opt/app/x", 0x10, "main", 9, "ud2", (), ())
    outcome, reason = decide(ENDED, trap, 0, CPU, "old")
    assert outcome is RehearsalOutcome.FAILED_OTHER and "not the CPU's" in reason
    beyond = Fault("SIGILL", 1, "/opt/app/x", 0x10, "f", 0, "vpaddq %zmm1,%zmm2,%zmm3", ("avx512f",), ())
    assert decide(ENDED, beyond, 0, CPU, "new")[0] is RehearsalOutcome.CANNOT_REHEARSE
    segv = RunStatus(None, "SIGSEGV", False, 0.1)
    assert decide(segv, Fault("SIGSEGV", 0), 0, CPU, "h") == (RehearsalOutcome.FAILED_OTHER, "killed by signal SIGSEGV")
    # a SIGSEGV located by the core on an instruction the target lacks is the CPU's
    gp = Fault("SIGSEGV", 1, "/opt/app/x", 0x10, "f", 2, "rdpid %rax", ("rdpid",), ("rdpid",), data_address=0)
    assert decide(segv, gp, 0, CPU, "old") == (
        RehearsalOutcome.FAILED_CPU,
        "SIGSEGV at f+2 in /opt/app/x: `rdpid %rax` needs rdpid, which old lacks",
    )
    assert decide(RunStatus(3, None, False, 0.1), None, 0, CPU, "h") == (
        RehearsalOutcome.FAILED_OTHER,
        "exited with status 3, expected 0",
    )
    assert decide(RunStatus(3, None, False, 0.1), None, 3, CPU, "h")[0] is RehearsalOutcome.PASSED
    assert decide(RunStatus(None, None, True, 5.0), None, 0, CPU, "h")[0] is RehearsalOutcome.FAILED_OTHER


def test_cpu_option() -> None:
    knowledge = load_knowledge()
    facts = resolve_host("uarch:haswell", knowledge)
    help_text = "Available CPUs:\n x86 base\n\nRecognized CPUID flags:\n  avx avx2 sse4.1 sse4.2 lahf-lm fma\n"
    assert recognized_flags(help_text) == {"avx", "avx2", "sse4.1", "sse4.2", "lahf-lm", "fma"}
    cpu = emulated_cpu(
        facts, recognized_flags(help_text), knowledge.vocabulary.libvirt_name, {"Intel": "GenuineIntel"}, (6, 60)
    )
    assert cpu.option == (
        "base,vendor=GenuineIntel,family=6,model=60,level=13,xlevel=0x80000008,+avx,+avx2,+fma,+lahf-lm,+sse4.1,+sse4.2"
    )
    assert cpu.offered == {"avx", "avx2", "fma", "lahf_lm", "sse4_1", "sse4_2"}
    assert "bmi2" in cpu.unknown_to_qemu  # not in this (shortened) list of QEMU's
    warned = "qemu-x86_64: warning: TCG doesn't support requested feature: CPUID.07H:EBX.avx2 [bit 5]\n"
    less = without_unsupported(cpu, warned, knowledge.vocabulary.try_canonical)
    assert less.not_emulated == ("avx2",) and "avx2" not in less.offered


def test_paths_stay_inside_the_guest_root(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/shadow").write_text("guest's own\n")
    (tmp_path / "bin").mkdir()
    os.symlink("/etc/shadow", tmp_path / "bin/abs")
    os.symlink("../../../../../../etc/shadow", tmp_path / "bin/dots")
    os.symlink("loop", tmp_path / "bin/loop")
    root = GuestRoot(tmp_path)
    assert root.resolve("/bin/abs") == "/etc/shadow"
    assert root.read_file("/bin/abs") == b"guest's own\n"
    assert root.read_file("/bin/dots") == b"guest's own\n"
    assert root.resolve("/bin/loop") is None
    assert root.read_file("/nonexistent") is None
    assert root.glob("/bin/a*") == ["/bin/abs"]


def test_closure_of_a_missing_library(tmp_path: Path) -> None:
    """A program whose library the guest root lacks: named, so the rehearsal can say it cannot run."""
    host = GuestRoot(Path("/"))
    python = os.path.realpath("/usr/bin/python3")
    found = closure(host, python, extras=False)
    assert found.interpreter and found.interpreter in found.files
    assert any("libc.so.6" in path for path in found.files)
    (tmp_path / "usr/bin").mkdir(parents=True)
    (tmp_path / "usr/bin/python3").write_bytes(Path(python).read_bytes())
    bare = closure(GuestRoot(tmp_path), "/usr/bin/python3")
    assert any(entry.startswith("libc.so.6 (needed by") for entry in bare.missing)


def test_sandbox_argv() -> None:
    argv = sandbox_argv("/x/sysroot", "/x/out", ["-cpu", "base", "/bin/true"], Limits(seconds=10), as_root=True)
    assert argv[:5] == ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--no-new-privs"]
    assert "--nofile=1024" in argv and "--unshare-all" in argv and "--die-with-parent" in argv
    assert argv[argv.index("--ro-bind") + 1 : argv.index("--ro-bind") + 3] == ["/x/sysroot", "/"]
    assert argv[-3:] == ["-cpu", "base", "/bin/true"]
    assert sandbox_argv("/s", "/o", [], Limits(), as_root=False)[0] == "prlimit"
    # the guest's library path is the program's, not qemu's own loader's
    assert qemu_args("base", ["/x"], {"LD_LIBRARY_PATH": "/opt/l"})[-3:] == ["-E", "LD_LIBRARY_PATH=/opt/l", "/x"]


@pytest.mark.parametrize("spec", ["uarch:skylake_avx512"])
def test_avx512_host_is_said_to_be_beyond_tcg(spec: str) -> None:
    from cpuguard.rehearse.cpu import beyond_tcg

    facts = resolve_host(spec, load_knowledge())
    assert "avx512f" in beyond_tcg(facts.flags)


def test_core_reader_is_bounded_and_never_raises(tmp_path: Path) -> None:
    """A core lies where the rehearsed program can write: any prefix, any garbage, is None or a number."""
    import random
    import struct

    from cpuguard.rehearse.core import PR_CURSIG, PR_REG, PRSTATUS_SIZE, RIP_INDEX, faulting_pc

    desc = bytearray(PRSTATUS_SIZE)
    struct.pack_into("<h", desc, PR_CURSIG, 11)
    struct.pack_into("<Q", desc, PR_REG + RIP_INDEX * 8, 0x4000001190)
    note = struct.pack("<III", 5, len(desc), 1) + b"CORE\0\0\0\0" + bytes(desc)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<HH", header, 16, 4, 62)
    struct.pack_into("<Q", header, 0x20, 64)
    struct.pack_into("<HH", header, 0x36, 56, 1)
    phdr = struct.pack("<IIQQQQQQ", 4, 0, 120, 0, 0, len(note), 0, 4)
    core = bytes(header) + phdr + note
    assert faulting_pc(core, 11) == 0x4000001190
    assert faulting_pc(core, 7) is None  # another signal's core is not believed
    rng = random.Random(7)
    for cut in range(len(core)):
        assert faulting_pc(core[:cut], 11) is None
    for _ in range(2000):
        mutated = bytearray(core)
        for _ in range(rng.randint(1, 8)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        found = faulting_pc(bytes(mutated), 11)
        assert found is None or isinstance(found, int)
