"""Fixtures for rehearsals: programs compiled here, and a guest root holding them.

The guest root is built like an extracted backup: each program under
``/opt/app`` with the loader and libraries it needs, copied from this machine
(the closure the rehearsal itself computes, read from ``/``).
"""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import need_tool, run_cpuguard

PROGRAMS = Path(__file__).resolve().parent / "programs"

#: name -> (source, gcc flags)
BUILDS: dict[str, tuple[str, list[str]]] = {
    "haswell": ("kernels.c", ["-march=haswell"]),
    "avx2": ("kernels.c", ["-mavx2"]),
    "bmi2": ("kernels.c", ["-mbmi2"]),
    "guarded": ("guarded.c", ["-march=x86-64"]),
    "escape": ("escape.c", []),
    "segv": ("segv.c", ["-march=x86-64"]),
}


@pytest.fixture(scope="session")
def guest_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A guest root with every program of :data:`BUILDS` in /opt/app, and ``uselib``, whose
    Haswell code is in /opt/app/lib/libkernels.so (found through its RUNPATH)."""
    from cpuguard.rehearse import sysroot
    from cpuguard.rehearse.guestroot import GuestRoot

    gcc = need_tool("gcc")
    root = tmp_path_factory.mktemp("guest-root")
    app = root / "opt" / "app"
    app.mkdir(parents=True)
    lib = app / "lib"
    lib.mkdir()
    shared = ["-shared", "-fPIC", "-march=haswell"]
    subprocess.run([gcc, "-O3", "-o", str(lib / "libkernels.so"), str(PROGRAMS / "kernels.c"), *shared], check=True)
    uselib = [str(PROGRAMS / "uselib.c"), f"-L{lib}", "-lkernels", "-Wl,-rpath,/opt/app/lib"]
    subprocess.run([gcc, "-O2", "-o", str(app / "uselib"), *uselib], check=True)
    for name, (source, flags) in BUILDS.items():
        subprocess.run([gcc, "-O3", "-o", str(app / name), str(PROGRAMS / source), *flags], check=True)
        found = sysroot.closure(GuestRoot(Path("/")), str(app / name), extras=False)
        del found.files[str(app / name)]
        sysroot.build(GuestRoot(Path("/")), found, root)
    return root


#: A working directory without ./policies: the CLI then uses the bundled example fleet, into
#: which a rehearsal never writes its evidence (the repository's own ./policies stays clean).
NEUTRAL_CWD = PROGRAMS
#: The rehearsal log of these tests (never this machine's /var/log/cpuguard).
TEST_LOG = Path(tempfile.mkdtemp(prefix="cpuguard-rehearse-log-")) / "rehearsals.jsonl"


def rehearse_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``cpuguard rehearse ARGS`` as a user runs it, logging to :data:`TEST_LOG`."""
    return run_cpuguard("rehearse", "--log", str(TEST_LOG), *args, cwd=NEUTRAL_CWD)


def _install(root: Path, guest_path: str, source: str, flags: list[str]) -> None:
    """Compile ``source`` to ``guest_path`` inside ``root``, with the libraries it needs from here."""
    from cpuguard.rehearse import sysroot
    from cpuguard.rehearse.guestroot import GuestRoot

    target = root / guest_path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([need_tool("gcc"), "-O2", "-o", str(target), str(PROGRAMS / source), *flags], check=True)
    found = sysroot.closure(GuestRoot(Path("/")), str(target), extras=False)
    del found.files[str(target)]
    sysroot.build(GuestRoot(Path("/")), found, root)


ASTERISK_MODULES = "/usr/lib/asterisk/modules"


@pytest.fixture(scope="session")
def asterisk_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A guest root with an Asterisk stand-in (/usr/sbin/asterisk, baseline x86-64) whose module
    codec_fast.so was built -march=haswell, beside a baseline codec_plain.so."""
    root = tmp_path_factory.mktemp("asterisk-root")
    _install(root, "/usr/sbin/asterisk", "asterisk_standin.c", ["-march=x86-64", "-ldl"])
    _install(root, f"{ASTERISK_MODULES}/codec_fast.so", "codec_fast.c", ["-march=haswell", "-shared", "-fPIC"])
    _install(root, f"{ASTERISK_MODULES}/codec_plain.so", "codec_fast.c", ["-march=x86-64", "-shared", "-fPIC"])
    etc = root / "etc" / "asterisk"
    etc.mkdir(parents=True)
    (etc / "asterisk.conf").write_text(
        f"[directories](!)\nastetcdir => /etc/asterisk\nastmoddir => {ASTERISK_MODULES}\n"
    )
    (etc / "cli.conf").write_text("[startup_commands]\n; the guest's own: stops nothing\n")
    return root
